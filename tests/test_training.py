"""Training: recipes, both stages from the command line on the shared data, exact resume, clear errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, shared_path

from retromae_hf.training import (
    RECIPE_FIELDS,
    RecipeError,
    available_recipes,
    build_recipe,
    read_recipe_file,
    recipe_stages,
)

TINY_MODEL = (
    "model_config={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, "
    "max_position_embeddings: 64}"
)


def cli(*args: str, cwd: Path = REPO, timeout: int = 600, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "retromae_hf", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )


def read_log(folder: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines() if line.strip()]
    return {record["step"]: record for record in records if "loss" in record}


def stage1_args(corpus: Path, output_dir: Path, max_steps: int, save_steps: int, tokenizer: Path) -> list[str]:
    return [
        "train", "--stage", "1", "--model", "scratch", "--tokenizer", str(tokenizer), "--corpus", str(corpus),
        "--max-length", "64", "--output-dir", str(output_dir), "--no-evaluate",
        "--set", TINY_MODEL,
        "--set", f"training.max_steps={max_steps}", "--set", "training.per_device_train_batch_size=4",
        "--set", "training.logging_steps=1", "--set", f"training.save_steps={save_steps}",
        "--set", "training.seed=3", "--set", "training.dataloader_num_workers=0",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    lines = shared_path("data", "corpus", "gutenberg_en.txt").read_text(encoding="utf-8").splitlines()[:120]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_shipped_recipes_parse_and_validate(tmp_path):
    from retromae_hf.training import training_arguments

    assert {"quickstart", "stage1-wikipedia-bookcorpus", "stage2-msmarco", "stage2-nli"} <= set(available_recipes())
    for name in available_recipes():
        raw, path = read_recipe_file(name)
        for spec in recipe_stages(raw, path):
            if spec.get("model") == "previous":
                spec = {**spec, "model": "some/checkpoint"}
            recipe = build_recipe(spec, source=name)
            assert recipe.stage in (1, 2)
            recipe.training.pop("bf16", None)  # mixed precision needs hardware this test may not have
            assert training_arguments(recipe, str(tmp_path)).learning_rate > 0
    nli = build_recipe(read_recipe_file("stage2-nli")[0])
    assert (nli.temperature, nli.max_length, nli.similarity) == (0.05, 64, "cosine")
    stage1 = build_recipe(read_recipe_file("stage1-wikipedia-bookcorpus")[0])
    assert stage1.training["learning_rate"] == 1e-4 and stage1.training["per_device_train_batch_size"] == 32
    assert (stage1.encoder_mask_ratio, stage1.decoder_mask_ratio, stage1.max_length) == (0.3, 0.5, 512)


def test_recipe_errors_name_the_problem():
    with pytest.raises(RecipeError, match=r"learnig_rate \(did you mean"):
        build_recipe({"stage": 1, "corpus": ["x.txt"], "learnig_rate": 1})
    with pytest.raises(RecipeError, match="max_length must be int"):
        build_recipe({"stage": 1, "corpus": ["x.txt"], "max_length": "long"})
    with pytest.raises(RecipeError, match="stage 2 needs `pairs`"):
        build_recipe({"stage": 2})
    with pytest.raises(RecipeError, match="no recipe file"):
        read_recipe_file("no-such-recipe")


def test_help_documents_every_recipe_key():
    result = cli("train", "--help")
    assert result.returncode == 0
    for name, spec in RECIPE_FIELDS.items():
        if name == "stage" or str(spec.type).startswith("dict"):
            assert name in ("stage", "model_config", "training")
            continue
        assert "--" + name.replace("_", "-") in result.stdout, name


def test_missing_file_and_column_fail_before_training(tmp_path, bert_tokenizer):
    bert = str(shared_path("models", "all-MiniLM-L6-v2"))
    result = cli("train", "--stage", "1", "--model", "scratch", "--tokenizer", bert,
                 "--corpus", str(tmp_path / "missing.txt"), "--output-dir", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 2 and "missing.txt" in result.stderr
    assert not (tmp_path / "run" / "checkpoint-1").exists()
    table = tmp_path / "pairs.csv"
    table.write_text("question,answer\nq1,a1\n", encoding="utf-8")
    result = cli("train", "--stage", "2", "--model", "scratch", "--tokenizer", bert, "--pairs", str(table),
                 "--output-dir", str(tmp_path / "run2"), "--set", TINY_MODEL)  # fmt: skip
    assert result.returncode == 2 and "query" in result.stderr and "pairs.csv" in result.stderr
    result = cli("train", "--stage", "1", "--recipe", "quickstart", "--bogus-flag", "1")
    assert result.returncode != 0 and "--bogus-flag" in result.stderr


def test_resume_after_a_kill_continues_exactly(tmp_path, small_corpus):
    tokenizer = shared_path("models", "all-MiniLM-L6-v2")
    reference = cli(*stage1_args(small_corpus, tmp_path / "reference", 8, 4, tokenizer))
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "retromae_hf", *stage1_args(small_corpus, killed_dir, 8, 4, tokenizer)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (killed_dir / "checkpoint-4").is_dir():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "final").exists()

    resumed = cli(*stage1_args(small_corpus, killed_dir, 8, 4, tokenizer), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = read_log(tmp_path / "reference"), read_log(killed_dir)
    assert sorted(got) == sorted(expected) == list(range(1, 9))
    for step in range(5, 9):
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], abs=1e-6), step
        assert got[step]["decoder_loss"] == pytest.approx(expected[step]["decoder_loss"], abs=1e-6), step


def test_damaged_checkpoint_is_refused(tmp_path):
    from retromae_hf.training import resolve_resume

    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "trainer_state.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00\x01 truncated")
    with pytest.raises(RecipeError, match="damaged"):
        resolve_resume(str(folder), str(tmp_path))
    with pytest.raises(RecipeError, match="no checkpoint"):
        resolve_resume(True, str(tmp_path / "empty"))


def test_stage2_on_nli_triplets_and_scifact_pairs(tmp_path, small_corpus):
    tokenizer = shared_path("models", "all-MiniLM-L6-v2")
    triplets = shared_path("data", "pairs", "snli_devtest", "snli_devtest_triplets.csv")
    head = tmp_path / "triplets.csv"
    head.write_text("\n".join(triplets.read_text(encoding="utf-8").splitlines()[:65]) + "\n", encoding="utf-8")
    stage1 = cli(*stage1_args(small_corpus, tmp_path / "stage1", 2, 100, tokenizer))
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    scifact = shared_path("data", "beir", "scifact")
    result = cli(
        "train", "--stage", "2", "--model", str(tmp_path / "stage1" / "final"),
        "--pairs", str(head), str(scifact), "--query-column", "sent0", "--positive-column", "sent1",
        "--negative-columns", "hard_neg", "--num-negatives", "0", "--max-length", "64",
        "--passage-max-length", "64", "--similarity", "cosine", "--temperature", "0.05",
        "--output-dir", str(tmp_path / "stage2"), "--no-evaluate",
        "--set", "training.max_steps=3", "--set", "training.per_device_train_batch_size=8",
        "--set", "training.logging_steps=1", "--set", "training.dataloader_num_workers=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(tmp_path / "stage2")
    assert sorted(log) == [1, 2, 3]
    for record in log.values():
        assert record["contrastive_loss"] > 0 and record["retromae_loss"] > 0
        expected = record["retromae_loss"] + record["contrastive_loss"]
        assert record["loss"] == pytest.approx(expected, rel=1e-4)
    final = tmp_path / "stage2" / "final"
    recipe = yaml.safe_load((final / "recipe.yaml").read_text())
    assert recipe["stage"] == 2 and recipe["similarity"] == "cosine"
    from transformers import AutoModel

    import retromae_hf  # noqa: F401

    assert type(AutoModel.from_pretrained(final)).__name__ == "RetroMAEModel"


def test_multi_stage_recipe_with_output_dir_override(tmp_path):
    """Stage 2's `model: previous` follows the stage-1 folder under an overridden output_dir; logs start fresh."""
    args = ["train", "--recipe", "quickstart", "--output-dir", str(tmp_path / "qs"),
            "--set", "training.max_steps=3", "--set", "training.logging_steps=1", "--no-evaluate"]  # fmt: skip
    result = cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "qs" / "stage1" / "final").is_dir() and (tmp_path / "qs" / "stage2" / "final").is_dir()
    recipe = yaml.safe_load((tmp_path / "qs" / "stage2" / "final" / "recipe.yaml").read_text())
    assert recipe["model"] == str(tmp_path / "qs" / "stage1" / "final")
    rerun = cli(*args, "--stage", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(read_log(tmp_path / "qs" / "stage2")) == [1, 2, 3]  # not appended to the first run's log


@pytest.mark.parametrize("architecture", ["bert", "roberta", "xlm-roberta", "modernbert"])
def test_cli_stage1_from_a_masked_lm_folder_of_each_architecture(architecture, tmp_path, trained_tokenizer):
    """30 steps from a saved tiny *ForMaskedLM: the decoder loss stays finite and goes down (the ModernBERT
    report of a loss stuck at 0/NaN with the official code is exactly what this rules out)."""
    import math

    from encoders_for_tests import ARCHITECTURES, MAX_LENGTH, save_tiny_masked_lm
    from tokenizers_for_tests import project_text

    tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
    checkpoint = save_tiny_masked_lm(architecture, tokenizer, tmp_path / "mlm")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(project_text()) + "\n", encoding="utf-8")
    result = cli(
        "train", "--stage", "1", "--model", str(checkpoint), "--corpus", str(corpus),
        "--max-length", str(MAX_LENGTH), "--output-dir", str(tmp_path / "run"), "--no-evaluate",
        "--set", "training.max_steps=30", "--set", "training.per_device_train_batch_size=8",
        "--set", "training.learning_rate=0.001", "--set", "training.logging_steps=1",
        "--set", "training.save_steps=1000", "--set", "training.dataloader_num_workers=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(tmp_path / "run")
    assert sorted(log) == list(range(1, 31))
    decoder = [log[step]["decoder_loss"] for step in sorted(log)]
    assert all(math.isfinite(value) and value > 0 for value in decoder), decoder
    assert sum(decoder[-5:]) / 5 < sum(decoder[:5]) / 5 - 0.15, decoder  # about 0.3 in practice
    final = tmp_path / "run" / "final"
    saved = json.loads((final / "config.json").read_text())
    assert saved["encoder"]["model_type"] == architecture
    if architecture == "modernbert":
        assert saved["decoder_positions"] == "learned"
        # Stage 2 runs on the result exactly as for BERT.
        stage2 = cli(
            "train", "--stage", "2", "--model", str(final), "--pairs", "python-docstrings",
            "--num-negatives", "0", "--max-length", str(MAX_LENGTH), "--passage-max-length", str(MAX_LENGTH),
            "--output-dir", str(tmp_path / "stage2"), "--no-evaluate",
            "--set", "training.max_steps=3", "--set", "training.per_device_train_batch_size=8",
            "--set", "training.logging_steps=1", "--set", "training.dataloader_num_workers=0",
        )  # fmt: skip
        assert stage2.returncode == 0, stage2.stderr[-3000:]
        for record in read_log(tmp_path / "stage2").values():
            assert math.isfinite(record["loss"]) and record["contrastive_loss"] > 0 and record["retromae_loss"] > 0


def test_cli_names_the_supported_architectures_for_an_unsupported_checkpoint(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4)).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "corpus.txt").write_text("one line of text\n" * 20, encoding="utf-8")
    result = cli(
        "train", "--stage", "1", "--model", str(tmp_path / "gpt2"), "--tokenizer", str(shared_path("models", "all-MiniLM-L6-v2")),
        "--corpus", str(tmp_path / "corpus.txt"), "--output-dir", str(tmp_path / "run"), "--no-evaluate",
    )  # fmt: skip
    assert result.returncode != 0
    assert "gpt2" in result.stderr and "bert, roberta, xlm-roberta, modernbert" in result.stderr
    assert "Traceback" not in result.stderr


