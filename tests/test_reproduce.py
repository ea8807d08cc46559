"""The reproduction benchmark (benchmarks/reproduce.py): its statistics, and a tiny end-to-end smoke run.

The smoke run trains two arms for a couple of steps on a slice of the shared corpus, evaluates them with mteb on
CISI, and builds the report; it is marked slow and skipped without ../shared.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, load_benchmark

DATA = SHARED / "data"


@pytest.fixture(scope="module")
def reproduce():
    return load_benchmark("reproduce")


def test_presets_fill_what_is_not_given_and_flags_win(reproduce) -> None:
    gpu = reproduce.parse_args(["--preset", "gpu", "--batch-size", "16", "--no-bf16"])
    assert (gpu.stage1_steps, gpu.stage2_steps, gpu.stage2_batch_size, gpu.eval_max_length) == (1352, 200, 64, 256)
    assert (gpu.batch_size, gpu.bf16, gpu.workers) == (16, False, 8)
    assert gpu.results.endswith("reproduce_gpu.json") and gpu.figure_prefix == "reproduce_gpu"
    cpu = reproduce.parse_args(["--tag", "long"])
    assert (cpu.stage1_steps, cpu.batch_size, cpu.bf16, cpu.workers) == (200, 32, False, 0)
    assert cpu.results.endswith("reproduce_small_long.json") and cpu.report_tags == ["long"]
    assert reproduce.budget_of(gpu)["stage1"]["tokens_per_arm"] == 1352 * 16 * 128


def test_bootstrap_of_a_constant_difference_is_that_difference(reproduce) -> None:
    rng = np.random.default_rng(0)
    base = rng.random(50)
    result = reproduce.paired_bootstrap([(base + 0.1, base), (base + 0.1, base)], "retrieval", 500, rng)
    assert result["difference"] == pytest.approx(10.0)
    assert result["low"] == pytest.approx(10.0) and result["high"] == pytest.approx(10.0)


def test_bootstrap_interval_covers_the_mean_and_widens_with_seed_spread(reproduce) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300)
    one = reproduce.paired_bootstrap([(a, b)], "retrieval", 2000, np.random.default_rng(2))
    assert one["low"] < 100 * float(np.mean(a - b)) < one["high"]
    assert one["per_seed"][0]["low"] == pytest.approx(one["low"], abs=0.5)  # one seed: the plain query bootstrap
    # Two seeds that disagree by a constant: the pooled interval must carry that spread.
    spread = reproduce.paired_bootstrap([(a + 0.2, b), (a - 0.2, b)], "retrieval", 2000, np.random.default_rng(2))
    assert spread["high"] - spread["low"] > 2 * (one["high"] - one["low"])


def test_sts_bootstrap_uses_spearman_differences(reproduce) -> None:
    rng = np.random.default_rng(3)
    gold = rng.random(200)
    good, noisy = gold + 0.05 * rng.random(200), gold + 2.0 * rng.random(200)
    result = reproduce.paired_bootstrap([(good, noisy, gold)], "sts", 300, rng)
    from scipy.stats import spearmanr

    expected = 100 * (spearmanr(good, gold)[0] - spearmanr(noisy, gold)[0])
    assert result["difference"] == pytest.approx(expected)
    assert 0 < result["low"] < expected < result["high"]


def test_reference_seeds_are_keyed_by_local_query_ids(reproduce, tmp_path: Path) -> None:
    reference = SHARED / "reference" / "gpu-reproduction-2026-11-27"
    if not (reference / "results_seed42.json").is_file() or not (DATA / "beir" / "scifact").is_dir():
        pytest.skip(f"needs {reference} and {DATA / 'beir' / 'scifact'}")
    args = reproduce.parse_args(["--tasks", str(DATA / "beir" / "scifact"), str(DATA / "beir" / "cisi")])
    runs, protocol = reproduce.load_reference(args, reference)
    assert protocol["stage1_steps"] == 1352
    rows = reproduce.differences(runs, 1000)
    scifact = {(r["stage"], r["comparison"]): r for r in rows if r["task"] == "scifact"}
    # The reference README's per-seed figures: enhanced - mlm, SciFact, stage 1: +9.3 (seed 42), +7.2 (seed 43).
    per_seed = [round(e["difference"], 1) for e in scifact[(1, "enhanced - mlm")]["per_seed"]]
    assert per_seed == [9.3, 7.2]
    assert scifact[(1, "enhanced - mlm")]["seeds"] == ["42 (reference)", "43 (reference)"]


def test_report_leaves_out_tags_that_never_ran(reproduce, tmp_path: Path) -> None:
    # Tag "base" has one evaluated piece; tag "long" was asked for but nothing of it exists (e.g. it never ran).
    eval_dir = tmp_path / "runs" / "base" / "seed7" / "untrained" / "stage1" / "eval"
    eval_dir.mkdir(parents=True)
    summary = {"results": [{"task": "cisi", "main_metric": "ndcg_at_10", "main_score": 0.0512}]}
    (eval_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    results = tmp_path / "results" / "r.json"
    args = reproduce.parse_args(
        ["--seeds", "7", "--report-only", "--report-tags", "base", "long", "--output-dir", str(tmp_path / "runs"),
         "--results", str(results), "--figures", str(tmp_path / "figures"), "--bootstrap", "10"]
    )  # fmt: skip
    reproduce.report(args, "test")

    assert list(json.loads(results.read_text(encoding="utf-8"))["blocks"]) == ["base"]
    markdown = results.with_suffix(".md").read_text(encoding="utf-8")
    assert "### base" in markdown and "5.12" in markdown
    assert "long" not in markdown


@pytest.mark.slow
def test_tiny_end_to_end_run(reproduce, tmp_path: Path) -> None:
    needed = [DATA / "corpus" / "wiki1m_for_simcse_head.txt", DATA / "beir" / "cisi", SHARED / "models"]
    if not all(path.exists() for path in needed):
        pytest.skip(f"needs the shared data under {SHARED}")
    corpus = tmp_path / "corpus.txt"
    lines = (DATA / "corpus" / "wiki1m_for_simcse_head.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:400]) + "\n", encoding="utf-8")
    results = tmp_path / "results" / "tiny.json"
    argv = [
        "--arms", "mlm", "enhanced", "--seeds", "7", "--stage1-steps", "2", "--stage2-steps", "1",
        "--batch-size", "4", "--stage2-batch-size", "4", "--hidden-size", "32", "--layers", "1", "--heads", "2",
        "--intermediate-size", "64", "--eval-max-length", "32", "--corpus", str(corpus),
        "--pairs", str(DATA / "pairs" / "snli_devtest" / "snli_devtest_triplets.csv"),
        "--tasks", str(DATA / "beir" / "cisi"), "--output-dir", str(tmp_path / "runs"),
        "--results", str(results), "--figures", str(tmp_path / "figures"), "--bootstrap", "100",
    ]  # fmt: skip
    reproduce.main(argv)

    report = json.loads(results.read_text(encoding="utf-8"))
    block = report["blocks"]["base"]
    cells = {(run["arm"], run["stage"]) for run in block["runs"]}
    assert cells == {("mlm", 1), ("enhanced", 1), ("untrained", 1), ("mlm", 2), ("enhanced", 2)}
    assert {row["comparison"] for row in block["differences"]} == {"enhanced - mlm"}
    for row in block["differences"]:
        assert row["task"] == "cisi" and row["n_units"] == 76
        assert row["low"] <= row["difference"] <= row["high"]
    per_query = json.loads(results.with_name("tiny_per_query.json").read_text(encoding="utf-8"))
    assert len(per_query["base"]["this script/seed7/enhanced_stage1"]["cisi"]["per_query"]) == 76
    assert (tmp_path / "figures" / "tiny_differences.png").is_file()
    # The corpus was tokenized once, into the shared cache every arm read.
    assert len(list((tmp_path / "runs" / "tokenized").iterdir())) == 1


def test_contrastive_only_arm_shares_the_enhanced_base_and_drops_the_retromae_term(reproduce) -> None:
    args = reproduce.parse_args(["--arms", "mlm", "enhanced", "enhanced_contrastive", "--output-dir", "/tmp/r"])
    assert reproduce.parse_args([]).arms == ["mlm", "enhanced", "plain"]  # the default experiment is unchanged
    assert reproduce.run_dir(args, "enhanced_contrastive", 42, 1) == reproduce.run_dir(args, "enhanced", 42, 1)
    assert reproduce.run_dir(args, "enhanced_contrastive", 42, 2) != reproduce.run_dir(args, "enhanced", 42, 2)
    joint = reproduce.stage2_recipe(args, "enhanced", 42)
    contrastive = reproduce.stage2_recipe(args, "enhanced_contrastive", 42)
    assert joint["retromae_weight"] == 1.0 and contrastive["retromae_weight"] == 0.0
    assert contrastive["model"] == joint["model"]  # the same stage-1 model
    assert {key: value for key, value in contrastive.items() if key not in ("retromae_weight", "output_dir")} == {
        key: value for key, value in joint.items() if key not in ("retromae_weight", "output_dir")
    }
    assert ("enhanced", "enhanced_contrastive") in reproduce.COMPARISONS
