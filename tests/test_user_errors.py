"""Careless input, through the command line and the Python API: a clear paragraph, never a traceback or lost files.

Every case runs in one workspace of small real artefacts (a tiny checkpoint with its tokenizer, a user's folder
with notes, a corpus, a run folder with checkpoints, ...). Each asserts a non-zero exit code (or the named
exception), a message that names the problem, no traceback on stderr, and every file of the workspace
byte-identical afterwards. The command line is driven in-process (`retromae_hf.cli.main`), as the console script
does, so the cases share one import of torch and transformers.
"""

import gzip
import json
import re
from pathlib import Path

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


def project_words(count: int) -> list[str]:
    words = dict.fromkeys(word.lower() for line in project_lines() for word in re.findall(r"[A-Za-z]+", line))
    return list(words)[:count]


def save_word_level_tokenizer(folder, words: list[str], mask: bool) -> None:
    """A fast word-level tokenizer with [CLS]/[SEP]/[PAD]/[UNK] (and [MASK] if `mask`) and the given words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + (["[MASK]"] if mask else [])
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"mask_token": "[MASK]"} if mask else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", **extra
    )
    tokenizer.save_pretrained(folder)


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
    # Round two (issue 17): the user's own files that careless commands must not touch, and inputs that used to
    # train silently on garbage.
    (ws / "ev-old").mkdir()  # an earlier `evaluate` output (its marker), which export must not replace
    (ws / "ev-old" / ".retromae-output.json").write_text(json.dumps({"command": "evaluate"}))
    (ws / "ev-old" / "summary.json").write_text("{}")
    (ws / "mixed.jsonl").write_text(
        json.dumps({"title": "no text here"}) + "\n" + "".join(json.dumps({"text": line}) + "\n" for line in project_lines(5))
    )
    (ws / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (ws / "cut-model").mkdir()
    for name in ("config.json",):
        (ws / "cut-model" / name).write_bytes((ws / "ckpt" / name).read_bytes())
    weights = (ws / "ckpt" / "model.safetensors").read_bytes()
    (ws / "cut-model" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    tokenizer.save_pretrained(ws / "cut-model")
    save_word_level_tokenizer(ws / "tiny-tok", ["the", "a"], mask=True)
    save_word_level_tokenizer(ws / "nomask-tok", project_words(300), mask=False)
    # A run killed during its first checkpoint save: a run record, a log, a half-written staging folder.
    (ws / "half-run" / ".staging" / "checkpoint-10").mkdir(parents=True)
    (ws / "half-run" / ".staging" / "checkpoint-10" / "optimizer.pt").write_bytes(b"cut")
    (ws / "half-run" / "retromae_run.json").write_text(json.dumps(run_record(base, "half-run")))
    (ws / "half-run" / "training_log.jsonl").write_text('{"step": 5, "loss": 8.0}\n')
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
    ("max-steps-zero", [*TRAIN, "--max-steps", "0"], r"--max-steps: expected a whole number of steps >= 1, or -1 to train num_train_epochs epochs; got 0"),
    ("max-steps-negative", [*TRAIN, "--max-steps", "-5"], r"--max-steps: expected a whole number of steps >= 1, or -1.*got -5"),
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
    ("pull-offline", ["pull", "some-org/some-model"],
     r"repository 'some-org/some-model' is not a local folder.*(?<!local folder instead).*needs no pull"),
    ("push-a-folder-that-is-no-model", ["push", "out", "some-org/some-model"], r"out is neither a RetroMAE checkpoint nor a sentence-transformers export"),
    ("unknown-command", ["frobnicate"], r"invalid choice: 'frobnicate'"),
    # Round two (issue 17). --overwrite replaces only the same command's earlier output.
    ("export-overwrite-a-users-file", ["export", "ckpt", "corpus.txt", "--overwrite"],
     r"corpus\.txt is a file, not an earlier output folder\. --overwrite replaces only an earlier output of `retromae-hf export`"),
    ("evaluate-overwrite-a-training-run", ["evaluate", "ckpt", "--tasks", "beir", "--output-dir", "run", "--overwrite"],
     r"run holds a training run.*replaces only an earlier output of `retromae-hf evaluate`"),
    ("export-overwrite-a-model", ["export", "ckpt", "small-vocab", "--overwrite"], r"small-vocab holds a model \(config\.json"),
    ("export-overwrite-a-users-folder", ["export", "ckpt", "out", "--overwrite"], r"out holds files that this command did not write"),
    ("export-overwrite-an-evaluation", ["export", "ckpt", "ev-old", "--overwrite"],
     r"ev-old was written by `retromae-hf evaluate`, not by `retromae-hf export`"),
    ("convert-overwrite-a-training-run", ["convert", "official", "run", "--overwrite"], r"run holds a training run"),
    # Values refused by name before anything loads.
    ("set-negative-max-steps", [*TRAIN, "--output-dir", "new", "--set", "training.max_steps=-5"],
     r"training\.max_steps \(--set training\.max_steps=VALUE, --max-steps\) must be a positive number of optimizer steps, or -1"),
    ("set-zero-batch-size", [*TRAIN, "--output-dir", "new", "--set", "training.per_device_train_batch_size=0"],
     r"training\.per_device_train_batch_size .* must be >= 1, got 0"),
    ("set-nan-learning-rate", [*TRAIN, "--output-dir", "new", "--set", "training.learning_rate=.nan"],
     r"training\.learning_rate .* must be a finite number, got nan"),
    ("set-negative-learning-rate", [*TRAIN, "--output-dir", "new", "--set", "training.learning_rate=-1e-4"],
     r"training\.learning_rate .* must be >= 0"),
    ("nan-temperature", [*TRAIN, "--output-dir", "new", "--temperature", "nan"], r"temperature \(--temperature\) must be a finite number"),
    ("max-length-beyond-the-model", ["train", "--stage", "1", "--model", "ckpt", "--corpus", "corpus.txt", "--max-length",
     "100000", "--output-dir", "new"], r"max_length 100000 \(--max-length\) is longer than the model's 32 positions.*docs/encoders\.md"),
    # Silent garbage: tokenizers that do not fit the model.
    ("model-folder-without-tokenizer", ["train", "--stage", "1", "--model", "small-vocab", "--corpus", "corpus.txt",
     "--output-dir", "new"], r"model 'small-vocab' \(--model\) holds no tokenizer.*--tokenizer NAME_OR_FOLDER.*save_pretrained"),
    ("overwrite-output-dir-with-a-mistake-keeps-the-run", ["train", "--stage", "1", "--model", "small-vocab", "--corpus",
     "corpus.txt", "--output-dir", "run", "--overwrite-output-dir"], r"model 'small-vocab' \(--model\) holds no tokenizer"),
    ("tokenizer-far-too-small", ["train", "--stage", "1", "--model", "ckpt", "--tokenizer", "tiny-tok", "--corpus",
     "corpus.txt", "--output-dir", "new"], r"has only 7 tokens for a model \(ckpt\) with \d+ embeddings.*--allow-small-vocabulary"),
    ("tokenizer-without-mask-token", [*TRAIN[:6], "nomask-tok", *TRAIN[7:], "--output-dir", "new"],
     r"has no mask token.*add_special_tokens\(\{'mask_token': '\[MASK\]'\}\)"),
    # Vague messages made precise, each naming the fix.
    ("file-as-model", ["train", "--stage", "1", "--model", "corpus.txt", "--corpus", "corpus.txt", "--output-dir", "new"],
     r"model 'corpus\.txt' \(--model\) is a file; --model takes a model folder"),
    ("model-folder-as-corpus", [*TRAIN[:-1], "ckpt", "--output-dir", "new"], r"ckpt is a model folder \(config\.json and weights\), not a corpus.*--model"),
    ("jsonl-first-record-without-text", [*TRAIN[:-1], "mixed.jsonl", "--output-dir", "new"],
     r"mixed\.jsonl, line 1: column 'text' not found; this record has columns \['title'\]\. Every record needs it"),
    ("csv-without-text-column", [*TRAIN[:-1], "out/data/table.csv", "--output-dir", "new"],
     r"column 'text' not found; the file has columns \['a', 'b'\]\. Name the column that holds the text with --text-column"),
    ("latin1-corpus", [*TRAIN[:-1], "latin1.txt", "--output-dir", "new"], r"latin1\.txt, line 1: not valid UTF-8.*iconv -f latin1 -t utf-8"),
    ("truncated-weights", ["train", "--stage", "1", "--model", "cut-model", "--corpus", "corpus.txt", "--output-dir", "new"],
     r"cut-model/model\.safetensors is damaged or incomplete.*download it again"),
    ("export-truncated-weights", ["export", "cut-model", "st"], r"checkpoint cut-model: cut-model/model\.safetensors is damaged or incomplete"),
    ("evaluate-truncated-weights", ["evaluate", "cut-model", "--tasks", "beir", "--output-dir", "ev"],
     r"model cut-model: cut-model/model\.safetensors is damaged or incomplete"),
    ("convert-a-text-file", ["convert", "corpus.txt", "conv", "--bert-config", "official/config.json"],
     r"(?s)corpus\.txt cannot be read as a torch state dict.*Pass a \.safetensors file(?!.*weights_only)"),
    ("rerun-after-kill-during-first-save", [*TRAIN, "--output-dir", "half-run"],
     r"stopped before its first checkpoint was complete.*nothing to resume.*--overwrite-output-dir"),
    ("resume-after-kill-during-first-save", [*TRAIN, "--output-dir", "half-run", "--resume"],
     r"stopped before its first checkpoint was complete.*replace --resume with --overwrite-output-dir"),
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


# --------------------------------------------------------------------------------------------------- issue 17
TINY_RUN = [
    "--max-length", "32",
    "--set", "model_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
    "max_position_embeddings: 32}",
    "--set", "training.per_device_train_batch_size=2",
    "--set", "training.logging_steps=1",
    "--no-evaluate",
]  # fmt: skip


def logged_steps(run) -> list[int]:
    records = [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]
    return [record["step"] for record in records if "loss" in record]  # not the end-of-run summary (train_loss)


def test_a_second_train_into_a_running_folder_refuses_and_the_first_completes(workspace, tmp_path, monkeypatch, capfd):
    """Two trainings into one --output-dir: the second refuses at once, naming the first's process; the first
    finishes with an unmixed log (each step once, in order) and its checkpoints; the second changed no file."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    monkeypatch.chdir(workspace)
    run = tmp_path / "shared-run"
    first = [*TRAIN, "--output-dir", str(run), "--max-steps", "40", "--set", "training.save_steps=20", *TINY_RUN]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "retromae_hf", *first], cwd=workspace, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (run / ".retromae.lock.json").is_file():
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.time() < deadline, "the first run never locked its folder"
            time.sleep(0.05)
        holder = json.loads((run / ".retromae.lock.json").read_text())
        code, err = run_cli([*TRAIN, "--output-dir", str(run), "--max-steps", "40", "--overwrite-output-dir", *TINY_RUN], capfd)
        assert code == 2, err
        assert f"is in use by process {holder['pid']}" in err and "nothing was changed" in err, err
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert logged_steps(run) == sorted(set(logged_steps(run))) and logged_steps(run)[-1] == 40
    assert sorted(path.name for path in run.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    assert (run / "final" / "model.safetensors").is_file()
    assert not (run / ".retromae.lock").exists() and not (run / ".retromae.lock.json").exists()


def test_a_stale_lock_of_a_killed_run_is_taken_over(workspace, tmp_path, monkeypatch, capfd, caplog):
    """A run killed with -9 leaves its lock files; the next run sees that process is gone, says so, and runs. The
    shipped GPU recipes' bf16 falls back to float32 on a CPU with a warning naming the override."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO

    monkeypatch.chdir(workspace)
    run = tmp_path / "killed-run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from retromae_hf.locks import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)", str(run)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    code, err = run_cli([*TRAIN, "--output-dir", str(run), "--max-steps", "1", *TINY_RUN], capfd)
    assert code == 2 and f"in use by process {holder.pid}" in err, err
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run / ".retromae.lock.json").is_file()  # what a killed run leaves
    code, err = run_cli(
        [*TRAIN, "--output-dir", str(run), "--max-steps", "1", "--set", "training.bf16=true", *TINY_RUN], capfd
    )
    assert code == 0, err
    assert f"taking over the lock left by process {holder.pid}" in caplog.text and "no longer runs" in caplog.text
    assert "training in float32 instead. Pass --set training.bf16=false" in caplog.text
    assert "bf16: false" in (run / "final" / "recipe.yaml").read_text()  # the record says what was trained
    assert not (run / ".retromae.lock.json").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_a_user_error_and_keeps_earlier_checkpoints(
    workspace, tmp_path, monkeypatch, capfd
):
    import errno

    monkeypatch.chdir(workspace)
    run = tmp_path / "full-disk"
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-2" in str(f):
            Path(f).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)


    monkeypatch.setattr(torch, "save", save)
    code, err = run_cli([*TRAIN, "--output-dir", str(run), "--max-steps", "3", "--set", "training.save_steps=1", *TINY_RUN], capfd)
    assert code == 2, err
    assert re.search(r"no space left on the device of the run folder \(saving checkpoint-2, about [\d.]+ [KMG]B per "
                     r"checkpoint\).*had been written", err), err
    assert "checkpoint-1" in err and "--resume" in err and "Traceback" not in err
    from retromae_hf.training import checkpoint_problem

    assert checkpoint_problem(run / "checkpoint-1") is None  # the earlier checkpoint is intact
    assert not (run / ".staging").exists() and not (run / "checkpoint-2").exists()  # the partial one is gone


def test_a_full_disk_while_exporting_removes_the_partial_export(workspace, tmp_path, monkeypatch, capfd):
    import errno

    from sentence_transformers import SentenceTransformer

    def full(self, path, *args, **kwargs):
        (Path(path) / "model.safetensors").write_bytes(b"x" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")


    monkeypatch.chdir(workspace)
    monkeypatch.setattr(SentenceTransformer, "save", full)
    before = snapshot(workspace)
    code, err = run_cli(["export", "ckpt", str(tmp_path / "st")], capfd)
    assert code == 2, err
    assert "no space left on the device of export folder" in err and "5.0 KB had been written" in err, err
    assert list(tmp_path.iterdir()) == [] and snapshot(workspace) == before


def test_overwrite_replaces_the_commands_own_output_and_cleans_a_killed_ones_staging(
    workspace, tmp_path, monkeypatch, capfd, caplog
):
    import socket

    monkeypatch.chdir(workspace)
    out = tmp_path / "st"
    killed = tmp_path / f".st.staging-999999999@{socket.gethostname()}-abcd1234"  # no such process
    older = tmp_path / ".st.staging-k2j3h4g5"  # written before staging folders named their process
    for folder in (killed, older):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    code, err = run_cli(["export", "ckpt", str(out)], capfd)
    assert code == 0, err
    assert not killed.exists() and not older.exists() and f"removing {killed}" in caplog.text
    assert json.loads((out / ".retromae-output.json").read_text())["command"] == "export"
    code, err = run_cli(["export", "ckpt", str(out), "--overwrite", "--similarity", "cosine"], capfd)
    assert code == 0, err
    assert (out / "2_Normalize").is_dir() or "Normalize" in (out / "modules.json").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["st"]


def test_read_only_destinations_are_refused_before_anything_is_read(workspace, monkeypatch, capfd):
    import errno

    from retromae_hf import outputs

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.chdir(workspace)
    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)
    before = snapshot(workspace)
    for argv in ([*TRAIN, "--output-dir", "ro-run"], ["export", "ckpt", "ro-st"]):
        code, err = run_cli(argv, capfd)
        assert code == 2 and "cannot be written" in err and "Read-only file system" in err, err
        assert "Choose a folder you may write to" in err
    assert snapshot(workspace) == before


def test_refusals_come_before_the_heavy_imports():
    """train's values are checked before the trainer, datasets and the model code are imported (seconds, not the
    run); export's and evaluate's destinations before torch is imported at all."""
    import subprocess
    import sys

    from conftest import REPO

    def in_fresh_python(code: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", "import sys; from retromae_hf.cli import main; " + code], capture_output=True,
            text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
            timeout=120,
        )  # fmt: skip

    result = in_fresh_python(
        "rc = main(['train', '--stage', '1', '--model', 'scratch', '--tokenizer', 't', '--corpus', 'c.txt', "
        "'--set', 'training.max_steps=-5']); "
        "print(rc, 'retromae_hf.training' in sys.modules, 'datasets' in sys.modules)"
    )
    assert result.stdout.split() == ["2", "False", "False"], result.stderr[-2000:]
    assert "training.max_steps" in result.stderr
    # export and evaluate check their destination before importing torch at all
    result = in_fresh_python(
        "print(main(['export', 'runs/nothing', 'README.md', '--overwrite']), "
        "main(['evaluate', 'runs/nothing', '--tasks', 'x', '--output-dir', 'README.md', '--overwrite']), "
        "'torch' in sys.modules)"
    )
    assert result.stdout.split() == ["2", "2", "False"], result.stderr[-2000:]
    assert result.stderr.count("README.md is a file") == 2


def test_recipe_text_values_are_kept_as_written(workspace, tmp_path, monkeypatch, capfd):
    """`tokenizer: no` and `text_column: 123` are a folder and a column named so, not False and 123."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(workspace / "tok", tmp_path / "no")
    with open(tmp_path / "numbers.csv", "w", encoding="utf-8") as handle:
        handle.write("123,other\n" + "".join(f'"{line}",x\n' for line in project_lines(20)))
    (tmp_path / "recipe.yaml").write_text(
        "stage: 1\nmodel: scratch\ntokenizer: no\ntext_column: 123\ncorpus: [numbers.csv]\noutput_dir: yaml-run\n"
    )
    code, err = run_cli(["train", "--recipe", "recipe.yaml", "--max-steps", "1", *TINY_RUN], capfd)
    assert code == 0, err
    import yaml

    saved = yaml.safe_load((tmp_path / "yaml-run" / "final" / "recipe.yaml").read_text())
    assert saved["tokenizer"] == "no" and saved["text_column"] == "123"


