"""The domain-adaptation benchmark (benchmarks/domain_adaptation.py): its report, from pieces written here.

The benchmark itself trains and scores real models (minutes on a GPU, hours on this CPU); these tests check what
turns its pieces into the results page: the paired differences over seeds, the per-seed column, the query counts,
and the command the page says reproduces it.
"""

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("domain_adaptation")


def write_piece(path, per_query, cosine, train_seconds=None):
    record = {
        "ndcg_at_10": sum(per_query.values()) / len(per_query),
        "per_query_ndcg_at_10": per_query,
        "sts_spearman": 0.0,
        "sts_cosine": cosine,
        "machine": "test machine",
    }
    if train_seconds is not None:
        record |= {"train_seconds": train_seconds, "log": [{"step": 1, "loss": 1.0}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture
def pieces(tmp_path, benchmark, monkeypatch):
    """A work folder with an unadapted model and a `retromae` arm on two seeds, ten queries, six STS pairs."""
    beir = tmp_path / "beir" / "toy"
    beir.mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": str(i), "title": "t", "text": f"document {i}"}) + "\n" for i in range(40)),
        encoding="utf-8",
    )
    sts = tmp_path / "sts.tsv"
    gold = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    sts.write_text(
        "sentence1\tsentence2\tscore\n" + "".join(f"a {i}\tb {i}\t{g}\n" for i, g in enumerate(gold)),
        encoding="utf-8",
    )
    monkeypatch.setattr(benchmark, "STS_TEST", sts)
    work = tmp_path / "work"
    base = {f"q{i}": i / 10 for i in range(10)}
    write_piece(work / "toy" / "unadapted.json", base, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    for seed, shift in ((1, 0.05), (2, 0.15)):  # every query up by 0.05 (seed 1) and 0.15 (seed 2)
        adapted = {q: value + shift for q, value in base.items()}
        # Seed 1 reverses the STS order of the first two pairs (a lower Spearman), seed 2 keeps it.
        cosine = [0.2, 0.1, 0.3, 0.4, 0.5, 0.6] if seed == 1 else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        write_piece(work / "toy" / "long" / f"seed{seed}" / "retromae.json", adapted, cosine, train_seconds=30)
    # The masked-LM baseline on seed 1 only: 0.02 below the unadapted model on every query.
    worse = {q: value - 0.02 for q, value in base.items()}
    write_piece(work / "toy" / "long" / "seed1" / "masked_lm.json", worse, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 20)
    args = benchmark.parse_args(
        [
            "--work", str(work), "--beir-root", str(tmp_path / "beir"), "--datasets", "toy", "--tag", "long",
            "--seeds", "1", "2", "--steps", "5", "--batch-size", "4", "--bootstrap", "400",
            "--output", str(tmp_path / "results" / "toy"),
        ]
    )  # fmt: skip
    return work, args


def test_report_gives_the_mean_paired_difference_over_seeds_and_each_seed(benchmark, pieces) -> None:
    work, args = pieces
    results = benchmark.report(work, args, benchmark.reproducing_command(args))
    row = results["datasets"]["toy"]["retromae"]
    assert row["seeds"] == [1, 2]
    assert row["ndcg_delta"]["difference"] == pytest.approx(10.0)  # mean of +5 and +15 (x100)
    assert [s["difference"] for s in row["ndcg_delta"]["per_seed"]] == pytest.approx([5.0, 15.0])
    # Two seeds, constant shifts: every bootstrap replicate is +5, +10 or +15.
    assert 5.0 - 1e-9 <= row["ndcg_delta"]["low"] <= row["ndcg_delta"]["high"] <= 15.0 + 1e-9
    assert (row["queries_better"], row["queries_worse"], row["queries"]) == (10, 0, 10)
    assert row["sts_delta"]["per_seed"][1]["difference"] == pytest.approx(0.0)
    assert row["sts_delta"]["per_seed"][0]["difference"] < 0
    (comparison,) = results["comparisons"]  # retromae - masked_lm, on the one seed both have
    assert (comparison["comparison"], comparison["seeds"]) == ("retromae - masked_lm", [1])
    assert comparison["ndcg_delta"]["difference"] == pytest.approx(7.0)  # +0.05 against -0.02
    page = (work.parent / "results" / "toy.md").read_text(encoding="utf-8")
    assert "| toy | retromae | 2 |" in page and "+5.00, +15.00" in page
    assert "Machine: test machine." in page and "toy: 0.5 passes" in page  # 5 steps x 4 texts, 40 documents


def test_report_skips_missing_pieces_and_the_command_names_only_what_differs(benchmark, pieces) -> None:
    work, args = pieces
    (work / "toy" / "long" / "seed2" / "retromae.json").unlink()
    (work / "toy" / "long" / "seed1" / "masked_lm.json").unlink()
    results = benchmark.report(work, args, "cmd")
    assert results["datasets"]["toy"]["retromae"]["seeds"] == [1]
    assert "masked_lm" not in results["datasets"]["toy"] and results["comparisons"] == []
    args.bf16 = True
    command = benchmark.reproducing_command(args)
    assert command.startswith("python benchmarks/domain_adaptation.py --tag long ")
    assert "--seeds 1 2" in command and "--steps 5" in command
    assert "--work" not in command and "--output" not in command and "--bootstrap 400" in command
    assert " --bf16 --" in command  # a switch, without a value


def test_report_without_pieces_writes_nothing(benchmark, pieces, tmp_path) -> None:
    _, args = pieces
    with pytest.raises(SystemExit, match="nothing to report"):
        benchmark.report(tmp_path / "elsewhere", args, "cmd")
    assert not (tmp_path / "results" / "toy.md").exists()


def test_training_pairs_come_from_the_train_split_and_sets_without_one_are_skipped(benchmark, pieces) -> None:
    work, args = pieces
    toy = work.parent / "beir" / "toy"
    # No qrels/train.tsv: the in-domain arms are skipped before any model is built, and nothing is written.
    benchmark.piece(work, "toy", "retromae_mnrl_domain", 1, args)
    assert not benchmark.piece_path(work, "toy", "retromae_mnrl_domain", 1, args.tag).exists()
    (toy / "qrels").mkdir()
    (toy / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t3\t1\nq1\t4\t0\nq2\t99\t1\n")
    (toy / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "what is document three"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "x"})
        + "\n"
    )
    anchors, positives = benchmark.train_pairs(toy)
    # Only judged-relevant documents that exist: q1-3 (q1-4 has grade 0, document 99 is not in the corpus).
    assert (anchors, positives) == (["what is document three"], ["t document 3"])
