"""`retromae-hf mine`: hard negatives mined with a sentence-transformers model, written as a pairs file that stage 2
trains on unchanged; options and data checked before the model is loaded; the output-folder rules."""

import json
import re
from pathlib import Path

import pytest
from conftest import project_lines, run_cli, shared_path, snapshot
from test_training import cli, read_log, stage2_scratch_args

from retromae_hf.data import load_pairs
from retromae_hf.errors import OutputExistsError
from retromae_hf.mine import MINED_PAIRS_FILE, MINING_RECORD_FILE, MiningError, MiningOptions, mine_hard_negatives

#: Not a model: every error test passes it, so an error about the model would mean it was reached too early.
NO_MODEL = "/nonexistent/model-that-must-not-be-loaded"


@pytest.fixture(scope="module")
def minilm() -> Path:
    return shared_path("models", "all-MiniLM-L6-v2")


def write_beir(folder: Path, queries: int = 16, extra_documents: int = 24) -> Path:
    """A BEIR folder with training qrels (one positive per query) and documents nobody judged, from the project's
    own prose: the judged documents follow their query line, the others are later lines."""
    lines = project_lines(2 * queries + extra_documents)
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for i in range(queries):
            corpus.write(json.dumps({"_id": f"d{i}", "title": f"Part {i}", "text": lines[2 * i + 1]}) + "\n")
        for j in range(extra_documents):
            corpus.write(json.dumps({"_id": f"x{j}", "title": "", "text": lines[2 * queries + j]}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": lines[2 * i]}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(queries)]
    (folder / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_pairs(path: Path, count: int = 20) -> Path:
    lines = project_lines(2 * count)
    rows = [{"question": lines[2 * i], "answer": lines[2 * i + 1]} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_mine_a_beir_folder_then_stage2_trains_on_it(tmp_path, minilm, tokenizer_dir, capfd):
    beir = write_beir(tmp_path / "beir")
    out = tmp_path / "mined"
    argv = ["mine", "--model", str(minilm), "--data", str(beir), "--output-dir", str(out), "--num-negatives", "2",
            "--faiss", "no"]  # fmt: skip
    code, err = run_cli(argv, capfd)
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (out / MINED_PAIRS_FILE).read_text().splitlines()]
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    documents = {(f"{d['title']} {d['text']}" if d["title"] else d["text"]) for d in corpus}
    queries = [json.loads(line)["text"] for line in (beir / "queries.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and [row["query"] for row in rows] == queries
    for i, row in enumerate(rows):
        positive = row["positive_passages"][0]["text"]
        negatives = [passage["text"] for passage in row["negative_passages"]]
        assert positive == f"Part {i} {corpus[i]['text']}"
        assert len(negatives) == 2 and positive not in negatives and set(negatives) <= documents
    record = json.loads((out / MINING_RECORD_FILE).read_text())
    assert record["pairs_in"] == record["pairs_out"] == 16 and record["candidate_count"] == 40
    assert record["options"]["num_negatives"] == 2 and record["options"]["sampling_strategy"] == "top"
    # "top": the two documents most similar to the query (cosine), its positive left out, computed here on our own.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm), device="cpu")
    texts = sorted(documents)
    similarity = model.encode(queries, normalize_embeddings=True) @ model.encode(texts, normalize_embeddings=True).T
    for i, row in enumerate(rows):
        ranked = [texts[j] for j in similarity[i].argsort()[::-1] if texts[j] != row["positive_passages"][0]["text"]]
        assert [passage["text"] for passage in row["negative_passages"]] == ranked[:2]
    # What stage 2 reads from it, unchanged: the query, its positive and the two mined negatives.
    pairs = load_pairs(out / MINED_PAIRS_FILE, cache_dir=str(tmp_path / "cache"))
    assert pairs[0]["negatives"] == [p["text"] for p in rows[0]["negative_passages"]]
    result = cli(*stage2_scratch_args(out / MINED_PAIRS_FILE, tmp_path / "stage2", tokenizer_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(tmp_path / "stage2")
    assert sorted(log) == [1, 2, 3] and all(record["contrastive_loss"] > 0 for record in log.values())


@pytest.fixture(scope="module")
def tokenizer_dir(wordpiece_tokenizer) -> Path:
    return Path(wordpiece_tokenizer.name_or_path)


def test_mine_pairs_with_random_sampling_is_seeded_and_reruns_over_its_own_output(tmp_path, minilm):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    options = MiningOptions(num_negatives=3, range_max=10, sampling_strategy="random", seed=7, use_faiss=False)
    first = mine_hard_negatives(
        minilm, pairs, tmp_path / "a", query_column="question", positive_column="answer", options=options
    )
    rows = [json.loads(line) for line in (first / MINED_PAIRS_FILE).read_text().splitlines()]
    answers = [json.loads(line)["answer"] for line in pairs.read_text().splitlines()]
    for row, answer in zip(rows, answers, strict=True):
        negatives = [passage["text"] for passage in row["negative_passages"]]
        assert len(set(negatives)) == 3 and answer not in negatives and set(negatives) <= set(answers)
    marker = json.loads((first / ".retromae-output.json").read_text())
    assert marker["command"] == "mine"
    with pytest.raises(OutputExistsError, match="already exists"):
        mine_hard_negatives(minilm, pairs, first, query_column="question", positive_column="answer", options=options)
    again = mine_hard_negatives(
        minilm, pairs, first, query_column="question", positive_column="answer", options=options, overwrite=True
    )  # --overwrite replaces an earlier output of mine; the same seed draws the same negatives
    assert [json.loads(line) for line in (again / MINED_PAIRS_FILE).read_text().splitlines()] == rows
    top = mine_hard_negatives(
        minilm, pairs, tmp_path / "top", query_column="question", positive_column="answer",
        options=MiningOptions(num_negatives=3, range_max=10, use_faiss=False),
    )  # fmt: skip
    assert json.loads((top / MINING_RECORD_FILE).read_text())["options"]["sampling_strategy"] == "top"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "missing.jsonl"], r"--data missing\.jsonl: no such file or folder"),
        (
            ["--data", "questions.csv"],
            r"questions\.csv: columns 'query', 'positive' not found; the file has columns \['q', 'a'\]",
        ),
        (["--data", "beir", "--split", "dev"], r"no qrels for split 'dev'"),
        (["--data", "pairs.jsonl", "--range-min", "5", "--range-max", "5"], r"--range-max \(5\) must be larger"),
        (["--data", "pairs.jsonl", "--num-negatives", "8", "--range-max", "4"], r"cannot mine 8 negatives"),
        (["--data", "pairs.jsonl", "--range-min", "-1"], r"--range-min must be >= 0"),
        (["--data", "pairs.jsonl", "--relative-margin", "nan"], r"--relative-margin must be a finite number"),
        (["--data", "pairs.jsonl", "--output-dir", "taken"], r"taken already exists and is a folder that is not empty"),
        (["--data", "pairs.jsonl", "--output-dir", "taken", "--overwrite"], r"taken holds|replaces only an earlier"),
        (["--data", "beir", "--output-dir", "beir/mined"], r"beir/mined is inside the input beir"),
    ],
)
def test_bad_input_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch, capfd, argv, message):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path / "pairs.jsonl", count=4)
    (tmp_path / "questions.csv").write_text("q,a\nwhat,that\n", encoding="utf-8")
    write_beir(tmp_path / "beir", queries=2, extra_documents=0)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine, not the miner's\n", encoding="utf-8")
    before = snapshot(tmp_path)
    if "--output-dir" not in argv:
        argv = [*argv, "--output-dir", "out"]
    code, err = run_cli(["mine", "--model", NO_MODEL, *argv], capfd)
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and "model-that-must-not-be-loaded" not in err
    assert re.search(message, err), err[-2000:]
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_options_are_checked_as_sentence_transformers_would():
    with pytest.raises(MiningError, match="--num-negatives must be at least 1"):
        MiningOptions(num_negatives=0).check()
    with pytest.raises(MiningError, match="--sampling must be one of top, random"):
        MiningOptions(sampling_strategy="bottom").check()
    MiningOptions(num_negatives=4, range_min=2, range_max=6).check()  # exactly enough candidates
