"""Careless input, through the command line and the Python API: a clear paragraph, never a traceback or lost files.

Every case runs in one workspace of small real artefacts (a tiny checkpoint with its tokenizer, a user's folder
with notes, a corpus, a run folder with checkpoints, ...). Each asserts a non-zero exit code (or the named
exception), a message that names the problem, no traceback on stderr, and every file of the workspace
byte-identical afterwards. The command line is driven in-process (`retromae_hf.cli.main`), as the console script
does, so the cases share one import of torch and transformers.
"""

import json
import re

import pytest
import torch
from conftest import project_lines, run_cli, snapshot

from retromae_hf import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining
from retromae_hf.cli import report_error
from retromae_hf.collator import ContrastiveCollator
from retromae_hf.convert import from_official
from retromae_hf.errors import MissingInputError, OutputExistsError, UserError
from retromae_hf.evaluation import evaluate
from retromae_hf.export import export_sentence_transformer, load_sentence_transformer
from retromae_hf.quickstart import run_demo, write_docstring_retrieval_task
from retromae_hf.recipe import RecipeError, build_recipe
from retromae_hf.training import resolve_resume


def tiny_config(vocab_size: int) -> RetroMAEConfig:
    return RetroMAEConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )


def fake_checkpoint(folder, step: int, record: dict | None, max_steps: int = 8, damaged: bool = False) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    if damaged:
        (folder / "model.safetensors").write_bytes(b"\x00\x01 cut short")
    else:
        save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    if record is not None:
        (folder / "retromae_run.json").write_text(json.dumps(record))


def run_record(raw: dict, run_id: str) -> dict:
    recipe = build_recipe(raw)
    return {"run_id": run_id, "recipe_hash": recipe.fingerprint_hash(), "recipe": recipe.fingerprint()}