def test_a_sentence_transformers_folder_as_model_says_what_starts_fresh(workspace, tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.chdir(workspace)
    code, err = run_cli(["export", "ckpt", str(tmp_path / "st")], capfd)
    assert code == 0, err
    argv = ["train", "--stage", "1", "--model", str(tmp_path / "st"), "--corpus", "corpus.txt", "--max-length", "32",
            "--output-dir", str(tmp_path / "from-st"), "--max-steps", "1", *TINY_RUN[4:]]  # fmt: skip
    code, err = run_cli(argv, capfd)
    assert code == 0, err
    assert re.search(r"is a sentence-transformers folder \(modules\.json\) without a masked-LM head \(saved as BertModel\)"
                     r": its encoder weights are used; the masked-LM head and the decoder start fresh", caplog.text)


def test_offline_messages_blame_hf_hub_offline_only_when_the_user_set_it(monkeypatch, capfd):
    from huggingface_hub import constants

    from retromae_hf import errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(errors, "_went_offline", None)
    monkeypatch.setattr(errors, "_probe_endpoint", lambda endpoint: "cannot reach https://huggingface.co (refused)")
    code, err = run_cli(["pull", "some-org/some-model"], capfd)
    assert code == 2 and "cannot reach https://huggingface.co" in err, err
    assert "HF_HUB_OFFLINE" not in err and "local folder instead" not in err and "needs no pull" in err


# --------------------------------------------------------------------------------- issue 25: prepare and corpora
# A tokenizer that reads the corpus as [UNK] (item 6), a corrupt .txt.gz (item 9), a corpus folder (item 5), on the
# command line. The prepare-only cases (lock, inputs, damaged shards, full disk) are in tests/test_prepare.py.
@pytest.mark.parametrize("corpus", ["prepared", "text"])
def test_train_refuses_a_tokenizer_that_reads_the_corpus_as_unknown(corpus, workspace, tmp_path, capfd):
    from transformers import AutoTokenizer

    from retromae_hf.prepare import prepare_corpus

    source = workspace / "corpus.txt"
    if corpus == "prepared":
        tiny = AutoTokenizer.from_pretrained(str(workspace / "tiny-tok"))
        prepare_corpus(tiny, [source], tmp_path / "prepared", max_length=32, num_proc=1, allow_unknown=True)
        source = tmp_path / "prepared"
    argv = ["train", "--stage", "1", "--model", "scratch", "--tokenizer", str(workspace / "tiny-tok"), "--corpus",
            str(source), "--output-dir", str(tmp_path / "run"), "--max-steps", "1", *TINY_RUN]  # fmt: skip
    code, err = run_cli(argv, capfd)
    assert code == 2, err
    assert re.search(r"turns (9\d|8\d)% of the first \d+ blocks of the corpus .* into its unknown token \[UNK\] "
                     r"\(measured on [\d,]+ tokens\).*--allow-small-vocabulary", err), err  # fmt: skip
    assert "Traceback" not in err and not (tmp_path / "run" / "final").exists()


def test_export_refuses_a_tokenizer_that_is_not_the_checkpoints(workspace, tmp_path, capfd):
    code, err = run_cli(["export", str(workspace / "ckpt"), str(tmp_path / "st"), "--tokenizer",
                         str(workspace / "tiny-tok")], capfd)  # fmt: skip
    assert code == 2 and re.search(r"turns \d+% of a probe of ordinary English text into its unknown token", err), err
    assert "drop --tokenizer" in err and not (tmp_path / "st").exists()
    code, err = run_cli(["export", str(workspace / "ckpt"), str(tmp_path / "st"), "--tokenizer",
                         str(workspace / "tok")], capfd)  # fmt: skip
    assert code == 0, err  # its own tokenizer, named: accepted


def test_evaluate_refuses_a_long_document_set_of_another_tokenizer(workspace, tmp_path, capfd, trained_tokenizer):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from retromae_hf.evaluation import EvaluationDataError, check_long_eval_tokenizer
    from retromae_hf.long_eval import make_long_eval

    own = AutoTokenizer.from_pretrained(str(workspace / "tok"))
    other = trained_tokenizer("bpe", "roberta")
    ours = make_long_eval(own, tmp_path / "long-ours", lengths=[128], documents=3, seed=1)
    theirs = make_long_eval(other, tmp_path / "long-theirs", lengths=[128], documents=3, seed=1)
    model = SimpleNamespace(tokenizer=own)
    check_long_eval_tokenizer([SimpleNamespace(path_or_hub_id=str(ours / "passkey-128"))], model)  # same: accepted
    with pytest.raises(EvaluationDataError, match=rf"built with the tokenizer {other.name_or_path}"):
        check_long_eval_tokenizer([SimpleNamespace(path_or_hub_id=str(theirs / "passkey-128"))], model)
    code, err = run_cli(["export", str(workspace / "ckpt"), str(tmp_path / "st")], capfd)
    assert code == 0, err
    code, err = run_cli(["evaluate", str(tmp_path / "st"), "--tasks", str(theirs), "--output-dir",
                         str(tmp_path / "ev")], capfd)  # fmt: skip
    assert code == 2 and "counts its first document as" in err and "make-long-eval --tokenizer" in err, err
    assert not (tmp_path / "ev").exists()


def test_train_on_a_corrupt_gzip_names_the_file(workspace, tmp_path, capfd):
    corpus = tmp_path / "corpus.txt.gz"
    content = bytearray(gzip.compress((workspace / "corpus.txt").read_bytes() * 20))
    corpus.write_bytes(bytes(content[: len(content) // 2]))  # an interrupted download
    argv = [*TRAIN[:-1], str(corpus), "--output-dir", str(tmp_path / "run"), "--max-steps", "1", *TINY_RUN]
    argv[argv.index("tok")] = str(workspace / "tok")
    code, err = run_cli(argv, capfd)
    assert code == 2 and f"{corpus}: cannot be read as a gzip file" in err, err
    assert "probably a bug" not in err


# --------------------------------------------------------------------------------------------------- issue 25 (train, CLI)
@pytest.fixture(scope="module")
def round3(workspace, tmp_path_factory):
    """Round three's inputs, beside (not inside) the shared workspace: a user's folder named like a run, a run that
    finished, a long-eval set missing one length's corpus, a masked-LM config of a rotary encoder, pairs with one
    negative, a prepared corpus."""
    import shutil

    from transformers import ModernBertConfig

    ws = tmp_path_factory.mktemp("careless-user-3")
    for name in ("tok", "ckpt", "corpus.txt", "empty.txt"):
        source = workspace / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, ws / name)
    thesis = ws / "proj"  # a user's own folder, whose names happen to be those train writes
    (thesis / "final").mkdir(parents=True)
    (thesis / "final" / "thesis.tex").write_text("\\section{Results}\n")
    (thesis / "evaluation").mkdir()
    (thesis / "evaluation" / "corpus.jsonl").write_text('{"_id": "1", "text": "mine"}\n')
    (thesis / "notes.txt").write_text("my notes\n")
    (ws / "notes-only").mkdir()
    (ws / "notes-only" / "notes.txt").write_text("only notes\n")
    finished = ws / "finished-run"  # a run folder: its model is final/
    (finished / "final").mkdir(parents=True)
    (finished / "retromae_run.json").write_text(json.dumps({"run_id": "x"}))
    for length, complete in ((64, True), (128, False)):
        folder = ws / "long" / f"passkey-{length}"
        (folder / "qrels").mkdir(parents=True)
        (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        if complete:
            (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "a passage"}) + "\n")
    ModernBertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
        architectures=["ModernBertForMaskedLM"],
    ).save_pretrained(ws / "short-modernbert")  # fmt: skip
    lines = project_lines(12)
    rows = [{"query": lines[i], "positive": lines[i + 1], "negatives": [lines[i + 2]]} for i in range(0, 9, 3)]
    (ws / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ws


def unchanged_after(folder: Path, argv: list[str], capfd) -> tuple[int, str]:
    before = snapshot(folder)
    code, err = run_cli(argv, capfd)
    assert snapshot(folder) == before, "a refused command changed files"
    assert "Traceback" not in err and "probably a bug" not in err, err
    return code, err


def test_overwrite_output_dir_never_clears_a_folder_without_a_run_record(round3, monkeypatch, capfd):
    """Item 1: a user's folder (final/thesis.tex, evaluation/corpus.jsonl, notes.txt) is refused with and without
    the flag; the refusal names its files and the fix, never calls it a training run nor offers to delete it."""
    monkeypatch.chdir(round3)
    code, err = unchanged_after(round3, [*TRAIN, "--output-dir", "proj", "--overwrite-output-dir"], capfd)
    assert code == 2 and re.search(r"proj holds files that retromae-hf train did not write \(evaluation/, final/, "
                                   r"notes\.txt\): it has no run record \(retromae_run\.json\)", err), err
    assert "replaces only a run folder that train made" in err and "Choose another --output-dir" in err
    code, err = unchanged_after(round3, [*TRAIN, "--output-dir", "proj"], capfd)
    assert code == 2 and "proj holds evaluation/, final/, which a run would write, but it has no run record" in err
    assert "already holds a training run" not in err and "--overwrite-output-dir" not in err, err
    code, err = unchanged_after(round3, [*TRAIN, "--output-dir", "notes-only", "--overwrite-output-dir"], capfd)
    assert code == 2 and "notes-only holds files that retromae-hf train did not write (notes.txt)" in err, err


def test_no_command_accepts_an_abbreviated_option(round3, monkeypatch, capfd):
    """Item 2: every parser refuses an abbreviation of each of its long options as an unrecognized argument (with
    abbreviations allowed, argparse would take it for the option); `train --overwrite` deletes nothing."""
    import argparse

    from retromae_hf.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for command, sub in [(None, parser), *subparsers.choices.items()]:
        required = [command] if command else []  # a valid command line up to the abbreviation
        for action in sub._actions if command else []:
            value = str(next(iter(action.choices))) if action.choices else "1"
            if not action.option_strings:
                required += [value] * (1 if action.nargs in (None, "+") else 0)
            elif action.required:
                required += [action.option_strings[-1], value]
        for option in [o for action in sub._actions for o in action.option_strings if o.startswith("--")]:
            prefix = option[:-1]
            if prefix in sub._option_string_actions or len(prefix) < 4:
                continue
            argv = [*required, prefix, "1"] if command else [prefix, "pull", "org/name"]
            with pytest.raises(SystemExit) as exited:
                parser.parse_args(argv)
            err = capfd.readouterr().err
            assert exited.value.code == 2 and f"unrecognized arguments: {prefix}" in err, (argv, err)
            checked += 1
    assert checked > 60
    monkeypatch.chdir(round3)
    code, err = unchanged_after(round3, [*TRAIN, "--output-dir", "proj", "--overwrite"], capfd)
    assert code == 2 and "unrecognized arguments: --overwrite" in err, err


def test_a_running_folder_is_named_before_anything_loads(round3, tmp_path, monkeypatch, capfd):
    """Item 10: a second train into a folder whose run holds the lock (before its first checkpoint) names the
    holder, with or without --resume / --overwrite-output-dir, and says nothing about stopped runs."""
    import os
    import socket

    from retromae_hf.locks import RunLock

    monkeypatch.chdir(round3)
    run = tmp_path / "running"
    run.mkdir()
    (run / "retromae_run.json").write_text(json.dumps({"run_id": "running"}))
    with RunLock(run, what="output_dir (--output-dir)"):
        for extra in ([], ["--resume"], ["--overwrite-output-dir"]):
            code, err = unchanged_after(round3, [*TRAIN, "--output-dir", str(run), *extra], capfd)
            assert code == 2, err
            assert f"is in use by process {os.getpid()} on {socket.gethostname()} (retromae-hf train, started" in err
            assert "stopped before" not in err and "--overwrite-output-dir (deletes" not in err, err


@pytest.mark.parametrize("field", ["save_strategy", "eval_strategy", "logging_strategy", "hub_strategy"])
def test_yaml_booleans_in_text_options_reach_the_trainer_as_text(field, tmp_path):
    """Item 11: `--set training.save_strategy=no` (transformers' spelling) is the string 'no', as the field's type
    asks; a bool field given `no` is still False; the same in a recipe file."""
    from retromae_hf.recipe import parse_override, read_recipe_file
    from retromae_hf.training import training_arguments

    value = "end" if field == "hub_strategy" else "no"
    keys, parsed = parse_override(f"training.{field}={value}")
    _, bf16 = parse_override("training.bf16=no")
    recipe = build_recipe({"corpus": ["c.txt"]}, {".".join(keys): parsed, "training.bf16": bf16})
    assert recipe.training[field] == value and type(recipe.training[field]) is str
    assert recipe.training["bf16"] is False
    assert str(getattr(training_arguments(recipe, str(tmp_path)), field).value) == value
    (tmp_path / "r.yaml").write_text(f"corpus: [c.txt]\ntraining:\n  {field}: {value}\n  bf16: no\n")
    from_file = build_recipe(read_recipe_file(tmp_path / "r.yaml")[0])
    assert from_file.training == {field: value, "bf16": False}


# fmt: off
ROUND3_CASES = [
    ("set-corpus-null", [*TRAIN, "--output-dir", "new", "--set", "corpus=~"], r"command line: corpus must be list, got None"),
    ("set-value-blamed-on-the-command-line", ["train", "--recipe", "quickstart", "--stage", "1", "--set",
     "encoder_mask_ratio=1.5"], r"^error: command line: encoder_mask_ratio"),
    ("resume-a-missing-checkpoint", [*TRAIN, "--output-dir", "new", "--resume", "new/checkpoint-9"],
     r"--resume new/checkpoint-9: no such checkpoint folder \(it is missing\)(?!.*damaged)"),
    ("corpus-missing-before-the-tokenizer", ["train", "--stage", "1", "--model", "scratch", "--tokenizer", "nowhere/tok",
     "--corpus", "missing.txt", "--output-dir", "new"], r"missing\.txt: no such file or folder \(--corpus\)\. Check the path"),
    ("export-a-run-folder", ["export", "finished-run", "st"],
     r"finished-run \(the checkpoint argument\) is a training run folder, not a model: pass its finished model, finished-run/final"),
    ("evaluate-a-run-folder", ["evaluate", "finished-run", "--tasks", "long", "--output-dir", "ev"],
     r"finished-run \(the model argument\) is a training run folder.*finished-run/final"),
    ("push-an-invalid-repo-id", ["push", "ckpt", "not a/valid id!"],
     r"repository id 'not a/valid id!' is not a valid Hugging Face repository id(?!.*HF_TOKEN)"),
    ("stage1-beyond-a-rotary-encoder", ["train", "--stage", "1", "--model", "short-modernbert", "--corpus", "corpus.txt",
     "--max-length", "128", "--output-dir", "new"],
     r"longer than the model's 64 positions.*positions are rotary, so there is no position table to extend(?!.*convert)"),
    ("stage1-beyond-a-bert-table", ["train", "--stage", "1", "--model", "ckpt", "--corpus", "corpus.txt", "--max-length",
     "128", "--output-dir", "new"], r"longer than the model's 32 positions.*retromae-hf convert MODEL FOLDER --max-positions N"),
    ("make-long-eval-empty-text", ["make-long-eval", "--tokenizer", "tok", "--text", "empty.txt", "--output-dir", "le"],
     r"empty\.txt \(--text\) holds no text \(it is empty or only white space\)"),
    ("convert-absurd-max-positions", ["convert", "ckpt", "conv", "--max-positions", "1000000000"],
     r"--max-positions 1,000,000,000 is above the limit of 1,048,576 tokens: full attention costs the square"),
    ("evaluate-max-length-beyond-the-model", ["evaluate", "ckpt", "--tasks", "long/passkey-64", "--max-length", "100000",
     "--output-dir", "ev"], r"--max-length 100000 is longer than the model's 32 positions"),
    ("evaluate-long-eval-missing-a-corpus", ["evaluate", "ckpt", "--tasks", "long", "--output-dir", "ev"],
     r"long: the BEIR folder\(s\) passkey-128 lack corpus\.jsonl, beside 1 complete one"),
    ("num-negatives-beyond-the-data", ["train", "--stage", "2", "--model", "ckpt", "--pairs", "pairs.jsonl",
     "--negative-columns", "negatives", "--num-negatives", "1000", "--query-max-length", "16", "--passage-max-length", "32", "--max-length", "32", "--output-dir", "new"],
     r"num_negatives 1000 \(--num-negatives\): 3 of 3 training example\(s\) have fewer hard negatives \(the fewest: 1\)"),
    ("gradient-accumulation-beyond-an-epoch", [*TRAIN, "--output-dir", "new", "--max-length", "32", "--set",
     "training.gradient_accumulation_steps=1e9"],
     r"gradient_accumulation_steps 1000000000 .*an epoch of the training data holds \d+ batch\(es\)"),
]
# fmt: on


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in ROUND3_CASES], ids=[c[0] for c in ROUND3_CASES])
def test_round_three_mistakes(round3, monkeypatch, capfd, argv, message):
    """Items 7, 9 and 10: each refused with one paragraph naming the problem and the fix; nothing changes."""
    monkeypatch.chdir(round3)
    code, err = unchanged_after(round3, argv, capfd)
    assert code == 2, err
    assert re.search(message, err, re.DOTALL | re.MULTILINE), err
    assert not (round3 / "new").exists()


