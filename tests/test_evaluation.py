"""Tests for `retromae_hf.evaluation`: local BEIR / STS tasks run through mteb, the summary files, and bad input.

The data checks use tiny folders written here and need nothing else. The scoring tests use small slices of the real
SciFact and STS-B test sets and the real all-MiniLM-L6-v2 model from ``../shared``; they are skipped when it is absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED

from retromae_hf.evaluation import (
    EvaluationDataError,
    evaluate,
    load_beir_folder,
    load_sts_file,
    load_summary,
    summary_to_markdown,
)

MODEL_DIR = SHARED / "models" / "all-MiniLM-L6-v2"
SCIFACT = SHARED / "data" / "beir" / "scifact"
STSB_TEST = SHARED / "data" / "sts" / "stsbenchmark" / "sts-test.tsv"
# A model path that does not exist: data errors must be raised before any model is loaded.
NO_MODEL = "/nonexistent/model-that-must-not-be-loaded"

SHARED_MISSING = f"needs the all-MiniLM-L6-v2 model, SciFact and STS-B under {SHARED}, which are missing"
HAVE_SHARED = MODEL_DIR.is_dir() and SCIFACT.is_dir() and STSB_TEST.is_file()


def needs_shared(test: Any) -> Any:
    """Mark a test as using ../shared (and taking a few seconds), skipping it with the reason when that is absent."""
    for mark in (pytest.mark.shared, pytest.mark.slow, pytest.mark.skipif(not HAVE_SHARED, reason=SHARED_MISSING)):
        test = mark(test)
    return test


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def write_beir(
    folder: Path,
    corpus: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    qrels: dict[str, list[tuple[str, str, int]]],
) -> Path:
    """Write a BEIR folder: corpus.jsonl, queries.jsonl and one qrels/<split>.tsv per entry of `qrels`."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    for split, rows in qrels.items():
        body = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + body, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "Cats purr when they are content."},
        {"_id": "d2", "title": "", "text": "The stock market fell sharply on Monday."},
        {"_id": "d3", "title": "Rain", "text": "Clouds bring rain in the spring."},
    ]
    queries = [
        {"_id": "q1", "text": "why do cats purr"},
        {"_id": "q2", "text": "weather in spring"},
        {"_id": "q3", "text": "a training-only query"},
    ]
    qrels = {"test": [("q1", "d1", 1), ("q2", "d3", 1)], "train": [("q3", "d2", 1)]}
    return write_beir(tmp_path / "tiny", corpus, queries, qrels)


def error_message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------------------
# Reading local data and refusing malformed input (no model needed)
# ----------------------------------------------------------------------------------------------------------------------


def test_beir_folder_keeps_only_queries_of_the_split(tiny_beir: Path) -> None:
    test = load_beir_folder(tiny_beir, "test")
    assert test.query_ids == ["q1", "q2"]
    assert test.qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    assert test.corpus_ids == ["d1", "d2", "d3"]
    assert test.titles[1] == ""
    train = load_beir_folder(tiny_beir, "train")
    assert train.query_ids == ["q3"]


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_beir_file_is_named(tiny_beir: Path, tmp_path: Path, missing: str) -> None:
    (tiny_beir / missing).unlink()
    with pytest.raises(EvaluationDataError) as excinfo:
        evaluate(NO_MODEL, [tiny_beir], output_dir=tmp_path / "out")
    assert str(tiny_beir / missing) in error_message(excinfo)
    assert "not found" in error_message(excinfo)


def test_missing_split_names_the_qrels_file(tiny_beir: Path, tmp_path: Path) -> None:
    with pytest.raises(EvaluationDataError, match=r"qrels[/\\]dev\.tsv"):
        evaluate(NO_MODEL, [tiny_beir], output_dir=tmp_path / "out", split="dev")


def test_qrels_with_unknown_query_ids_are_named(tiny_beir: Path, tmp_path: Path) -> None:
    with (tiny_beir / "qrels" / "test.tsv").open("a", encoding="utf-8") as handle:
        handle.write("ghost-query\td1\t1\nother-ghost\td2\t1\n")
    with pytest.raises(EvaluationDataError) as excinfo:
        evaluate(NO_MODEL, [tiny_beir], output_dir=tmp_path / "out")
    message = error_message(excinfo)
    assert "test.tsv" in message and "queries.jsonl" in message
    assert "'ghost-query'" in message and "'other-ghost'" in message


