"""Classification (SentEval transfer) tasks of `retromae_hf.evaluation`: reading and refusing folders, the
`senteval` group, and scores checked against a plain scikit-learn logistic regression on the same embeddings."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SHARED

from retromae_hf.evaluation import (
    CLASSIFICATION_FOLDS,
    EvaluationDataError,
    evaluate,
    expand_task_folders,
    expand_task_groups,
    is_classification_folder,
    load_classification_folder,
    per_query_scores,
    senteval_mteb_task_names,
)

TRANSFER = SHARED / "data" / "transfer"
MODEL_DIR = SHARED / "models" / "all-MiniLM-L6-v2"
SCIFACT_QUERIES = SHARED / "data" / "beir" / "scifact" / "queries.jsonl"
CISI_QUERIES = SHARED / "data" / "beir" / "cisi" / "queries.jsonl"
HAVE_SHARED = TRANSFER.is_dir() and MODEL_DIR.is_dir() and SCIFACT_QUERIES.is_file() and CISI_QUERIES.is_file()
SHARED_MISSING = f"needs the transfer data, all-MiniLM-L6-v2 and the SciFact / CISI queries under {SHARED}"


def needs_shared(test: Any) -> Any:
    for mark in (pytest.mark.shared, pytest.mark.slow, pytest.mark.skipif(not HAVE_SHARED, reason=SHARED_MISSING)):
        test = mark(test)
    return test


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def labelled(n: int, labels: tuple[Any, ...] = (0, 1)) -> list[dict[str, Any]]:
    return [{"text": f"sentence number {i}", "label": labels[i % len(labels)]} for i in range(n)]


# ------------------------------------------------------------------------------------------------ reading folders
def test_split_folder_and_cross_validation_folder_are_read(tmp_path: Path) -> None:
    split = tmp_path / "split"
    write_rows(split / "train.jsonl", labelled(6))
    write_rows(split / "dev.jsonl", labelled(2))
    write_rows(split / "test.jsonl", labelled(4))
    data = load_classification_folder(split)
    assert not data.cross_validation
    assert {name: len(texts) for name, (texts, _) in data.splits.items()} == {"train": 6, "dev": 2, "test": 4}

    folds = write_rows(tmp_path / "cv" / "all.jsonl", labelled(2 * CLASSIFICATION_FOLDS, ("pos", "neg"))).parent
    data = load_classification_folder(folds)
    assert data.cross_validation and set(data.splits) == {"all"}
    assert set(data.splits["all"][1]) == {"pos", "neg"}

    assert is_classification_folder(split) and is_classification_folder(folds)
    assert not is_classification_folder(tmp_path)  # no classification file of its own
    beir = tmp_path / "beir"
    write_rows(beir / "corpus.jsonl", [{"_id": "d", "text": "x"}])
    write_rows(beir / "train.jsonl", labelled(2))
    assert not is_classification_folder(beir)  # corpus.jsonl makes it a BEIR folder


def test_a_folder_of_classification_folders_is_expanded(tmp_path: Path) -> None:
    for name in ("trec", "cr"):
        write_rows(tmp_path / "transfer" / name / "all.jsonl", labelled(20))
    assert expand_task_folders([str(tmp_path / "transfer")]) == [
        str(tmp_path / "transfer" / "cr"),
        str(tmp_path / "transfer" / "trec"),
    ]


BAD_FOLDERS = [
    # (name, files {name: rows or raw text}, the file named, what the message must say)
    ("no-label", {"all.jsonl": [{"text": "a"}]}, "all.jsonl", r"line 1: no 'label' field"),
    ("one-class", {"all.jsonl": labelled(20, (1,))}, "all.jsonl", r"every row has the label 1.*at least two classes"),
    (
        "mixed-types-in-a-file",
        {"all.jsonl": [{"text": "a", "label": 0}, {"text": "b", "label": "pos"}]},
        "all.jsonl",
        r"line 2: label 'pos' is a str, but line 1 has a int label.*same way",
    ),
    (
        "mixed-types-across-files",
        {"train.jsonl": labelled(4), "test.jsonl": labelled(2, ("a", "b"))},
        "test.jsonl",
        r"string labels, but train\.jsonl in the same folder has integer labels",
    ),
    ("empty-split", {"train.jsonl": labelled(4), "test.jsonl": ""}, "test.jsonl", r"holds no rows"),
    (
        "test-without-train",
        {"test.jsonl": labelled(4)},
        "test.jsonl",
        r"no train\.jsonl beside it.*Add train\.jsonl, or put every row in one all\.jsonl",
    ),
    ("train-without-test", {"train.jsonl": labelled(4)}, "train.jsonl", r"no test\.jsonl beside it.*rename"),
    (
        "all-beside-splits",
        {"all.jsonl": labelled(20), "train.jsonl": labelled(4), "test.jsonl": labelled(2)},
        "all.jsonl",
        r"lies beside train\.jsonl, test\.jsonl.*keep one layout",
    ),
    ("too-few-rows-per-fold", {"all.jsonl": labelled(12)}, "all.jsonl", r"fewer than 10 rows.*stratified 10-fold"),
    (
        "test-label-unseen-in-train",
        {"train.jsonl": labelled(4), "test.jsonl": labelled(3, (0, 1, 2))},
        "test.jsonl",
        r"label\(s\) '2' never occur in train\.jsonl",
    ),
    ("float-label", {"all.jsonl": [{"text": "a", "label": 0.5}]}, "all.jsonl", r"label 0\.5 is neither an integer"),
    ("text-not-a-string", {"all.jsonl": [{"label": 1}]}, "all.jsonl", r"line 1: 'text' is missing"),
    ("bad-json", {"all.jsonl": '{"text": "a", "label": 1}\n{oops\n'}, "all.jsonl", r"line 2: not valid JSON"),
]


@pytest.mark.parametrize(
    ("files", "named", "pattern"), [case[1:] for case in BAD_FOLDERS], ids=[c[0] for c in BAD_FOLDERS]
)
def test_bad_folders_are_refused_naming_the_file(tmp_path: Path, files: dict, named: str, pattern: str) -> None:
    folder = tmp_path / "task"
    folder.mkdir()
    for name, rows in files.items():
        if isinstance(rows, str):
            (folder / name).write_text(rows, encoding="utf-8")
        else:
            write_rows(folder / name, rows)
    with pytest.raises(EvaluationDataError, match=pattern) as excinfo:
        load_classification_folder(folder)
    assert str(folder / named) in str(excinfo.value)


def test_the_cli_refuses_a_bad_folder_in_one_paragraph(tmp_path: Path) -> None:
    write_rows(tmp_path / "task" / "test.jsonl", labelled(4))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "evaluate", "some-model", "--tasks", "task", "--output-dir", "ev"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode != 0
    assert "Traceback" not in process.stderr
    assert "task/test.jsonl: no train.jsonl beside it" in process.stderr
    assert not (tmp_path / "ev").exists()  # refused before any output was made


# ------------------------------------------------------------------------------------------------ the senteval group
def test_senteval_with_a_folder_stands_for_its_task_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("trec", "mr", "unrelated"):
        write_rows(tmp_path / name / "all.jsonl", labelled(20))
    assert expand_task_groups([f"senteval={tmp_path}", "other"]) == [
        str(tmp_path / "mr"),
        str(tmp_path / "trec"),
        "other",
    ]
    assert "no folder for cr, subj, mpqa, sst2" in caplog.text
    with pytest.raises(EvaluationDataError, match="holds none of SentEval's task folders"):
        expand_task_groups([f"senteval={tmp_path / 'unrelated'}"])


def test_bare_senteval_is_looked_up_in_mtebs_registry_offline() -> None:
    import mteb

    names = senteval_mteb_task_names()  # the registry ships with mteb: no network
    assert list(names) == ["mr", "cr", "subj", "mpqa", "sst2", "trec"]
    for name in names.values():
        if name is not None:
            assert mteb.get_task(name).metadata.type == "Classification"
    absent = [task for task, name in names.items() if name is None]
    if absent:  # mteb 2.26 registers none of them: a bare `senteval` must say so and name the fix
        with pytest.raises(ValueError, match=r"has no task for " + ", ".join(absent) + r".*--tasks senteval=DIR"):
            expand_task_groups(["senteval"])
    else:
        assert expand_task_groups(["senteval"]) == list(names.values())


# ------------------------------------------------------------------------------------------------ scores
def sklearn_reference(embeddings: Any, labels: list[Any], test: tuple[Any, list[Any]] | None = None) -> float:
    """Accuracy of a plain scikit-learn logistic regression: 10-fold stratified CV (folds shuffled with a seed of
    its own), or trained on all rows and scored on `test`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    classifier = LogisticRegression(max_iter=1000)
    if test is None:
        folds = StratifiedKFold(n_splits=10, shuffle=True, random_state=1234)
        return float(cross_val_score(classifier, embeddings, labels, cv=folds, scoring="accuracy").mean())
    classifier.fit(embeddings, labels)
    return float(classifier.score(*test))