def test_streaming_a_prepared_corpus_is_refused_and_many_threads_warned(round3, monkeypatch, capfd, caplog):
    """Item 7: --streaming with a prepared corpus would be ignored: refused; torch_threads above the cores is
    warned about (docs/scaling.md says so), naming the cores."""
    from retromae_hf.training import available_cores

    monkeypatch.chdir(round3)
    if not (round3 / "prepared").is_dir():
        code, err = run_cli(["prepare", "--tokenizer", "tok", "--corpus", "corpus.txt", "--max-length", "32",
                             "--output-dir", "prepared", "--num-proc", "1"], capfd)  # fmt: skip
        assert code == 0, err
    argv = ["train", "--stage", "1", "--model", "ckpt", "--corpus", "prepared", "--max-length", "32", "--streaming",
            "--max-steps", "2", "--torch-threads", str(available_cores() + 7), "--output-dir", "new"]  # fmt: skip
    code, err = unchanged_after(round3, argv, capfd)
    assert code == 2 and "is a prepared corpus" in err and "Drop --streaming" in err, err
    assert f"torch_threads {available_cores() + 7} is more than the {available_cores()} core(s)" in caplog.text


def test_disk_full_advice_can_help(round3, tmp_path, monkeypatch, capfd):
    """Item 10: a full disk at the first checkpoint offers no --resume (nothing to resume) and never
    save_total_limit (the new checkpoint is staged before the old one rotates)."""
    import errno

    monkeypatch.chdir(round3)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-1" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "full"
    code, err = run_cli([*TRAIN, "--output-dir", str(run), "--max-steps", "2", "--set", "training.save_steps=1",
                         *TINY_RUN], capfd)  # fmt: skip
    assert code == 2, err
    assert "there is no earlier checkpoint to resume from" in err and "--overwrite-output-dir" in err, err
    assert "save_total_limit" not in err and "continue with --resume" not in err
    assert "save_only_model=true" in err