def test_qrels_with_unknown_doc_ids_are_named(tiny_beir: Path, tmp_path: Path) -> None:
    with (tiny_beir / "qrels" / "test.tsv").open("a", encoding="utf-8") as handle:
        handle.write("q1\tmissing-doc\t1\n")
    with pytest.raises(EvaluationDataError) as excinfo:
        evaluate(NO_MODEL, [tiny_beir], output_dir=tmp_path / "out")
    message = error_message(excinfo)
    assert "test.tsv" in message and "corpus.jsonl" in message and "'missing-doc'" in message


def test_empty_query_text_is_refused(tiny_beir: Path, tmp_path: Path) -> None:
    lines = (tiny_beir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    lines[1] = json.dumps({"_id": "q2", "text": "   "})
    (tiny_beir / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError) as excinfo:
        evaluate(NO_MODEL, [tiny_beir], output_dir=tmp_path / "out")
    message = error_message(excinfo)
    assert "queries.jsonl" in message and "line 2" in message and "'q2'" in message and "empty" in message


def test_bad_qrels_header_and_bad_json_are_located(tiny_beir: Path) -> None:
    qrels = tiny_beir / "qrels" / "test.tsv"
    qrels.write_text("q1\td1\t1\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError, match=r"test\.tsv, line 1: expected the header"):
        load_beir_folder(tiny_beir)
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\tvery\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError, match=r"test\.tsv, line 2: relevance score 'very'"):
        load_beir_folder(tiny_beir)
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with (tiny_beir / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    with pytest.raises(EvaluationDataError, match=r"corpus\.jsonl, line 4: not valid JSON"):
        load_beir_folder(tiny_beir)


def test_sts_tsv_is_read_without_quoting(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text(
        'sentence1\tsentence2\tscore\textra\n"Quoted" start\tplain\t4.5\tx\nA "mid" quote\tother"\t0.25\ty\n',
        encoding="utf-8",
    )
    data = load_sts_file(path)
    assert data.sentence1 == ['"Quoted" start', 'A "mid" quote']
    assert data.sentence2 == ["plain", 'other"']
    assert data.score == [4.5, 0.25]
    assert (data.min_score, data.max_score) == (0.25, 4.5)


def test_sts_csv_and_jsonl_are_read(tmp_path: Path) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('sentence1,sentence2,score\n"a, b",c,1\nd,"e ""f""",3\n', encoding="utf-8")
    assert load_sts_file(csv_path).sentence2 == ["c", 'e "f"']
    jsonl_path = tmp_path / "pairs.jsonl"
    rows = [{"sentence1": "a", "sentence2": "b", "score": 0}, {"sentence1": "c", "sentence2": "d", "score": 2}]
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert load_sts_file(jsonl_path).score == [0.0, 2.0]


def test_sts_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence_b\tscore\nx\ty\t1\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError) as excinfo:
        evaluate(NO_MODEL, [path], output_dir=tmp_path / "out")
    assert str(path) in error_message(excinfo) and "sentence2" in error_message(excinfo)
    jsonl_path = tmp_path / "pairs.jsonl"
    jsonl_path.write_text(json.dumps({"sentence1": "a", "sentence2": "b"}) + "\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError, match=r"pairs\.jsonl, line 1: missing STS column\(s\) \['score'\]"):
        load_sts_file(jsonl_path)


def test_sts_non_numeric_score_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\t2.5\ne\tf\thigh\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError) as excinfo:
        evaluate(NO_MODEL, [path], output_dir=tmp_path / "out")
    message = error_message(excinfo)
    assert str(path) in message and "line 4" in message and "'high'" in message


def test_sts_constant_scores_and_wrong_width_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\t1\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError, match=r"every score is 1\.0"):
        load_sts_file(path)
    path.write_text("sentence1\tsentence2\tscore\na\tb\t1\tstray\n", encoding="utf-8")
    with pytest.raises(EvaluationDataError, match=r"line 2: expected 3 columns"):
        load_sts_file(path)


def test_unknown_paths_and_task_names(tmp_path: Path) -> None:
    with pytest.raises(EvaluationDataError, match="no such file or folder"):
        evaluate(NO_MODEL, [tmp_path / "nowhere"], output_dir=tmp_path / "out")
    with pytest.raises(EvaluationDataError, match="no such file or folder"):
        evaluate(NO_MODEL, ["missing/sts.tsv"], output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="neither a local path nor an MTEB task name"):
        evaluate(NO_MODEL, ["NoSuchMtebTaskAnywhere"], output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="similarity must be one of"):
        evaluate(NO_MODEL, [tmp_path], output_dir=tmp_path / "out", similarity="jaccard")


def test_summary_markdown_and_loading(tmp_path: Path) -> None:
    summary = {
        "model": "some/model",
        "mteb_version": "2.0.0",
        "retromae_hf_version": None,
        "created": "2025-01-01T00:00:00+00:00",
        "settings": {"batch_size": 8, "max_length": 128, "split": "test", "similarity": "cosine"},
        "results": [
            {
                "task": "scifact",
                "task_type": "Retrieval",
                "dataset": {"name": "scifact", "path_or_hub_id": "/data/scifact", "split": "test", "revision": None},
                "main_metric": "ndcg_at_10",
                "main_score": 0.645081,
                "metrics": {"ndcg_at_10": 0.645081, "mrr_at_10": 0.6, "recall_at_100": 0.925},
            },
            {
                "task": "stsb",
                "task_type": "STS",
                "dataset": {"name": "stsb", "path_or_hub_id": "/data/sts.tsv", "split": "test", "revision": None},
                "main_metric": "cosine_spearman",
                "main_score": 0.82035,
                "metrics": {"cosine_spearman": 0.82035, "cosine_pearson": 0.8274},
            },
        ],
    }
    markdown = summary_to_markdown(summary)
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2  # header, rule, one row per task
    assert "| scifact | Retrieval | test | ndcg_at_10 | 64.51 | mrr_at_10 60.00, recall_at_100 92.50 |" in table
    assert "| stsb | STS | test | cosine_spearman | 82.03 | cosine_pearson 82.74 |" in table
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary), encoding="utf-8")
    assert load_summary(path) == summary
    assert load_summary(tmp_path) == summary
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(EvaluationDataError, match="not an evaluation summary"):
        load_summary(path)


