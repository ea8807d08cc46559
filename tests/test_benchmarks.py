"""The speed benchmarks' kit: the sparse masked-LM anchor is the masked LM, the GPU command runs end to end (a
CPU dry run at tiny shapes, so that it cannot rot between the rare GPU sessions), and what it carries fits one
call to the lent GPU machine."""

import json
import os
import re
import subprocess
import tarfile

import pytest
import torch
from conftest import REPO, SHARED, load_benchmark, shared_path
from transformers import AutoConfig, AutoModelForMaskedLM

CARRY_LIMIT_MIB = 64  # what one call to the lent GPU machine carries: working tree and carried paths together
LIGER_WHEEL_MIB = 1.0  # liger_kernel-0.8.5-py3-none-any.whl is 0.87 MiB; prepare_speed.sh checks the real total


def tiny_config(architecture: str):
    fields = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=211)
    if architecture == "modernbert":
        fields.update(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    else:
        fields.update(max_position_embeddings=64, pad_token_id=1 if architecture == "roberta" else 0)
    return AutoConfig.for_model(architecture, **fields)


@pytest.mark.parametrize("architecture", ["bert", "roberta", "modernbert"])
def test_sparse_anchor_has_the_full_masked_lm_loss_and_gradients(architecture):
    """Logits at the labelled positions only (gathered by the benchmark for BERT/RoBERTa, ModernBERT's own
    `sparse_prediction`) give the loss and gradients of the masked LM that projects every position."""
    anchors = load_benchmark("masked_lm_anchors").masked_lm_anchors
    torch.manual_seed(0)
    full = AutoModelForMaskedLM.from_config(tiny_config(architecture)).eval()  # eval: no dropout
    models = anchors(full)
    models["sparse"].eval()
    ids = torch.randint(5, 211, (3, 16))
    attention = torch.ones_like(ids)
    attention[2, 10:] = 0
    labels = torch.where(torch.rand(3, 16) < 0.3, ids, -100).masked_fill(attention == 0, -100)
    results = {}
    for name, model in models.items():
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        results[name] = (loss, torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(results["sparse"][0], results["full"][0])
    for sparse, dense in zip(results["sparse"][1], results["full"][1], strict=True):
        torch.testing.assert_close(sparse, dense, atol=1e-6, rtol=1e-5)


def test_gpu_speed_command_dry_run_on_cpu(tmp_path):
    """`benchmarks/gpu/speed.sh --tiny`: every stage of the GPU command at tiny shapes on the CPU, with results in
    report.md / results.json. Ratios are not checked (a loaded CPU at tiny shapes says nothing): that they exist is."""
    shared_path("data", "corpus", "gutenberg_en.txt")
    shared_path("models", "all-MiniLM-L6-v2", "tokenizer.json")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": os.environ.get("PYTHON", "python"), "RETROMAE_SHARED": str(SHARED)}
    env["KIT"] = str(tmp_path / "no-kit")  # the dry run uses ../shared, never a kit that happens to be here
    result = subprocess.run(
        ["bash", "benchmarks/gpu/speed.sh", "--tiny"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["exit_codes"] == {"tests": 0, "long": 0, "chunked": 0, "fused": 0}
    rows = results["long"]["results"][0]["rows"]
    assert {row["variant"] for row in rows} == {"mlm", "mlm_sparse", "after", "decoder"}
    assert all(row["tokens_per_s"] > 0 for row in rows)
    for stage in ("chunked", "fused"):
        (model,) = results[stage]["models"]
        assert model["ratio_vs_mlm"] > 0 and model["ratio_vs_sparse_mlm"] > 0
    assert "fused requested, no kernel on cpu" in results["fused"]["models"][0]["loss"]
    assert set(results["chunked"]["eval_loss"]["seconds"]) == {
        "before (gradients taken in forward)",
        "after (loss only)",
    }
    report = (out / "report.md").read_text()
    assert all(f"## {stage} (exit 0)" in report for stage in ("tests", "long", "chunked", "fused"))
    assert "| L | batch | variant |" in report and "step ratio vs MLM" in report
    assert sorted(path.name for path in out.iterdir()) == ["report.md", "results.json", "run.log"]


def test_gpu_speed_kit_fits_one_call(tmp_path):
    """`prepare_speed.sh` (without the network: NO_WHEELS=1) packs the data the benchmarks read, enough text for
    32 x 8,192 tokens, and with the liger-kernel wheel and the tracked files stays within one call's 64 MiB."""
    shared_path("data", "corpus", "gutenberg_en.txt")
    shared_path("models", "all-MiniLM-L6-v2", "tokenizer.json")
    kit = tmp_path / "kit"
    env = {**os.environ, "KIT": str(kit), "NO_WHEELS": "1", "RETROMAE_SHARED": str(SHARED)}
    result = subprocess.run(
        ["bash", "benchmarks/gpu/prepare_speed.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sizes = re.search(r"kit ([\d.]+) MiB \+ tracked files ([\d.]+) MiB = ([\d.]+) MiB", result.stdout)
    kit_mib, total_mib = float(sizes[1]), float(sizes[3])
    assert total_mib + LIGER_WHEEL_MIB <= CARRY_LIMIT_MIB
    assert kit_mib == pytest.approx((kit / "data.tar.xz").stat().st_size / 2**20, abs=0.1)
    with tarfile.open(kit / "data.tar.xz") as archive:
        members = {member.name: member.size for member in archive.getmembers() if member.isfile()}
    assert "models/all-MiniLM-L6-v2/tokenizer.json" in members
    # long_context.py reads 6 characters per token it needs: 32 documents of 8,192 tokens.
    assert members["data/corpus/gutenberg_en.txt"] >= 6 * 32 * 8192
    assert not list(tmp_path.glob("kit.staging.*"))  # the staging folder was renamed into place


def test_counted_step_composition_in_the_docs_is_the_scripts_output(capsys):
    """docs/benchmarks.md's counted ratios are `benchmarks/step_composition.py`'s output, row for row (the shape
    names may carry a note in the docs)."""
    load_benchmark("step_composition").main([])
    printed = [line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()[2:]]
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    section = docs[docs.index("## Against the masked LM as it is trained") :]
    table = [line.split(" | ")[1:] for line in section.splitlines() if line.startswith("| ")][1 : 1 + len(printed)]
    assert table == printed
