"""The `retromae-hf` command line: sub-commands, offline demo, evaluate on local data."""

import json
import os
import subprocess
import sys

from conftest import REPO, shared_path


def cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "retromae_hf", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_help_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("train", "convert", "export", "evaluate", "push", "pull", "demo"):
        assert command in result.stdout, command


def test_demo_trains_and_saves_a_loadable_model(tmp_path):
    result = cli("demo", "--output-dir", str(tmp_path / "demo"), "--steps", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    first, last = (float(x) for x in result.stdout.split("loss ")[1].split(" after")[0].split(" -> "))
    assert last < first  # the losses printed are real and fall
    config = json.loads((tmp_path / "demo" / "config.json").read_text())
    assert config["model_type"] == "retromae" and (tmp_path / "demo" / "tokenizer.json").is_file()


def test_evaluate_local_beir_and_sts_offline(tmp_path):
    from retromae_hf.quickstart import write_docstring_retrieval_task

    folder = write_docstring_retrieval_task(tmp_path / "docstrings")
    sts = shared_path("data", "sts", "stsbenchmark", "sts-test.tsv")
    sts_slice = tmp_path / "sts-slice.tsv"
    sts_slice.write_text("\n".join(sts.read_text(encoding="utf-8").splitlines()[:61]) + "\n", encoding="utf-8")
    model = shared_path("models", "all-MiniLM-L6-v2")
    result = cli("evaluate", str(model), "--tasks", str(folder), str(sts_slice), "--output-dir", str(tmp_path / "ev"),
                 "--max-length", "128")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    scores = {entry["task_type"]: entry["main_score"] for entry in summary["results"]}
    assert scores["Retrieval"] > 0.5 and scores["STS"] > 0.5  # a real model on real data
    assert "| Retrieval |" in (tmp_path / "ev" / "summary.md").read_text()
    missing = cli("evaluate", str(model), "--tasks", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x"))
    assert missing.returncode != 0 and "nowhere" in missing.stderr
