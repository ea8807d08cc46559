"""Training: recipes, both stages from the command line, exact and safe resume, run folders, clear errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, project_lines, snapshot

from retromae_hf.errors import OutputExistsError
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
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(project_lines(120)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(wordpiece_tokenizer) -> Path:
    return Path(wordpiece_tokenizer.name_or_path)


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


def test_missing_file_and_column_fail_before_training(tmp_path, tokenizer_dir):
    bert = str(tokenizer_dir)
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


def test_resume_after_a_kill_continues_exactly(tmp_path, small_corpus, tokenizer_dir):
    tokenizer = tokenizer_dir
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
    # The MLM decoder weight is tied to the word embeddings and not stored: nothing to warn about on a resume.
    assert "missing keys" not in resumed.stderr
    assert f"resuming from {killed_dir / 'checkpoint-4'}" in resumed.stderr
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


def write_triplets_and_beir(folder: Path) -> tuple[Path, Path]:
    """NLI-style triplets (sent0, sent1, hard_neg) and a BEIR folder with training qrels, from the project's text."""
    import csv

    lines = project_lines(200)
    triplets = folder / "triplets.csv"
    with triplets.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1", "hard_neg"])
        for i in range(64):
            writer.writerow([lines[i], lines[i + 1], lines[(i + 100) % len(lines)]])
    beir = folder / "beir" / "scifact"
    (beir / "qrels").mkdir(parents=True)
    with (beir / "corpus.jsonl").open("w", encoding="utf-8") as corpus, (beir / "queries.jsonl").open("w") as queries:
        for i in range(16):
            corpus.write(json.dumps({"_id": f"d{i}", "title": "", "text": lines[2 * i + 1]}) + "\n")
            queries.write(json.dumps({"_id": f"q{i}", "text": lines[2 * i]}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(16)]
    (beir / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return triplets, beir


def test_stage2_on_triplets_and_beir_pairs(tmp_path, small_corpus, tokenizer_dir):
    head, scifact = write_triplets_and_beir(tmp_path)
    stage1 = cli(*stage1_args(small_corpus, tmp_path / "stage1", 2, 100, tokenizer_dir))
    assert stage1.returncode == 0, stage1.stderr[-3000:]
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
    before = snapshot(tmp_path / "qs")
    refused = cli(*args, "--stage", "2")  # a fresh run into a folder that holds a run: refused, nothing touched
    assert refused.returncode == 2 and "--overwrite-output-dir" in refused.stderr and "--resume" in refused.stderr
    assert "Traceback" not in refused.stderr and snapshot(tmp_path / "qs") == before
    rerun = cli(*args, "--stage", "2", "--overwrite-output-dir")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(read_log(tmp_path / "qs" / "stage2")) == [1, 2, 3]  # not appended to the first run's log
    stage1_files = {name: digest for name, digest in snapshot(tmp_path / "qs").items() if name.startswith("stage1/")}
    assert stage1_files == {name: digest for name, digest in before.items() if name.startswith("stage1/")}


# --------------------------------------------------------------------------------------------------- cheap checks
def test_yaml_and_set_values_get_their_field_types(tmp_path):
    """`5e-5` (no dot) is a string to YAML; it must reach AdamW as a float, from a file and from --set alike."""
    from retromae_hf.recipe import parse_override
    from retromae_hf.training import training_arguments

    path = tmp_path / "recipe.yaml"
    path.write_text("stage: 1\ncorpus: [c.txt]\nmax_length: '64'\ntraining: {learning_rate: 5e-5, bf16: 'false'}\n")
    raw, _ = read_recipe_file(path)
    assert raw["training"]["learning_rate"] == "5e-5"  # what YAML gives
    recipe = build_recipe(raw, {".".join(parse_override("training.warmup_steps=1e-1")[0]): "1e-1"})
    assert recipe.max_length == 64 and recipe.training == {"learning_rate": 5e-5, "bf16": False, "warmup_steps": 0.1}
    assert training_arguments(recipe, str(tmp_path / "out")).learning_rate == 5e-5
    with pytest.raises(RecipeError, match=r"command line: training\.learning_rate must be float, got 'fast'"):
        build_recipe(raw, {"training.learning_rate": "fast"})
    with pytest.raises(RecipeError, match=r"training\.learnig_rate \(did you mean training\.learning_rate\?\)"):
        build_recipe(raw, {"training.learnig_rate": 1e-4})
    with pytest.raises(RecipeError, match=r"packing must be bool, got 'sometimes'"):
        build_recipe(raw, {"packing": "sometimes"})


def test_lengths_set_beyond_the_model_are_refused_and_defaults_adapted(caplog):
    """A length the user set beyond the model's positions is refused, naming the flag and the limit (cutting it
    would train on something else than asked); one left at its default is cut to the model's with an info line."""
    from retromae_hf.training import effective_lengths

    stage2 = build_recipe({"stage": 2, "pairs": ["p.csv"], "max_length": 60, "passage_max_length": 512})
    with pytest.raises(RecipeError, match=r"passage_max_length 512 \(--passage-max-length\) is longer than the "
                       r"model's 64 positions.*docs/encoders\.md"):  # fmt: skip
        effective_lengths(stage2, positions=64)
    stage1 = build_recipe({"stage": 1, "corpus": ["c.txt"]})  # max_length left at its default, 512
    with caplog.at_level("INFO", logger="retromae_hf.training"):
        assert effective_lengths(stage1, positions=64) == {"max_length": 64}
    assert any("the default 512 is longer than the model's 64 positions" in message for message in caplog.messages)


def test_cheap_checks_run_before_anything_is_loaded(tmp_path, monkeypatch):
    """A bad ratio or a used output folder is refused before the tokenizer, the model config or the data load."""
    from retromae_hf import training
    from retromae_hf.recipe import Recipe
    from retromae_hf.training import train

    def must_not_run(*args, **kwargs):
        raise AssertionError("loaded something before the cheap checks")

    for name in ("load_tokenizer", "read_model_config", "load_corpus_texts", "build_model"):
        monkeypatch.setattr(training, name, must_not_run)
    bad_ratio = Recipe(stage=1, corpus=["c.txt"], model="scratch", tokenizer="t", encoder_mask_ratio=1.5)
    with pytest.raises(RecipeError, match="encoder_mask_ratio"):
        train(bad_ratio)
    used = tmp_path / "run"
    (used / "checkpoint-2").mkdir(parents=True)
    (used / "retromae_run.json").write_text(json.dumps({"run_id": "earlier"}))  # a run train made
    recipe = build_recipe(
        {"stage": 1, "corpus": ["c.txt"], "model": "scratch", "tokenizer": "t", "output_dir": str(used)}
    )
    with pytest.raises(OutputExistsError, match="already holds a training run"):
        train(recipe)
    with pytest.raises(RecipeError, match=r"nothing to resume|no usable checkpoint|damaged"):
        train(recipe, resume=True)


def fake_checkpoint(folder: Path, step: int, record: dict | None, max_steps: int = 8) -> Path:
    """The files `checkpoint_problem` looks at, with a tiny but readable safetensors file."""
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    import torch

    save_file({"w": torch.zeros(1)}, str(path / "model.safetensors"))
    if record is not None:
        (path / "retromae_run.json").write_text(json.dumps(record))
    return path


def test_resume_picks_only_this_run_and_this_recipe(tmp_path):
    from retromae_hf.training import RUN_RECORD, new_run_record, resolve_resume

    base = {"stage": 1, "corpus": ["c.txt"], "model": "scratch", "tokenizer": "t", "output_dir": str(tmp_path)}
    recipe = build_recipe(base)
    current, earlier = new_run_record(recipe), new_run_record(recipe)
    (tmp_path / RUN_RECORD).write_text(json.dumps(current))
    fake_checkpoint(tmp_path, 2, current)
    fake_checkpoint(tmp_path, 4, earlier)  # left by an earlier run: must never be continued
    assert resolve_resume(True, str(tmp_path), recipe) == str(tmp_path / "checkpoint-2")
    other = build_recipe({**base, "max_length": 128, "training": {"learning_rate": 3e-5}})
    with pytest.raises(RecipeError) as refused:
        resolve_resume(True, str(tmp_path), other)
    message = str(refused.value)
    assert "max_length: 512 -> 128" in message and "training.learning_rate: (not set) -> 3e-05" in message
    # Where to write and how often to log may change on a resume.
    relaxed = build_recipe({**base, "training": {"logging_steps": 1, "save_steps": 7}})
    assert resolve_resume(True, str(tmp_path), relaxed) == str(tmp_path / "checkpoint-2")


def test_damaged_checkpoint_names_the_newest_intact_one(tmp_path):
    from retromae_hf.training import resolve_resume

    fake_checkpoint(tmp_path, 3, None)
    damaged = fake_checkpoint(tmp_path, 6, None)
    (damaged / "model.safetensors").write_bytes(b"\x00\x01 truncated")
    with pytest.raises(RecipeError, match=r"damaged.*newest intact checkpoint there is .*checkpoint-3"):
        resolve_resume(str(damaged), str(tmp_path))
    assert resolve_resume(True, str(tmp_path)) == str(tmp_path / "checkpoint-3")  # skipped with a warning
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{not json")
    with pytest.raises(RecipeError, match="no usable checkpoint"):
        resolve_resume(True, str(tmp_path))


def test_a_finished_run_is_not_resumed_past_its_end(tmp_path):
    from retromae_hf.training import _check_not_finished

    done = fake_checkpoint(tmp_path, 8, None, max_steps=8)
    with pytest.raises(RecipeError, match=r"already finished \(8 of 8 steps\)"):
        _check_not_finished(done, tmp_path)
    _check_not_finished(fake_checkpoint(tmp_path, 4, None, max_steps=8), tmp_path)  # halfway: fine


def test_overwrite_output_dir_deletes_only_what_train_made(tmp_path):
    from retromae_hf.training import prepare_output_dir

    run = tmp_path / "run"
    for name in ("checkpoint-2", "final", "evaluation"):
        (run / name).mkdir(parents=True)
        (run / name / "x.bin").write_text("x")
    (run / "training_log.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("mine")
    recipe = build_recipe({"stage": 1, "corpus": ["c.txt"], "output_dir": str(run)})
    # Without train's run record the folder is the user's, whatever its files are called: nothing is deleted.
    before = snapshot(run)
    with pytest.raises(OutputExistsError, match=r"holds files that retromae-hf train did not write.*no run record"):
        prepare_output_dir(recipe, resume=None, overwrite=True)
    assert snapshot(run) == before
    (run / "retromae_run.json").write_text(json.dumps({"run_id": "earlier"}))
    prepare_output_dir(recipe, resume=None, overwrite=True)
    assert sorted(path.name for path in run.iterdir()) == ["notes.txt"]
    # A model inside the folder would be deleted by the clean-up: refused instead.
    (run / "retromae_run.json").write_text(json.dumps({"run_id": "next"}))
    (run / "final").mkdir()
    (run / "final" / "config.json").write_text("{}")
    uses_it = build_recipe({"stage": 1, "corpus": ["c.txt"], "model": str(run / "final"), "output_dir": str(run)})
    with pytest.raises(OutputExistsError, match="would delete that input"):
        prepare_output_dir(uses_it, resume=None, overwrite=True)
    assert (run / "final" / "config.json").is_file()


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


def test_cli_names_the_supported_architectures_for_an_unsupported_checkpoint(tmp_path, tokenizer_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4)).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "corpus.txt").write_text("one line of text\n" * 20, encoding="utf-8")
    result = cli(
        "train", "--stage", "1", "--model", str(tmp_path / "gpt2"), "--tokenizer", str(tokenizer_dir),
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


def test_model_config_keys_are_checked_against_what_the_config_accepts():
    """The BERT shorthand of the scratch recipes and `encoder:` pass; an unknown key, at the top or inside
    `encoder`, is refused with the closest known one, before anything is built."""
    from retromae_hf.training import read_model_config

    base = {"stage": 1, "corpus": ["c.txt"], "model": "scratch", "tokenizer": "t"}
    shape = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    shorthand = read_model_config(build_recipe({**base, "model_config": {**shape, "max_position_embeddings": 64}}))
    assert shorthand.encoder.model_type == "bert" and shorthand.hidden_size == 32
    named = {"encoder": {"model_type": "modernbert", **shape}, "decoder_positions": "learned"}
    assert read_model_config(build_recipe({**base, "model_config": named})).encoder.model_type == "modernbert"
    refused = [
        ({"hiden_size": 32}, r"unknown RetroMAEConfig field 'hiden_size' \(did you mean hidden_size\?\)"),
        ({"encoder": {"model_type": "modernbert", "hiden_size": 32}}, r"no field 'hiden_size' \(did you mean hidden_size"),
        ({"encoder": {"model_type": "modernbrt"}}, r"no architecture 'modernbrt' \(did you mean modernbert\?\)"),
        ({"encoder": {"hidden_size": 32}}, "model_type"),
        ({"hidden_size": 32, "encoder": {"model_type": "bert"}}, "put them inside `encoder`"),
        ({"encoder": {"model_type": "gpt2"}}, "bert, roberta, xlm-roberta, modernbert"),
        ({"query_stream": "nowhere"}, "query_stream must be one of"),
    ]  # fmt: skip
    for model_config, message in refused:
        with pytest.raises(RecipeError, match=message):
            read_model_config(build_recipe({**base, "model_config": model_config}))


@pytest.mark.parametrize("architecture", ["bert", "roberta", "xlm-roberta", "modernbert"])
def test_length_limit_read_up_front_is_the_models_own(architecture, tmp_path, trained_tokenizer, caplog):
    """The limit checked before loading equals the built model's `max_sequence_length()`: for RoBERTa and XLM-R
    their position table less the padding offset, not `max_position_embeddings`."""
    from encoders_for_tests import ARCHITECTURES, MAX_LENGTH, save_tiny_masked_lm

    from retromae_hf import RetroMAEForPreTraining
    from retromae_hf.training import _model_limits, effective_lengths, read_model_config

    tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
    checkpoint = save_tiny_masked_lm(architecture, tokenizer, tmp_path / "mlm")
    recipe = build_recipe({"stage": 1, "corpus": ["c.txt"], "model": str(checkpoint), "max_length": 100})
    positions, vocab_size = _model_limits(read_model_config(recipe))
    model = RetroMAEForPreTraining.from_masked_lm(checkpoint)
    assert positions == model.max_sequence_length() == MAX_LENGTH and vocab_size == len(tokenizer)
    with pytest.raises(RecipeError, match=rf"max_length 100 \(--max-length\) is longer than the model's {MAX_LENGTH} "):
        effective_lengths(recipe, positions)
    fitting = build_recipe({"stage": 1, "corpus": ["c.txt"], "model": str(checkpoint), "max_length": MAX_LENGTH})
    assert effective_lengths(fitting, positions) == {"max_length": MAX_LENGTH}


def stage2_scratch_args(pairs: Path, output_dir: Path, tokenizer: Path, *extra: str) -> list[str]:
    """A tiny stage-2 run from scratch: 3 steps of 8 queries, one hard negative each."""
    return [
        "train", "--stage", "2", "--model", "scratch", "--tokenizer", str(tokenizer), "--pairs", str(pairs),
        "--max-length", "64", "--passage-max-length", "64", "--query-max-length", "32", "--num-negatives", "1",
        "--output-dir", str(output_dir), "--no-evaluate", "--set", TINY_MODEL,
        "--set", "training.max_steps=3", "--set", "training.per_device_train_batch_size=8",
        "--set", "training.logging_steps=1", "--set", "training.dataloader_num_workers=0", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("layout", ["dpr", "tevatron"])
def test_stage2_trains_on_dpr_and_tevatron_files(layout, tmp_path, tokenizer_dir):
    from test_data import dpr_rows, tevatron_rows, write_dpr, write_tevatron

    if layout == "dpr":
        pairs = write_dpr(tmp_path / "biencoder-nq-train.json.gz", dpr_rows(16))
        extra = ["--negative-kind", "both", "--max-negatives", "2"]
    else:
        pairs = write_tevatron(tmp_path / "train.jsonl", tevatron_rows(16))
        extra = []
    result = cli(*stage2_scratch_args(pairs, tmp_path / "stage2", tokenizer_dir, *extra))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{'DPR' if layout == 'dpr' else 'Tevatron'} training rows" in result.stderr
    log = read_log(tmp_path / "stage2")
    assert sorted(log) == [1, 2, 3]
    for record in log.values():
        assert record["contrastive_loss"] > 0 and record["retromae_loss"] > 0
    recipe = yaml.safe_load((tmp_path / "stage2" / "final" / "recipe.yaml").read_text())
    assert recipe["negative_kind"] == ("both" if layout == "dpr" else "hard")


def test_a_broken_dpr_record_stops_training_before_it_starts(tmp_path, tokenizer_dir):
    from test_data import dpr_rows, write_dpr

    rows = dpr_rows(16)
    rows[9]["hard_negative_ctxs"] = {"title": "a mapping, not a list"}
    pairs = write_dpr(tmp_path / "nq.json", rows)
    result = cli(*stage2_scratch_args(pairs, tmp_path / "stage2", tokenizer_dir))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "nq.json, record 10: 'hard_negative_ctxs' holds a dict, expected a list of passages" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "stage2" / "checkpoint-1").exists()