def test_any_encoder_recipes_and_streamed_sources_interleave(tmp_path):
    xlmr = build_recipe(read_recipe_file("stage1-xlmr-multilingual")[0])
    assert xlmr.model == "FacebookAI/xlm-roberta-base" and xlmr.streaming and xlmr.max_length == 512
    assert len({source["config"] for source in xlmr.corpus}) == len(xlmr.corpus) >= 5  # one config per language
    modernbert = build_recipe(read_recipe_file("stage1-modernbert")[0])
    assert modernbert.model == "answerdotai/ModernBERT-base"
    assert modernbert.model_config["decoder_positions"] == "learned"
    from retromae_hf.training import load_corpus_texts

    first, second = tmp_path / "en.txt", tmp_path / "de.txt"
    first.write_text("".join(f"english {i}\n" for i in range(5)), encoding="utf-8")
    second.write_text("".join(f"deutsch {i}\n" for i in range(3)), encoding="utf-8")
    recipe = build_recipe({"stage": 1, "corpus": [str(first), str(second)], "streaming": True})
    texts = [row["text"] for row, _ in zip(load_corpus_texts(recipe), range(4), strict=False)]
    assert texts == ["english 0", "deutsch 0", "english 1", "deutsch 1"]


def test_scratch_model_config_names_the_architecture(trained_tokenizer):
    from retromae_hf.training import build_model

    tokenizer = trained_tokenizer("bpe", "bert")
    encoder = {"model_type": "modernbert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
               "intermediate_size": 48, "max_position_embeddings": 64}  # fmt: skip
    recipe = build_recipe(
        {"stage": 1, "model": "scratch", "tokenizer": "t", "corpus": ["x.txt"], "model_config": {"encoder": encoder}}
    )
    model = build_model(recipe, tokenizer)
    config = model.config.encoder
    assert config.model_type == "modernbert" and config.vocab_size == len(tokenizer)
    assert (config.pad_token_id, config.cls_token_id, config.sep_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    )
    assert model.config.decoder_positions == "learned"
    bad = build_recipe({**recipe.to_dict(), "model_config": {"encoder": {"hidden_size": 32}}})
    with pytest.raises(RecipeError, match="model_type"):
        build_model(bad, tokenizer)