def test_package_reexports_evaluate() -> None:
    import retromae_hf
    from retromae_hf import evaluation

    assert retromae_hf.evaluate is evaluation.evaluate


# ----------------------------------------------------------------------------------------------------------------------
# Scoring small slices of SciFact and STS-B with the real model
# ----------------------------------------------------------------------------------------------------------------------

MAX_LENGTH = 128  # shorter than the model's 256 to keep the tests fast; also checks that max_length is applied


def make_scifact_slice(folder: Path, n_queries: int = 10, n_docs: int = 200) -> Path:
    """The first `n_queries` SciFact test queries, with their relevant docs among the first `n_docs` documents."""
    rows = [line.split("\t") for line in (SCIFACT / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    chosen: list[str] = []
    for query_id, _, _ in rows:
        if query_id not in chosen:
            chosen.append(query_id)
    chosen = chosen[:n_queries]
    judged = [(q, d, int(s)) for q, d, s in rows if q in chosen]
    relevant = {d for _, d, _ in judged}
    corpus = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["_id"] in relevant or len(corpus) < n_docs - len(relevant):
                corpus.append(doc)
    # All 1,109 queries (train and test) are kept, as in BEIR: only the judged ones must be evaluated.
    queries = [json.loads(line) for line in (SCIFACT / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    return write_beir(folder, corpus, queries, {"test": judged})


def make_sts_slice(path: Path, n_pairs: int = 100) -> Path:
    lines = STSB_TEST.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[: n_pairs + 1]) + "\n", encoding="utf-8")
    return path


class EncodeRecorder:
    """Wraps `model.encode` to keep every text it embeds, so scores can be recomputed from the same embeddings."""

    def __init__(self, model: Any) -> None:
        self.original = model.encode
        self.embeddings: dict[str, np.ndarray] = {}
        model.encode = self

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        output = self.original(inputs, *args, **kwargs)
        array = output.detach().cpu().numpy() if hasattr(output, "detach") else np.asarray(output)
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if array.ndim == 1:
            array = array[None, :]
        for text, vector in zip(texts, array, strict=True):
            self.embeddings[text] = vector.astype(np.float64)
        return output

    def __getitem__(self, text: str) -> np.ndarray:
        return self.embeddings[text]


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not HAVE_SHARED:
        pytest.skip(SHARED_MISSING)
    root = tmp_path_factory.mktemp("slices")
    return {
        "beir": make_scifact_slice(root / "scifact-slice"),
        "sts": make_sts_slice(root / "stsb-slice.tsv"),
    }


def run(model: Any, slices: dict[str, Path], output_dir: Path) -> dict[str, Any]:
    return evaluate(
        model,
        [slices["beir"], slices["sts"]],
        output_dir=output_dir,
        batch_size=32,
        max_length=MAX_LENGTH,
        show_progress_bar=False,
    )


@pytest.fixture(scope="module")
def real_run(slices: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    recorder = EncodeRecorder(model)
    output_dir = tmp_path_factory.mktemp("real")
    summary = run(model, slices, output_dir)
    yield {"model": model, "recorder": recorder, "summary": summary, "output_dir": output_dir}


@pytest.fixture(scope="module")
def shuffled_summary(slices: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same model with every weight tensor's entries permuted (seeded): same statistics, no learned structure."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            order = torch.randperm(parameter.numel(), generator=generator)
            parameter.copy_(parameter.flatten()[order].view_as(parameter))
    return run(model, slices, tmp_path_factory.mktemp("shuffled"))


def result_for(summary: dict[str, Any], task_type: str) -> dict[str, Any]:
    (result,) = [r for r in summary["results"] if r["task_type"] == task_type]
    return result


@needs_shared
def test_summary_files_are_written_and_parse(real_run: dict[str, Any], slices: dict[str, Path]) -> None:
    summary, output_dir = real_run["summary"], real_run["output_dir"]
    assert load_summary(output_dir / "summary.json") == json.loads(json.dumps(summary))
    assert set(summary) == {"model", "mteb_version", "retromae_hf_version", "created", "settings", "results"}
    assert summary["settings"] == {"batch_size": 32, "max_length": MAX_LENGTH, "split": "test", "similarity": "cosine"}
    assert summary["model"] == str(MODEL_DIR)

    retrieval, sts = result_for(summary, "Retrieval"), result_for(summary, "STS")
    assert retrieval["task"] == "scifact-slice" and retrieval["main_metric"] == "ndcg_at_10"
    assert retrieval["dataset"]["path_or_hub_id"] == str(slices["beir"].resolve())
    assert retrieval["dataset"]["split"] == "test"
    for key in ("ndcg_at_10", "mrr_at_10", "map_at_10", "recall_at_5", "recall_at_20", "recall_at_50", "recall_at_100"):
        assert 0.0 <= retrieval["metrics"][key] <= 1.0, key
    assert "recall_at_1000" not in retrieval["metrics"]  # a 200-document corpus has no rank 1000
    assert sts["main_metric"] == "cosine_spearman"
    assert set(sts["metrics"]) >= {"cosine_spearman", "cosine_pearson"}

    # mteb's own result files, in its usual cache layout.
    result_files = {p.name for p in (output_dir / "results").rglob("*.json")}
    assert {f"{retrieval['task']}.json", f"{sts['task']}.json"} <= result_files
    mteb_json = json.loads(next((output_dir / "results").rglob(f"{retrieval['task']}.json")).read_text())
    assert mteb_json["scores"]["test"][0]["ndcg_at_10"] == pytest.approx(retrieval["main_score"], abs=1e-6)

    markdown = (output_dir / "summary.md").read_text(encoding="utf-8")
    assert f"| {retrieval['task']} | Retrieval | test | ndcg_at_10 | {100 * retrieval['main_score']:.2f} |" in markdown
    assert f"| {sts['task']} | STS | test | cosine_spearman | {100 * sts['main_score']:.2f} |" in markdown


@needs_shared
def test_model_settings_are_restored(real_run: dict[str, Any]) -> None:
    assert real_run["model"].max_seq_length == 256


@needs_shared
def test_real_model_scores_are_plausible(real_run: dict[str, Any]) -> None:
    summary = real_run["summary"]
    # all-MiniLM-L6-v2 gets nDCG@10 ~0.65 on full SciFact and Spearman ~0.82 on full STS-B; these slices are easier.
    assert 0.6 <= result_for(summary, "Retrieval")["main_score"] <= 1.0
    assert 0.8 <= result_for(summary, "STS")["main_score"] <= 1.0


@needs_shared
def test_scores_drop_when_the_weights_are_shuffled(real_run: dict[str, Any], shuffled_summary: dict[str, Any]) -> None:
    for task_type in ("Retrieval", "STS"):
        real = result_for(real_run["summary"], task_type)["main_score"]
        broken = result_for(shuffled_summary, task_type)["main_score"]
        assert real - broken >= 0.3, (task_type, real, broken)


@needs_shared
def test_ndcg_at_10_matches_a_numpy_recomputation(real_run: dict[str, Any], slices: dict[str, Path]) -> None:
    """Rank the slice from the very embeddings mteb used and compute binary nDCG@10 independently.

    The files are parsed here directly (not with the module's loader), so wrong ids or a wrong split would show.
    """
    folder = slices["beir"]
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    query_text = {
        q["_id"]: q["text"]
        for q in map(json.loads, (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines())
    }
    qrels: dict[str, set[str]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, grade = line.split("\t")
        if int(grade) > 0:
            qrels.setdefault(query_id, set()).add(doc_id)
    query_ids = list(qrels)
    corpus_ids = [d["_id"] for d in corpus]

    recorder: EncodeRecorder = real_run["recorder"]
    # mteb embeds a document as "title text" (stripped); a KeyError here means it embedded something else.
    docs = np.stack(
        [recorder[f"{d['title']} {d['text']}".strip() if d["title"] else d["text"].strip()] for d in corpus]
    )
    queries = np.stack([recorder[query_text[q]] for q in query_ids])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores = queries @ docs.T

    discounts = 1.0 / np.log2(np.arange(2, 12))
    ndcgs = []
    for row, query_id in enumerate(query_ids):
        relevant = qrels[query_id]
        top = np.argsort(-scores[row], kind="stable")[:10]
        gains = np.array([1.0 if corpus_ids[i] in relevant else 0.0 for i in top])
        ideal = discounts[: min(len(relevant), 10)].sum()
        ndcgs.append(float((gains * discounts[: len(gains)]).sum() / ideal))
    expected = float(np.mean(ndcgs))

    reported = result_for(real_run["summary"], "Retrieval")["metrics"]["ndcg_at_10"]
    assert len(query_ids) == 10 and len(corpus_ids) == 200
    assert reported == pytest.approx(expected, abs=1e-4)


@needs_shared
def test_sts_spearman_matches_a_scipy_recomputation(real_run: dict[str, Any], slices: dict[str, Path]) -> None:
    from scipy.stats import spearmanr

    data = load_sts_file(slices["sts"])
    recorder: EncodeRecorder = real_run["recorder"]
    first = np.stack([recorder[s] for s in data.sentence1])
    second = np.stack([recorder[s] for s in data.sentence2])
    cosine = (first * second).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
    expected = float(spearmanr(cosine, data.score)[0])
    reported = result_for(real_run["summary"], "STS")["metrics"]["cosine_spearman"]
    assert len(data.score) == 100 and math.isfinite(expected)
    assert reported == pytest.approx(expected, abs=1e-4)


@needs_shared
def test_a_model_path_is_loaded_and_scores_the_same(
    real_run: dict[str, Any], slices: dict[str, Path], tmp_path: Path
) -> None:
    summary = evaluate(
        str(MODEL_DIR), [slices["sts"]], output_dir=tmp_path, max_length=MAX_LENGTH, show_progress_bar=False
    )
    assert summary["model"] == str(MODEL_DIR)
    expected = result_for(real_run["summary"], "STS")["main_score"]
    assert summary["results"][0]["main_score"] == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Per-query scores on the whole of SciFact, against a brute-force ranking computed here
# ----------------------------------------------------------------------------------------------------------------------

FULL_MAX_LENGTH = 48  # short: encoding the 5,183 abstracts on a 2-core CPU is most of the time


@pytest.fixture(scope="module")
def full_scifact_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not HAVE_SHARED:
        pytest.skip(SHARED_MISSING)
    from sentence_transformers import SentenceTransformer

    from retromae_hf.evaluation import per_query_scores

    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    recorder = EncodeRecorder(model)
    output_dir = tmp_path_factory.mktemp("full-scifact")
    summary = evaluate(
        model,
        [SCIFACT, STSB_TEST],
        output_dir=output_dir,
        batch_size=64,
        max_length=FULL_MAX_LENGTH,
        similarity="cosine",
        show_progress_bar=False,
        save_predictions=True,
    )
    return {"recorder": recorder, "summary": summary, "per_query": per_query_scores(output_dir)}


def brute_force_ndcg_at_10(recorder: EncodeRecorder, folder: Path) -> dict[str, float]:
    """Rank the whole corpus by cosine for every judged query and score trec_eval's nDCG@10, without mteb.

    The embeddings are the ones the model gave mteb (recorded; encoding twice would double the test's time), but
    the files are parsed here, documents are looked up as "title text", the ranking is a full sort over all
    5,183 documents, and nDCG uses linear gain (the grade) with log2 discounts, the ideal from all judgements.
    """
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    query_text = {
        q["_id"]: q["text"]
        for q in map(json.loads, (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines())
    }
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, grade = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(grade)
    query_ids = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    docs = np.stack(
        [recorder[f"{d['title']} {d['text']}".strip() if d["title"] else d["text"].strip()] for d in corpus]
    )
    queries = np.stack([recorder[query_text[q]] for q in query_ids])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores = queries @ docs.T
    discounts = 1.0 / np.log2(np.arange(2, 12))
    result = {}
    for row, query_id in enumerate(query_ids):
        top = np.argsort(-scores[row], kind="stable")[:10]
        gains = np.array([qrels[query_id].get(corpus[i]["_id"], 0) for i in top], dtype=float)
        ideal = np.sort(np.array(list(qrels[query_id].values()), dtype=float))[::-1][:10]
        result[query_id] = float((gains * discounts).sum() / (ideal * discounts[: len(ideal)]).sum())
    return result


@needs_shared
def test_full_scifact_ndcg_matches_brute_force_and_per_query_scores(full_scifact_run: dict[str, Any]) -> None:
    reported = result_for(full_scifact_run["summary"], "Retrieval")["main_score"]
    per_query = full_scifact_run["per_query"]["scifact"]
    brute = brute_force_ndcg_at_10(full_scifact_run["recorder"], SCIFACT)

    assert per_query["metric"] == "ndcg_at_10" and len(per_query["per_query"]) == 300
    assert list(per_query["per_query"]) == list(brute)  # qrels order, queries with a relevant document
    # The per-query scores come from mteb's own rankings: their mean is mteb's score.
    assert per_query["mean"] == pytest.approx(reported, abs=1e-5)  # mteb rounds to 5 decimals
    # An independent ranking and nDCG give the same scores, query by query (float64 here, float32 in mteb: a
    # near-tie could swap two documents, hence the tolerance on the count).
    assert float(np.mean(list(brute.values()))) == pytest.approx(reported, abs=1e-3)
    same = sum(abs(brute[q] - v) < 1e-6 for q, v in per_query["per_query"].items())
    assert same >= 298, f"only {same} of 300 queries score the same"
    assert 0.3 < reported < 0.8  # all-MiniLM-L6-v2 at 48 tokens: well above chance, below its 0.645 at 256


@needs_shared
def test_sts_per_pair_similarities_give_the_reported_spearman(full_scifact_run: dict[str, Any]) -> None:
    from scipy.stats import spearmanr

    entry = full_scifact_run["per_query"]["stsbenchmark-sts-test"]
    reported = result_for(full_scifact_run["summary"], "STS")["main_score"]
    assert len(entry["similarity"]) == len(entry["gold"]) == len(load_sts_file(STSB_TEST).score)
    assert float(spearmanr(entry["similarity"], entry["gold"])[0]) == pytest.approx(reported, abs=1e-5)


def test_per_query_scores_need_predictions(tmp_path: Path) -> None:
    from retromae_hf.evaluation import per_query_scores

    with pytest.raises(EvaluationDataError, match="summary file not found"):
        per_query_scores(tmp_path)