def make_unseen_folder(folder: Path) -> Path:
    """A task the package has never seen, in the train/test layout with string labels: which collection a query
    comes from (SciFact: claims about science; CISI: questions on information science)."""
    rows = []
    for label, path in (("scifact", SCIFACT_QUERIES), ("cisi", CISI_QUERIES)):
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows += [{"text": text, "label": label} for text in texts[:100]]
    random.Random(0).shuffle(rows)
    write_rows(folder / "train.jsonl", rows[:150])
    write_rows(folder / "test.jsonl", rows[150:])
    return folder


def make_mr_slice(folder: Path, n: int = 600) -> Path:
    lines = (TRANSFER / "mr" / "all.jsonl").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(lines)
    (folder).mkdir(parents=True)
    (folder / "all.jsonl").write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def minilm() -> Any:
    if not HAVE_SHARED:
        pytest.skip(SHARED_MISSING)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    model.max_seq_length = 128
    return model


def encode(model: Any, texts: list[str]) -> Any:
    return model.encode(texts, batch_size=64, show_progress_bar=False)


@needs_shared
def test_accuracies_agree_with_scikit_learn_on_the_same_embeddings(minilm: Any, tmp_path: Path) -> None:
    mr = make_mr_slice(tmp_path / "data" / "mr")
    unseen = make_unseen_folder(tmp_path / "data" / "which-collection")
    summary = evaluate(minilm, [str(mr), str(unseen)], output_dir=tmp_path / "ev", save_predictions=True)
    by_task = {result["task"]: result for result in summary["results"]}
    assert by_task["mr"]["dataset"]["split"] == "all"
    assert by_task["mr"]["dataset"]["protocol"] == "stratified 10-fold cross-validation on all.jsonl"
    assert by_task["which-collection"]["dataset"]["protocol"] == "trained on train.jsonl, scored on test.jsonl"
    for result in by_task.values():
        assert result["task_type"] == "Classification" and result["main_metric"] == "accuracy"
        assert {"accuracy", "f1"} <= set(result["metrics"])

    data = load_classification_folder(mr)
    texts, labels = data.splits["all"]
    reference = sklearn_reference(encode(minilm, texts), labels)
    assert abs(by_task["mr"]["main_score"] - reference) < 0.015, (by_task["mr"]["main_score"], reference)
    assert by_task["mr"]["main_score"] > 0.65  # MiniLM separates movie-review polarity well above chance

    data = load_classification_folder(unseen)
    train_texts, train_labels = data.splits["train"]
    test_texts, test_labels = data.splits["test"]
    reference = sklearn_reference(encode(minilm, train_texts), train_labels, (encode(minilm, test_texts), test_labels))
    assert abs(by_task["which-collection"]["main_score"] - reference) < 0.015
    assert by_task["which-collection"]["main_score"] > 0.8

    # Per-sentence correctness (for paired comparisons) averages back to the accuracy.
    per_item = per_query_scores(tmp_path / "ev")
    assert len(per_item["mr"]["per_query"]) == 600 and len(per_item["which-collection"]["per_query"]) == 50
    for task, entry in per_item.items():
        assert abs(entry["mean"] - by_task[task]["main_score"]) < 1e-3


@needs_shared
def test_every_shared_transfer_folder_is_scored(tmp_path: Path) -> None:
    """All five shared folders, full size, through `senteval=DIR`, with a tiny random encoder (fast), each checked
    against scikit-learn on the same embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    model = SentenceTransformer(str(tmp_path / "tiny"), device="cpu")
    model.max_seq_length = 64
    summary = evaluate(model, [f"senteval={TRANSFER}"], output_dir=tmp_path / "ev", batch_size=256)
    scores = {result["task"]: result["main_score"] for result in summary["results"]}
    assert list(scores) == ["mr", "cr", "mpqa", "sst2", "trec"]
    for task, score in scores.items():
        data = load_classification_folder(TRANSFER / task)
        if data.cross_validation:
            texts, labels = data.splits["all"]
            reference = sklearn_reference(encode(model, texts), labels)
        else:
            (train_texts, train_labels), (test_texts, test_labels) = data.splits["train"], data.splits["test"]
            reference = sklearn_reference(
                encode(model, train_texts), train_labels, (encode(model, test_texts), test_labels)
            )
        assert abs(score - reference) < 0.015, (task, score, reference)