def test_cheap_train_mistakes_come_before_tokenizers_and_torch():
    """docs/design.md: a missing corpus, a missing model folder or a user's folder as --output-dir is refused
    before torch, transformers or datasets are imported."""
    import subprocess
    import sys
    import tempfile

    from conftest import REPO

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "proj", "final").mkdir(parents=True)
        code = (
            "import sys; from retromae_hf.cli import main; "
            "codes = [main(['train', '--stage', '1', '--model', 'scratch', '--tokenizer', 'tok', '--corpus', 'missing.txt']), "
            "main(['train', '--stage', '1', '--model', './no-model', '--corpus', 'c.txt']), "
            "main(['train', '--stage', '1', '--model', 'scratch', '--tokenizer', 'tok', '--corpus', 'c.txt', "
            "'--output-dir', 'proj', '--overwrite-output-dir'])]; "
            "print(*codes, *(name in sys.modules for name in ('torch', 'transformers', 'datasets')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=folder, timeout=120,
            env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert result.stdout.split() == ["2", "2", "2", "False", "False", "False"], result.stderr[-2000:]
    assert "missing.txt: no such file or folder (--corpus)" in result.stderr
    assert "model './no-model' (--model): no such file or folder" in result.stderr
    assert "proj holds files that retromae-hf train did not write" in result.stderr


def test_the_cheap_data_file_suffixes_are_the_readers():
    """run_folder's torch-free list of data-file suffixes (for the early missing-path check) is data.py's."""
    from retromae_hf.data import SUPPORTED_EXTENSIONS
    from retromae_hf.run_folder import DATA_FILE_SUFFIXES

    assert set(DATA_FILE_SUFFIXES) == {*SUPPORTED_EXTENSIONS, ".gz"}
