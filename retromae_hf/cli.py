"""`retromae-hf` command line: argument parsing only; the work happens in the package's rooms.

Two rules shape this module:

- **Fast help.** Nothing heavy (torch, transformers, datasets, mteb) is imported to build the parser; each command
  imports what it needs when it runs, so `retromae-hf --help` and `<command> --help` answer at once.
- **No tracebacks for mistakes.** Every error a user can cause becomes one paragraph on stderr (what, where, how
  to fix it) and exit code 2 (see `retromae_hf.errors`); anything else is reported as a probable bug with exit
  code 1. `--debug` (or `RETROMAE_HF_DEBUG=1`) adds the Python traceback.
"""

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import UserError, as_user_error

logger = logging.getLogger("retromae_hf")

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------------- value types
def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def max_steps(text: str) -> int:
    """argparse type: optimizer steps, a whole number >= 1, or -1 (transformers' "train num_train_epochs epochs")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of steps >= 1, or -1 to train num_train_epochs epochs; got {text!r}"
        ) from None
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of steps >= 1, or -1 to train num_train_epochs epochs; got {value}"
        )
    return value


class _ParagraphFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description on its own; keeps indented lines (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        blocks = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith("  ") for line in lines):
                blocks.append("\n".join(indent + line for line in lines))
            else:
                blocks.append(
                    textwrap.fill(
                        " ".join(lines),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_long_words=False,
                        break_on_hyphens=False,
                    )
                )
        return "\n\n".join(blocks)


def _common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # On the sub-commands too, so that `retromae-hf export a b --debug` works; SUPPRESS keeps a sub-command's
    # unset flag from overwriting the top-level one.
    default = False if top_level else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show the Python traceback of an error (for bug reports)"
    )


def _add_overwrite(parser: argparse.ArgumentParser, command: str, destination: str) -> None:
    """`--overwrite`, with the one rule every writing command follows (`outputs.check_output(command=...)`)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {destination} only if it holds an earlier output of `retromae-hf {command}` (marked by its "
        ".retromae-output.json); a file, a training run, a checkpoint or any other folder is refused, as "
        "`train --overwrite-output-dir` clears only a folder holding its run record",
    )