TRAIN = ["train", "--stage", "1", "--model", "scratch", "--tokenizer", "tok", "--corpus", "corpus.txt"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, wordpiece_tokenizer):
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForMaskedLM

    ws = tmp_path_factory.mktemp("careless-user")
    tokenizer = wordpiece_tokenizer
    tokenizer.save_pretrained(ws / "tok")
    torch.manual_seed(0)
    RetroMAEForPreTraining(tiny_config(len(tokenizer))).save_pretrained(ws / "ckpt")
    tokenizer.save_pretrained(ws / "ckpt")
    RetroMAEForPreTraining(tiny_config(64)).save_pretrained(ws / "small-vocab")
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(ws / "bert")

    (ws / "out" / "data").mkdir(parents=True)  # a user's own folder, which nothing may touch
    (ws / "out" / "notes.txt").write_text("my notes\n")
    (ws / "out" / "data" / "table.csv").write_text("a,b\n1,2\n")
    (ws / "corpus.txt").write_text("\n".join(project_lines(40)) + "\n")
    (ws / "empty.txt").write_text("")
    (ws / "garbage.safetensors").write_bytes(b"this is not a safetensors file")
    (ws / "bad.json").write_text("{")
    (ws / "bad.yaml").write_text("stage: [1\n")
    (ws / "typo.yaml").write_text("stage: 1\nmax_lenght: 64\n")
    (ws / "scores.tsv").write_text("sentence1\tsentence2\tscore\na cat\ta dog\thigh\n")
    beir = ws / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "a passage"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")

    official = ws / "official"  # an encoder-only BertForMaskedLM checkpoint, as `convert` reads it
    bert_config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    masked_lm = BertForMaskedLM(bert_config)
    official.mkdir()
    state = {key: tensor.contiguous().clone() for key, tensor in masked_lm.state_dict().items()}
    state.pop("cls.predictions.decoder.weight")  # tied to the word embeddings: stored once
    save_file(state, str(official / "model.safetensors"))
    bert_config.save_pretrained(official)

    # A run folder: checkpoint-2 of this run (trained with max_length 64), checkpoint-4 damaged.
    base = {"stage": 1, "model": "scratch", "tokenizer": "tok", "corpus": ["corpus.txt"], "output_dir": "run"}
    record = run_record({**base, "max_length": 64}, "this-run")
    (ws / "run").mkdir()
    (ws / "run" / "retromae_run.json").write_text(json.dumps(record))
    fake_checkpoint(ws / "run" / "checkpoint-2", 2, record)
    fake_checkpoint(ws / "run" / "checkpoint-4", 4, record, damaged=True)
    (ws / "run" / "training_log.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    # A run that reached its last step.
    done = run_record({**base, "output_dir": "done"}, "done-run")
    (ws / "done").mkdir()
    (ws / "done" / "retromae_run.json").write_text(json.dumps(done))
    fake_checkpoint(ws / "done" / "checkpoint-8", 8, done, max_steps=8)
    return ws


# fmt: off
CLI_CASES = [
    # Writing: never replace what the command did not make, never write into its own input.
    ("export-into-a-users-folder", ["export", "ckpt", "out"], r"export folder out already exists.*--overwrite"),
    ("export-onto-its-input", ["export", "ckpt", "ckpt"], r"ckpt is the input ckpt: writing there would change"),
    ("export-inside-its-input", ["export", "ckpt", "ckpt/st"], r"ckpt/st is inside the input ckpt"),
    ("export-overwrite-deletes-input", ["export", "ckpt", ".", "--overwrite"], r"holds the input ckpt: replacing"),
    ("export-mistyped-path", ["export", "runs/base/fnial", "st"], r"'runs/base/fnial': no such file or folder"),
    ("export-not-retromae", ["export", "bert", "st"], r"'bert' model, not a RetroMAE checkpoint.*convert"),
    ("export-folder-without-model", ["export", "out", "st"], r"out has no config\.json"),
    ("export-bad-length", ["export", "ckpt", "st", "--max-seq-length", "0"], r"--max-seq-length: expected a whole"),
    ("export-foreign-tokenizer", ["export", "small-vocab", "st", "--tokenizer", "tok"], r"\d+ tokens but the model only 64"),
    ("convert-into-a-users-folder", ["convert", "official", "out"], r"output folder out already exists"),
    ("convert-onto-its-source", ["convert", "official", "official"], r"official is the input official"),
    ("convert-not-safetensors", ["convert", "garbage.safetensors", "conv", "--bert-config", "official/config.json"],
     r"garbage\.safetensors cannot be read as a safetensors state dict"),
    ("convert-bad-config", ["convert", "official/model.safetensors", "conv", "--bert-config", "bad.json"],
     r"bad\.json: not a JSON config file"),
    ("convert-missing-source", ["convert", "nothing.safetensors", "conv"], r"no checkpoint at nothing\.safetensors"),
    ("demo-into-a-users-folder", ["demo", "--output-dir", "out", "--steps", "1"], r"output folder out already exists"),
    ("demo-negative-steps", ["demo", "--steps", "-5"], r"--steps: expected a whole number >= 1, got -5"),
    ("evaluate-into-a-users-folder", ["evaluate", "ckpt", "--tasks", "beir", "--output-dir", "out"], r"out already exists"),
    ("evaluate-inside-the-model", ["evaluate", "ckpt", "--tasks", "beir", "--output-dir", "ckpt/ev"], r"inside the input ckpt"),
    # Training: run folders and resuming.
    ("train-into-a-used-run-folder", [*TRAIN, "--output-dir", "run"], r"run already holds a training run.*--resume.*--overwrite-output-dir"),
    ("train-inside-the-model", ["train", "--stage", "1", "--model", "ckpt", "--corpus", "corpus.txt", "--output-dir", "ckpt/run"],
     r"ckpt/run is inside the input ckpt"),
    ("train-overwrite-deletes-model", ["train", "--stage", "1", "--model", "run/checkpoint-2", "--corpus", "corpus.txt",
     "--output-dir", "run", "--overwrite-output-dir"], r"would delete run/checkpoint-2"),
    ("resume-without-checkpoints", [*TRAIN, "--output-dir", "fresh", "--resume"], r"no checkpoint-\* folder in fresh, so there is nothing to resume"),
    ("resume-damaged-checkpoint", [*TRAIN, "--max-length", "64", "--output-dir", "run", "--resume", "run/checkpoint-4"],
     r"checkpoint-4: this checkpoint is damaged.*newest intact checkpoint there is run/checkpoint-2"),
    ("resume-another-recipe", [*TRAIN, "--output-dir", "run", "--resume"], r"trained with another recipe \(max_length: 64 -> 512"),
    ("resume-a-finished-run", [*TRAIN, "--output-dir", "done", "--resume"], r"already finished \(8 of 8 steps\)"),
    # Recipes and flags.
    ("set-value-of-wrong-type", [*TRAIN, "--output-dir", "new", "--set", "training.learning_rate=fast"],
     r"training\.learning_rate must be float, got 'fast'"),
    ("set-unknown-training-field", [*TRAIN, "--output-dir", "new", "--set", "training.learnig_rate=5e-5"],
     r"did you mean training\.learning_rate"),
    ("set-without-a-value", [*TRAIN, "--set", "training.learning_rate"], r"--set expects KEY=VALUE"),
    ("model-config-yaml-typo", [*TRAIN, "--output-dir", "new", "--set", "model_config={hidden_size:32}"],
     r"unknown RetroMAEConfig field 'hidden_size:32'.*space after its colon"),
    ("recipe-not-found", ["train", "--recipe", "no-such-recipe"], r"no recipe file 'no-such-recipe'.*quickstart"),
    ("recipe-not-yaml", ["train", "--recipe", "bad.yaml"], r"bad\.yaml: not valid YAML"),
    ("recipe-misspelt-key", ["train", "--recipe", "typo.yaml"], r"max_lenght \(did you mean max_length\?\)"),
    ("mask-ratio-out-of-range", [*TRAIN, "--encoder-mask-ratio", "1.5"], r"encoder_mask_ratio \(--encoder-mask-ratio\) must be between 0 and 1"),
    ("max-length-too-short", [*TRAIN, "--max-length", "2"], r"max_length \(--max-length\) must be at least 3"),
    ("similarity-not-a-choice", [*TRAIN, "--similarity", "euclid"], r"--similarity: invalid choice: 'euclid'"),
    ("stage-not-a-choice", ["train", "--stage", "3"], r"--stage: invalid choice: 3"),
    ("max-steps-zero", [*TRAIN, "--max-steps", "0"], r"--max-steps: expected a whole number >= 1, got 0"),
    ("stage2-without-pairs", ["train", "--stage", "2", "--model", "ckpt"], r"stage 2 needs `pairs` \(--pairs"),
    ("scratch-without-tokenizer", ["train", "--stage", "1", "--model", "scratch", "--corpus", "corpus.txt"], r"model 'scratch' needs a tokenizer"),
    ("tokenizer-train-for-a-trained-model", ["train", "--stage", "1", "--model", "ckpt", "--tokenizer", "train", "--corpus", "corpus.txt"],
     r"tokenizer 'train' makes a new vocabulary"),
    # Data and models that are not there.
    ("corpus-file-missing", [*TRAIN[:-1], "missing.txt", "--output-dir", "new"], r"missing\.txt: no such file"),
    ("corpus-file-empty", [*TRAIN[:-1], "empty.txt", "--output-dir", "new"], r"empty\.txt: no examples"),
    ("tokenizer-needs-the-hub", [*TRAIN[:6], "bert-base-uncased", *TRAIN[7:], "--output-dir", "new"],
     r"tokenizer 'bert-base-uncased' \(--tokenizer\) is not a local folder.*hf download bert-base-uncased"),
    ("corpus-needs-the-hub", [*TRAIN[:-1], "wikipedia", "--output-dir", "new"],
     r"dataset 'wikipedia' is not a local folder.*--repo-type dataset"),
    ("tokenizer-larger-than-model", ["train", "--stage", "1", "--model", "small-vocab", "--tokenizer", "tok", "--corpus",
     "corpus.txt", "--output-dir", "new"], r"has \d+ tokens but the model \(small-vocab\) has only 64 embeddings"),
    ("evaluate-missing-task", ["evaluate", "ckpt", "--tasks", "data/nowhere", "--output-dir", "ev"], r"data/nowhere: no such file or folder"),
    ("evaluate-bad-sts-score", ["evaluate", "ckpt", "--tasks", "scores.tsv", "--output-dir", "ev"], r"scores\.tsv, line 2: score 'high' is not a number"),
    ("evaluate-mteb-task-offline", ["evaluate", "ckpt", "--tasks", "SciFact", "--output-dir", "ev"],
     r"MTEB task\(s\) SciFact load their data from the Hugging Face Hub"),
    ("evaluate-longembed-offline", ["evaluate", "ckpt", "--tasks", "LEMBPasskeyRetrieval", "--output-dir", "ev"],
     r"MTEB task\(s\) LEMBPasskeyRetrieval load their data from the Hugging Face Hub.*make-long-eval"),
    ("make-long-eval-too-short", ["make-long-eval", "--tokenizer", "tok", "--lengths", "32", "512", "--output-dir", "new"],
     r"lengths \[32\] \(--lengths\) are too short"),
    ("make-long-eval-over-a-users-folder", ["make-long-eval", "--tokenizer", "tok", "--output-dir", "out"],
     r"long-document set \(--output-dir\) out already exists"),
    ("make-long-eval-text-missing", ["make-long-eval", "--tokenizer", "tok", "--text", "book.txt", "--output-dir", "new"],
     r"no text file at book\.txt \(--text\)"),
    ("convert-max-positions-not-longer", ["convert", "ckpt", "new", "--max-positions", "16"],
     r"already takes 32 tokens.*--max-positions 16 would not lengthen it"),
    ("pull-offline", ["pull", "some-org/some-model"], r"repository 'some-org/some-model' is not a local folder.*hf download"),
    ("push-a-folder-that-is-no-model", ["push", "out", "some-org/some-model"], r"out is neither a RetroMAE checkpoint nor a sentence-transformers export"),
    ("unknown-command", ["frobnicate"], r"invalid choice: 'frobnicate'"),
]
# fmt: on


@pytest.mark.parametrize(("argv", "message"), [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_command_line_mistakes(workspace, monkeypatch, capfd, argv, message):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code, err = run_cli(argv, capfd)
    assert code == 2, err
    assert re.search(message, err, re.DOTALL), err
    assert "Traceback" not in err
    assert snapshot(workspace) == before  # nothing written, replaced or deleted


# fmt: off
API_CASES = [
    ("collator-max-length-none", lambda ws, tok: RetroMAECollator(tok, max_length=None), ValueError,
     r"max_length must be a whole number.*got None"),
    ("collator-ratio-zero", lambda ws, tok: RetroMAECollator(tok, encoder_mask_ratio=0), ValueError, r"encoder_mask_ratio"),
    ("contrastive-negative-count", lambda ws, tok: ContrastiveCollator(tok, num_negatives=-1), ValueError, r"num_negatives"),
    ("recipe-learning-rate-text", lambda ws, tok: build_recipe({"corpus": ["c.txt"], "training": {"learning_rate": "abc"}}),
     RecipeError, r"training\.learning_rate must be float, got 'abc'"),
    ("export-onto-its-input", lambda ws, tok: export_sentence_transformer(ws / "ckpt", ws / "ckpt"),
     OutputExistsError, r"is the input"),
    ("from-official-garbage", lambda ws, tok: from_official(
        ws / "garbage.safetensors", ws / "official" / "config.json"), UserError, r"cannot be read as a safetensors"),
    ("demo-zero-steps", lambda ws, tok: run_demo(ws / "d", steps=0),
     ValueError, r"steps must be a positive whole number"),
    ("evaluate-into-a-users-folder", lambda ws, tok: evaluate(
        ws / "ckpt", [ws / "beir"], output_dir=ws / "out"), OutputExistsError, r"already exists"),
    ("load-missing-model", lambda ws, tok: load_sentence_transformer("./nowhere"),
     MissingInputError, r"no such file or folder"),
    ("task-folder-over-a-users-folder", lambda ws, tok: write_docstring_retrieval_task(ws / "out"), OutputExistsError, r"task folder .*out already exists"),
    ("resume-path-damaged", lambda ws, tok: resolve_resume(
        str(ws / "run" / "checkpoint-4"), str(ws / "run")), RecipeError, r"newest intact checkpoint"),
]
# fmt: on


@pytest.mark.parametrize(("call", "error", "message"), [case[1:] for case in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_mistakes(workspace, wordpiece_tokenizer, monkeypatch, capfd, call, error, message):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    with pytest.raises(error, match=message) as raised:
        call(workspace, wordpiece_tokenizer)
    assert isinstance(raised.value, UserError | ValueError)  # what the command line turns into one paragraph
    assert "Traceback" not in capfd.readouterr().err
    assert snapshot(workspace) == before


def test_there_are_at_least_thirty_kinds_of_mistake():
    assert len(CLI_CASES) + len(API_CASES) >= 30
    assert len({case[0] for case in CLI_CASES}) == len(CLI_CASES)


def test_debug_adds_the_traceback(workspace, monkeypatch, capfd):
    monkeypatch.chdir(workspace)
    code, err = run_cli(["export", "ckpt", "out", "--debug"], capfd)
    assert code == 2 and "Traceback" in err and "out already exists" in err.splitlines()[-1]


def test_a_bug_is_reported_as_one(capsys):
    assert report_error(RuntimeError("something inside broke"), debug=False) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: something inside broke" in err and "--debug" in err and "Traceback" not in err
    assert report_error(KeyboardInterrupt(), debug=False) == 130


def test_push_without_credentials_says_how_to_log_in(workspace, monkeypatch, tmp_path):
    """A 401 from the Hub names HF_TOKEN and `hf auth login`, and leaves the folder untouched."""
    from hub_server import FakeHub
    from huggingface_hub import constants

    from retromae_hf.hub import HubPushError, push_to_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    before = snapshot(workspace / "ckpt")
    with FakeHub(token="the-only-good-token") as hub, pytest.raises(HubPushError) as raised:
        push_to_hub(workspace / "ckpt", "someone/tiny", endpoint=hub.url)
    assert "HF_TOKEN" in str(raised.value) and "hf auth login" in str(raised.value)
    assert snapshot(workspace / "ckpt") == before