def _add_parser(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    kwargs.setdefault("formatter_class", _ParagraphFormatter)
    # No abbreviations: `--overwrite` must never be read as `--overwrite-output-dir` (issue 25).
    kwargs.setdefault("allow_abbrev", False)
    parser = subparsers.add_parser(name, **kwargs)
    _common_options(parser, top_level=False)
    return parser


# --------------------------------------------------------------------------------------------------- convert
def _add_convert(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "convert",
        help="official RetroMAE, BertForMaskedLM or retromae-hf 0.1 checkpoint -> RetroMAEForPreTraining folder",
        description=(
            "Convert a state dict of the official RetroMAE code (staoxiao/RetroMAE, FlagEmbedding), or a published "
            "encoder-only BertForMaskedLM checkpoint (the decoder is then freshly initialised), into a "
            "RetroMAEForPreTraining folder that AutoModel / AutoModelForPreTraining load. A checkpoint folder "
            "written by retromae-hf 0.1 (BERT fields at the top of config.json) is rewritten in the current "
            "layout (it also loads as it is). Masked-LM checkpoints of other architectures need no conversion: "
            "pass them to `retromae-hf train --model`."
        ),
    )
    parser.add_argument("source", type=Path, help="a .safetensors/.bin/.pt state dict, or a folder holding one")
    parser.add_argument("output_dir", type=Path, help="where to write the converted model (must not exist)")
    parser.add_argument(
        "--bert-config",
        type=Path,
        default=None,
        help="the checkpoint's BERT config.json (default: config.json beside the source)",
    )
    parser.add_argument(
        "--variant",
        choices=["staoxiao", "flagembedding"],
        default="staoxiao",
        help="query-stream rule: staoxiao = [CLS] + position embeddings (paper); flagembedding = embedding block "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer to save beside the model (default: the source folder's, if any)"
    )
    parser.add_argument(
        "--max-positions",
        type=positive_int,
        default=None,
        metavar="N",
        help="extend the encoder's absolute position table (BERT, RoBERTa, XLM-R) to take N tokens; new rows copy "
        "the learned ones in turn, as Longformer did (docs/encoders.md). The source may then also be a masked-LM "
        "checkpoint folder or Hub name of any of the three (the decoder starts fresh)",
    )
    _add_overwrite(parser, "convert", "output_dir")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> None:
    from .errors import MissingInputError
    from .outputs import check_output, staged_output

    if args.max_positions is not None:
        from .convert import check_position_count, extend_masked_lm, is_masked_lm_source

        check_position_count(args.max_positions)  # an absurd length is refused before anything is read
        if is_masked_lm_source(args.source):
            model = extend_masked_lm(args.source, args.output_dir, args.max_positions, args.tokenizer, args.overwrite)
            print(f"converted {args.source} -> {args.output_dir} ({model.max_sequence_length()} tokens, fresh decoder)")
            return
    if not args.source.exists():
        raise MissingInputError(f"no checkpoint at {args.source} (the source argument)")
    source_dir = args.source if args.source.is_dir() else args.source.parent
    if _is_retromae_checkpoint(source_dir):
        _upgrade_checkpoint(source_dir, args)
        return
    bert_config = args.bert_config or source_dir / "config.json"
    if not Path(bert_config).is_file():
        raise MissingInputError(f"no BERT config at {bert_config}; pass --bert-config path/to/config.json")
    tokenizer_source = args.tokenizer or (source_dir if (source_dir / "tokenizer_config.json").is_file() else None)
    inputs = [args.source, bert_config, tokenizer_source]
    check_output(args.output_dir, overwrite=args.overwrite, inputs=inputs, command="convert")  # before the (slow) conversion

    from .convert import from_official
    from .errors import remote_resource

    model = from_official(args.source, bert_config, args.variant)
    tokenizer = None
    if tokenizer_source:
        from transformers import AutoTokenizer

        with remote_resource("tokenizer", str(tokenizer_source), "--tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    else:
        logger.warning("no tokenizer saved beside the model: pass --tokenizer to add one")
    _maybe_extend(model, tokenizer, args.max_positions)
    with staged_output(args.output_dir, overwrite=args.overwrite, inputs=inputs, command="convert") as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    print(f"converted {args.source} -> {args.output_dir} (query_stream={model.config.query_stream})")


def _is_retromae_checkpoint(folder: Path) -> bool:
    import json

    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "retromae"
    except (OSError, ValueError):
        return False


def _upgrade_checkpoint(source: Path, args: argparse.Namespace) -> None:
    """A RetroMAE checkpoint of any layout, saved again in the current one (config with an `encoder` sub-config,
    weights under `lm.` and `decoder.`), with its tokenizer; written like every other output (staged, never into
    the source, an existing folder replaced only with --overwrite)."""
    from .errors import remote_resource
    from .outputs import check_output, staged_output

    tokenizer_source = args.tokenizer or (source if (source / "tokenizer_config.json").is_file() else None)
    inputs = [source, tokenizer_source]
    check_output(args.output_dir, overwrite=args.overwrite, inputs=inputs, command="convert")  # before loading the checkpoint

    from . import RetroMAEForPreTraining

    model = RetroMAEForPreTraining.from_pretrained(source)
    tokenizer = None
    if tokenizer_source:
        from transformers import AutoTokenizer

        with remote_resource("tokenizer", str(tokenizer_source), "--tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    _maybe_extend(model, tokenizer, args.max_positions)
    with staged_output(args.output_dir, overwrite=args.overwrite, inputs=inputs, command="convert") as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    print(f"converted {source} -> {args.output_dir} (encoder {model.config.encoder.model_type}, current layout)")


def _maybe_extend(model, tokenizer, max_positions: int | None) -> None:
    """`--max-positions`: a longer position table, and a tokenizer that truncates at the new length."""
    if max_positions is None:
        return
    from .convert import extend_positions

    extend_positions(model, max_positions)
    if tokenizer is not None:
        tokenizer.model_max_length = max_positions


# --------------------------------------------------------------------------------------------------- demo
def _add_demo(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "demo",
        help="offline smoke test: a tiny RetroMAE trained for a few steps on Python's own docstrings",
        description="Train a tokenizer and a tiny RetroMAE on text that ships with Python, then save both.",
        epilog="examples:\n  retromae-hf demo --output-dir runs/demo --steps 30",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("runs/demo"), help="where to save the tiny model (default: %(default)s)"
    )
    parser.add_argument("--steps", type=positive_int, default=30, help="optimizer steps (default: %(default)s)")
    _add_overwrite(parser, "demo", "--output-dir")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from .quickstart import run_demo

    result = run_demo(args.output_dir, steps=args.steps, overwrite=args.overwrite)
    print(
        f"demo: {result['sentences']} sentences; loss {result['first_loss']:.3f} -> {result['last_loss']:.3f} "
        f"after {args.steps} steps; model saved to {args.output_dir}"
    )


# --------------------------------------------------------------------------------------------------- train
def _default_text(spec) -> str:
    import dataclasses

    if spec.default is not dataclasses.MISSING:
        value = spec.default
    elif spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
    else:
        return ""
    if value in (None, [], {}):
        return " (default: none)"
    if isinstance(value, bool):
        return f" (default: {'on' if value else 'off'})"
    return f" (default: {value})"


def _add_train(subparsers) -> None:
    from .recipe import RECIPE_FIELDS, TRAINING_ARGUMENTS_DOCS, TRAINING_DEFAULTS, available_recipes

    ours = ", ".join(f"{key} {value}" for key, value in TRAINING_DEFAULTS.items())
    parser = _add_parser(
        subparsers,
        "train",
        help="stage-1 RetroMAE or stage-2 RetroMAE + contrastive training from a recipe",
        description=(
            "Train from a recipe (a shipped name or a YAML file). Every recipe key can be overridden by its flag "
            "below, nested keys with --set. The defaults shown apply where neither the recipe nor a flag sets a "
            "key. Runs unchanged under torchrun or accelerate launch. Shipped recipes: "
            + ", ".join(available_recipes())
            + ".\n\nKeys under `training` are transformers.TrainingArguments fields (learning_rate, "
            "per_device_train_batch_size, num_train_epochs, max_steps, warmup_steps, gradient_accumulation_steps, "
            "bf16, seed, ...): set them in the recipe's `training:` mapping or with --set training.KEY=VALUE; each "
            "value is converted to the field's type and an unknown field is refused. Every field and its default: "
            f"{TRAINING_ARGUMENTS_DOCS} (or `python -c 'import transformers; help(transformers.TrainingArguments)'`)."
            f" Where retromae-hf's defaults differ from transformers': {ours}."
        ),
        epilog=(
            "examples:\n"
            "  retromae-hf train --recipe quickstart\n"
            "  retromae-hf train --recipe quickstart --stage 1 --max-steps 100 --output-dir runs/try\n"
            "  retromae-hf train --recipe quickstart --stage 1 --max-steps 100 --output-dir runs/try --resume\n"
            "  retromae-hf train --recipe quickstart --stage 1 --output-dir runs/try --overwrite-output-dir\n"
            "  retromae-hf train --recipe stage2-nli --set training.learning_rate=5e-5"
        ),
    )
    parser.add_argument("--recipe", default=None, help="shipped recipe name or YAML path (default: flags only)")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=None, help="run only this stage of the recipe")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue exactly from a checkpoint folder (without a value: the newest of this run in output_dir)",
    )
    parser.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="start over in an output_dir that holds an earlier run (its run record, retromae_run.json): deletes "
        "only what train made there (checkpoint-*, final/, training_log.jsonl, evaluation*/); other files are "
        "kept, and a folder without a run record is refused, as export's and evaluate's --overwrite replace only "
        "their own earlier output",
    )
    parser.add_argument(
        "--max-steps",
        type=max_steps,
        default=None,
        help="optimizer steps to train, or -1 to train num_train_epochs epochs (the same as --set "
        "training.max_steps=N)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any (nested) recipe key, e.g. --set training.learning_rate=5e-5; values are YAML",
    )
    parser.add_argument("--no-evaluate", action="store_true", help="skip the recipe's evaluation tasks after training")
    group = parser.add_argument_group("recipe keys (override the recipe file)")
    for name, spec in RECIPE_FIELDS.items():
        if not spec.metadata.get("flag", True):
            continue
        flag = "--" + name.replace("_", "-")
        help_text = spec.metadata.get("help", "") + _default_text(spec)
        choices = spec.metadata.get("choices")
        if spec.type is bool:
            group.add_argument(flag, dest=f"recipe_{name}", action=argparse.BooleanOptionalAction, help=help_text)
        elif str(spec.type).startswith("list"):
            group.add_argument(flag, dest=f"recipe_{name}", nargs="+", metavar="VALUE", help=help_text)
        else:
            kind = {int: int, float: float}.get(spec.type, str)
            metavar = None if choices else name.upper()
            group.add_argument(flag, dest=f"recipe_{name}", type=kind, choices=choices, metavar=metavar, help=help_text)
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from .recipe import parse_override

    overrides = {
        key[len("recipe_") :]: value
        for key, value in vars(args).items()
        if key.startswith("recipe_") and value is not None
    }
    for text in args.set:
        keys, value = parse_override(text)
        overrides[".".join(keys)] = value
    if args.max_steps is not None:
        overrides["training.max_steps"] = args.max_steps

    # Every value of every stage, every local input path and every destination (a folder another run holds, one
    # holding a run or a user's files) is checked before the training code (torch's Trainer, datasets, tokenizers,
    # the model) is imported: such a mistake costs well under a second (docs/design.md), not the imports and the data.
    from .outputs import check_writable
    from .recipe import plan_stages
    from .run_folder import check_local_inputs, prepare_output_dir

    finals: list[Path] = []
    for recipe in plan_stages(args.recipe, overrides, stage=args.stage, resume=args.resume):
        prepare_output_dir(recipe, args.resume, args.overwrite_output_dir, check_only=True)
        check_local_inputs(recipe, made_earlier=finals)
        check_writable(recipe.output_dir, what="output_dir (--output-dir)")
        finals.append(Path(recipe.output_dir) / "final")

    from .training import run_recipe

    results = run_recipe(
        args.recipe,
        overrides,
        stage=args.stage,
        resume=args.resume,
        overwrite_output_dir=args.overwrite_output_dir,
    )
    from .locks import is_main_process

    _leave_process_group()
    if not is_main_process():  # under torchrun: the summary and the evaluation are the main process's
        return
    for recipe, final in results:
        print(f"stage {recipe.stage} finished: {final}")
    if args.no_evaluate:
        return
    from .evaluation import load_summary, summary_to_markdown
    from .training import evaluate_after_training

    for recipe, final in results:  # every stage trained here, so a two-stage run shows what stage 2 adds
        if recipe.evaluation:
            summary = evaluate_after_training(final, recipe.evaluation, Path(recipe.output_dir) / "evaluation")
            print(f"\nstage {recipe.stage} evaluation ({summary}):\n{summary_to_markdown(load_summary(summary))}")


def _leave_process_group() -> None:
    """After a multi-process run: wait until every rank is done (the main process writes final/ last), then close
    the process group. A rank that exits with the group still open can abort in gloo's teardown ("terminate called
    without an active exception"), which turns a finished run into a failed launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------- prepare
def _add_prepare(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "prepare",
        help="tokenize and pack a stage-1 corpus once, in parallel, into Arrow shards that train reads at once",
        description=(
            "Tokenize and pack a local corpus (as `train --stage 1` would) with several processes into Arrow shards "
            "of token ids in the narrowest type the vocabulary allows, with a manifest naming the tokenizer and "
            "the length. `train --stage 1 --corpus DIR` then starts at once on every rank, without tokenizing. "
            "An interrupted preparation resumes when the same command is run again (finished shards are kept)."
        ),
        epilog=(
            "examples:\n"
            "  retromae-hf prepare --tokenizer bert-base-uncased --corpus corpus.txt --max-length 512 "
            "--output-dir prepared/corpus\n"
            "  retromae-hf train --stage 1 --model bert-base-uncased --corpus prepared/corpus --max-length 512 "
            "--output-dir runs/prepared"
        ),
    )
    parser.add_argument("--tokenizer", required=True, help="tokenizer name or folder (the one training will use)")
    parser.add_argument("--corpus", nargs="+", required=True, metavar="FILE", help="text files or folders (local)")
    parser.add_argument("--max-length", type=positive_int, required=True, help="block length, special tokens included")
    parser.add_argument("--output-dir", type=Path, required=True, help="a new folder for the shards and manifest")
    parser.add_argument(
        "--num-proc", type=positive_int, default=None, help="worker processes (default: every core available)"
    )
    parser.add_argument("--text-column", default="text", help="column holding the text in JSON/CSV/Parquet files")
    parser.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pack consecutive lines into blocks (default: on, as train's --packing)",
    )
    parser.add_argument(
        "--shard-mb", type=positive_int, default=128, help="about how much text goes into one shard (default: 128)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier preparation in --output-dir (finished or not); never a folder holding other files",
    )
    parser.add_argument(
        "--allow-unknown",
        action="store_true",
        help="go ahead when the tokenizer turns most of the corpus into its unknown token ([UNK])",
    )
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> None:
    from .errors import remote_resource
    from .prepare import check_request, prepare_corpus, summary_line

    # Paths and the destination first: a typo answers in well under a second, before the tokenizer loads.
    check_request(args.corpus, args.output_dir, overwrite=args.overwrite)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    with remote_resource("tokenizer", args.tokenizer, "--tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    manifest = prepare_corpus(
        tokenizer,
        args.corpus,
        args.output_dir,
        max_length=args.max_length,
        packing=args.packing,
        text_column=args.text_column,
        num_proc=args.num_proc,
        shard_bytes=args.shard_mb << 20,
        overwrite=args.overwrite,
        allow_unknown=args.allow_unknown,
    )
    print(summary_line(manifest, args.output_dir))


# --------------------------------------------------------------------------------------------------- export
def _add_export(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "export",
        help="RetroMAE checkpoint -> sentence-transformers folder (the encoder's own architecture, CLS pooling)",
        description=(
            "Write a standard sentence-transformers folder that SentenceTransformer(folder) loads without "
            "trust_remote_code and without retromae-hf: Transformer (the encoder's own architecture: BERT, "
            "XLM-RoBERTa, ModernBERT, ...) + CLS Pooling [+ Normalize for cosine]."
        ),
    )
    parser.add_argument("checkpoint", help="a RetroMAE checkpoint folder (stage 1, stage 2 or converted) or Hub id")
    parser.add_argument("output_dir", type=Path, help="the folder to write (must not exist, see --overwrite)")
    parser.add_argument(
        "--similarity", choices=["dot", "cosine"], default="dot", help="similarity to record (default: %(default)s)"
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer (default: the checkpoint's)")
    parser.add_argument(
        "--max-seq-length", type=positive_int, default=None, help="truncation length (default: the model's)"
    )
    _add_overwrite(parser, "export", "output_dir")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from .outputs import check_output

    # The destination is checked before torch and sentence-transformers are imported (seconds on a cold start).
    from .run_folder import refuse_run_folder_as_model

    refuse_run_folder_as_model(args.checkpoint, "the checkpoint argument")
    inputs = [args.checkpoint, args.tokenizer]
    check_output(args.output_dir, overwrite=args.overwrite, inputs=inputs, what="export folder", command="export")

    from .export import export_sentence_transformer

    out = export_sentence_transformer(
        args.checkpoint, args.output_dir, similarity=args.similarity, tokenizer=args.tokenizer,
        max_seq_length=args.max_seq_length, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"exported {args.checkpoint} -> {out} ({args.similarity} similarity, CLS pooling)")


# --------------------------------------------------------------------------------------------------- evaluate
def _add_evaluate(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "evaluate",
        help="score a model on MTEB tasks or local BEIR folders / STS files through mteb",
        description=(
            "Evaluate a RetroMAE checkpoint, a sentence-transformers export, or any sentence-transformers model "
            "through mteb. Tasks are MTEB task names (need network) or local data (offline): a BEIR folder "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv), a folder of BEIR folders (each scored; e.g. a "
            "`make-long-eval` set), an STS file (sentence1, sentence2, score), or a classification (transfer) folder "
            "(train.jsonl + test.jsonl, or all.jsonl scored by stratified 10-fold cross-validation; rows "
            '{"text", "label"}; accuracy by logistic regression on the frozen embeddings); senteval=DIR stands for '
            "DIR's folders mr, cr, subj, mpqa, sst2, trec. An MTEB task without the --split "
            "asked for is scored on each of its splits (LongEmbed's LEMBPasskeyRetrieval: test_256 ... test_32768). "
            "Writes mteb's result JSONs plus summary.json and summary.md."
        ),
    )
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument(
        "--tasks", nargs="+", required=True, help="MTEB task names, local paths and/or senteval=DIR (transfer tasks)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("evaluation"),
        help="where results are written (default: %(default)s; must not exist, see --overwrite)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="encoding batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--max-length", type=positive_int, default=None, help="truncation length (default: the model's)"
    )
    parser.add_argument(
        "--split",
        default="test",
        help="qrels / STS / classification split to evaluate (default: %(default)s; all.jsonl folders: 10-fold CV)",
    )
    parser.add_argument("--similarity", choices=["cosine", "dot"], default=None, help="override the model's similarity")
    _add_overwrite(parser, "evaluate", "--output-dir")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from .outputs import check_output

    # The destination is checked before torch and mteb are imported (seconds on a cold start).
    from .run_folder import refuse_run_folder_as_model

    refuse_run_folder_as_model(args.model, "the model argument")
    check_output(
        args.output_dir, overwrite=args.overwrite, inputs=[args.model, *args.tasks],
        what="evaluation folder (--output-dir)", command="evaluate",
    )  # fmt: skip

    from .evaluation import evaluate, summary_to_markdown

    summary = evaluate(
        args.model,
        args.tasks,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        max_length=args.max_length,
        split=args.split,
        similarity=args.similarity,
        overwrite=args.overwrite,
    )
    print(summary_to_markdown(summary))
    print(f"summary: {args.output_dir / 'summary.json'}")


# --------------------------------------------------------------------------------------------------- make-long-eval
def _add_make_long_eval(subparsers) -> None:
    from .long_eval import DEFAULT_DOCUMENTS, DEFAULT_LENGTHS  # light: the module imports transformers lazily

    parser = _add_parser(
        subparsers,
        "make-long-eval",
        help="write a synthetic long-document retrieval set (passkey at a random depth) that `evaluate` scores offline",
        description=(
            "Write a synthetic long-document retrieval set in the style of LongEmbed's passkey task (Zhu et al., "
            "2024, arXiv 2404.12096): each document hides one fact ('The pass key of <name> is <number>.') at a "
            "random depth of ordinary text, and a query asks for it. One BEIR folder per length (passkey-256, "
            "...), lengths counted in the tokenizer's tokens with special tokens, deterministic by --seed. Score "
            "every length with `retromae-hf evaluate MODEL --tasks OUTPUT_DIR`. Online, mteb's LongEmbed tasks "
            "(LEMBPasskeyRetrieval, LEMBNeedleRetrieval) give the published benchmark."
        ),
        epilog=(
            "examples:\n"
            "  retromae-hf make-long-eval --tokenizer runs/demo --output-dir long-eval\n"
            "  retromae-hf make-long-eval --tokenizer runs/demo --lengths 128 512 --documents 20 "
            "--text corpus.txt --output-dir long-eval-corpus\n"
            "  retromae-hf evaluate runs/demo --tasks long-eval --output-dir long-eval-scores"
        ),
    )
    parser.add_argument("--tokenizer", required=True, help="the evaluated model's tokenizer (folder or Hub name)")
    parser.add_argument("--output-dir", type=Path, required=True, help="the folder to write (must not exist)")
    parser.add_argument(
        "--lengths",
        type=positive_int,
        nargs="+",
        default=list(DEFAULT_LENGTHS),
        metavar="N",
        help="document lengths in tokens, special tokens included (default: %(default)s)",
    )
    parser.add_argument(
        "--documents", type=positive_int, default=DEFAULT_DOCUMENTS, help="documents and queries per length (default: %(default)s)"
    )
    parser.add_argument(
        "--text", type=Path, default=None, help="UTF-8 text file for the documents (default: Python's docstrings)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default: %(default)s)")
    _add_overwrite(parser, "make-long-eval", "--output-dir")
    parser.set_defaults(handler=_run_make_long_eval)


def _run_make_long_eval(args: argparse.Namespace) -> None:
    from .long_eval import make_long_eval

    out = make_long_eval(
        args.tokenizer, args.output_dir, lengths=args.lengths, documents=args.documents, text_file=args.text,
        seed=args.seed, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {len(args.lengths)} BEIR folders to {out}; score them with: retromae-hf evaluate MODEL --tasks {out}")


# --------------------------------------------------------------------------------------------------- mine
def _add_mine(subparsers) -> None:
    from .mine import MINED_PAIRS_FILE, MINING_RECORD_FILE, SAMPLING_STRATEGIES, MiningOptions  # light: no datasets

    defaults = MiningOptions()
    parser = _add_parser(
        subparsers,
        "mine",
        allow_abbrev=False,
        help="hard negatives for (query, positive) pairs or a BEIR folder's qrels, mined with a model, for stage 2",
        description=(
            "Mine hard negatives for (query, positive) pairs with any sentence-transformers model, an export of "
            "this package or a RetroMAE checkpoint, through sentence-transformers' mine_hard_negatives (cosine "
            "similarity; faiss when installed). --data is a pairs file or folder (CSV/TSV/JSON(L)/Parquet with "
            "--query-column and --positive-column; DPR and Tevatron files too) whose positives are the candidates, "
            "or a BEIR folder whose qrels/<split>.tsv gives the pairs and whose whole corpus.jsonl the candidates. "
            f"Writes {MINED_PAIRS_FILE} (Tevatron's layout: `train --stage 2 --pairs OUTPUT_DIR/{MINED_PAIRS_FILE}` "
            f"reads it unchanged) and {MINING_RECORD_FILE} (model, data, options, counts, score statistics) into "
            "--output-dir. A pair left with fewer than --num-negatives candidates is dropped and counted."
        ),
    )
    parser.add_argument(
        "--model", required=True, help="sentence-transformers model, export or checkpoint (folder or Hub id)"
    )
    parser.add_argument("--data", required=True, help="pairs file or folder, or a BEIR folder (qrels/<split>.tsv)")
    parser.add_argument("--split", default="train", help="qrels split of a BEIR folder (default: %(default)s)")
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="the folder to write (must not exist, see --overwrite)"
    )
    parser.add_argument("--query-column", default="query", help="query column of a pairs file (default: %(default)s)")
    parser.add_argument(
        "--positive-column", default="positive", help="positive column of a pairs file (default: %(default)s)"
    )
    parser.add_argument(
        "--num-negatives", type=positive_int, default=defaults.num_negatives,
        help="negatives per pair (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--range-min", type=int, default=defaults.range_min,
        help="skip the first this many ranked candidates, likely unlabelled positives (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--range-max", type=positive_int, default=defaults.range_max,
        help="consider candidates up to this rank (default: sentence-transformers' choice from the other options)",
    )  # fmt: skip
    parser.add_argument("--max-score", type=float, default=None, help="drop candidates more similar than this")
    parser.add_argument("--min-score", type=float, default=None, help="drop candidates less similar than this")
    parser.add_argument(
        "--absolute-margin", type=float, default=None,
        help="keep a candidate only if its similarity is at least this much below the positive's",
    )  # fmt: skip
    parser.add_argument(
        "--relative-margin", type=float, default=None,
        help="keep a candidate only if its similarity is at least this share of the positive's below it (0.05: "
        "NV-Retriever's TopK-PercPos)",
    )  # fmt: skip
    parser.add_argument(
        "--sampling", choices=SAMPLING_STRATEGIES, default=defaults.sampling_strategy,
        help="take the top candidates left, or draw them at random (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="encoding batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--faiss", choices=["auto", "yes", "no"], default="auto",
        help="search with faiss: auto uses it when installed (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of --sampling random (default: %(default)s)"
    )
    _add_overwrite(parser, "mine", "--output-dir")
    parser.set_defaults(handler=_run_mine)


def _run_mine(args: argparse.Namespace) -> None:
    from .mine import MINED_PAIRS_FILE, MiningOptions, mine_hard_negatives

    options = MiningOptions(
        num_negatives=args.num_negatives, range_min=args.range_min, range_max=args.range_max,
        max_score=args.max_score, min_score=args.min_score, absolute_margin=args.absolute_margin,
        relative_margin=args.relative_margin, sampling_strategy=args.sampling, batch_size=args.batch_size,
        use_faiss={"auto": None, "yes": True, "no": False}[args.faiss], seed=args.seed,
    )  # fmt: skip
    out = mine_hard_negatives(
        args.model, args.data, args.output_dir, split=args.split, query_column=args.query_column,
        positive_column=args.positive_column, options=options, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"mined {args.num_negatives} hard negatives per pair -> {out / MINED_PAIRS_FILE}")
    print(f"train on it with: retromae-hf train --stage 2 --pairs {out / MINED_PAIRS_FILE} ...")


# --------------------------------------------------------------------------------------------------- push / pull
def _add_push(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "push",
        help="publish a checkpoint or sentence-transformers export to the Hub with a generated model card",
        description=(
            "Upload a RetroMAE checkpoint (stage-1 base: encoder and decoder, code files for trust_remote_code) or a "
            "sentence-transformers export (stage-2 models) with a model card carrying the evaluation summary. "
            "Honours HF_ENDPOINT and the usual token sources (HF_TOKEN, `hf auth login`); the token is never "
            "printed. The local folder is never modified."
        ),
    )
    parser.add_argument("folder", help="checkpoint or export folder")
    parser.add_argument("repo_id", help="org/name on the Hub")
    parser.add_argument("--summary", default=None, help="evaluation summary.json from `retromae-hf evaluate`")
    parser.add_argument("--recipe", default=None, help="the training recipe (default: the folder's recipe.yaml)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--commit-message", default=None, help="commit message")
    parser.add_argument(
        "--card-kind",
        choices=["auto", "base", "sentence-transformers"],
        default="auto",
        help="card template (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_push)


def _run_push(args: argparse.Namespace) -> None:
    from .hub import push_to_hub

    url = push_to_hub(
        args.folder,
        args.repo_id,
        summary=args.summary,
        recipe=args.recipe,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        card_kind=args.card_kind,
    )
    print(f"pushed {args.folder} -> {url}")


def _add_pull(subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "pull",
        help="download a model from the Hub (revision pinning) and check it loads",
        description=(
            "snapshot_download a repository at a revision into the Hugging Face cache (nothing is written "
            "elsewhere), then load it with the right class."
        ),
    )
    parser.add_argument("repo_id", help="org/name on the Hub")
    parser.add_argument("--revision", default=None, help="branch, tag or commit sha (pin a sha to be reproducible)")
    parser.add_argument(
        "--kind",
        choices=["auto", "base", "pretraining", "sentence-transformers"],
        default="auto",
        help="what to load it as (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_pull)


def _run_pull(args: argparse.Namespace) -> None:
    from .hub import pull_from_hub

    model = pull_from_hub(args.repo_id, revision=args.revision, kind=args.kind)
    print(f"pulled {args.repo_id}@{args.revision or 'main'}: {type(model).__name__}")


# --------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retromae-hf",
        description="RetroMAE pre-training, conversion, export, evaluation and Hub publishing.",
        epilog="`retromae-hf COMMAND --help` explains each command. Start with: retromae-hf train --recipe quickstart",
        formatter_class=_ParagraphFormatter,
        allow_abbrev=False,  # an abbreviated flag is refused, on every command: it could name a destructive one
    )
    parser.add_argument("--version", action="version", version=f"retromae-hf {__version__}")
    _common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_demo(subparsers)
    _add_train(subparsers)
    _add_prepare(subparsers)
    _add_export(subparsers)
    _add_evaluate(subparsers)
    _add_make_long_eval(subparsers)
    _add_mine(subparsers)
    _add_push(subparsers)
    _add_pull(subparsers)
    return parser


def report_error(error: BaseException, debug: bool) -> int:
    """Print one paragraph about `error` on stderr (with the traceback when `debug`); return the exit code."""
    if isinstance(error, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if debug:
        traceback.print_exception(error)
    user_error = as_user_error(error)
    if user_error is not None:
        message = str(user_error).strip() or type(error).__name__
        if not isinstance(error, UserError) and not debug:
            message += " (--debug shows where it was raised)"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(
        f"error: unexpected {type(error).__name__}: {error}\nThis is probably a bug in retromae-hf. Please report it "
        "with the output of the same command run with --debug.",
        file=sys.stderr,
    )
    return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("RETROMAE_HF_DEBUG", "") not in ("", "0")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args.handler(args)
    except (Exception, KeyboardInterrupt) as error:
        return report_error(error, debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
