"""`retromae-hf` command line: argument parsing only; the work happens in the package's rooms."""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("retromae_hf")


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
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
    parser.add_argument("output_dir", type=Path, help="where to write the converted model")
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
        help="query-stream rule: staoxiao = [CLS] + position embeddings (paper); flagembedding = embedding block",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer to save beside the model (default: the source folder's, if any)"
    )
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> None:
    from .convert import from_official

    if not args.source.exists():
        raise FileNotFoundError(f"no checkpoint at {args.source}")
    source_dir = args.source if args.source.is_dir() else args.source.parent
    if _is_retromae_checkpoint(source_dir):
        _upgrade_checkpoint(source_dir, args.output_dir)
        return
    bert_config = args.bert_config or source_dir / "config.json"
    if not Path(bert_config).is_file():
        raise FileNotFoundError(f"no BERT config at {bert_config}; pass --bert-config")
    model = from_official(args.source, bert_config, args.variant)
    model.save_pretrained(args.output_dir)
    tokenizer_source = args.tokenizer or (source_dir if (source_dir / "tokenizer_config.json").is_file() else None)
    if tokenizer_source:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(args.output_dir)
    else:
        logger.warning("no tokenizer saved beside the model: pass --tokenizer to add one")
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


def _upgrade_checkpoint(source: Path, output_dir: Path) -> None:
    """A RetroMAE checkpoint of any layout, saved again in the current one (config with an `encoder` sub-config,
    weights under `lm.` and `decoder.`), with its tokenizer."""
    from . import RetroMAEForPreTraining

    if output_dir.resolve() == source.resolve():
        raise ValueError(f"convert writes a new folder: {output_dir} is the source checkpoint itself")
    model = RetroMAEForPreTraining.from_pretrained(source)
    model.save_pretrained(output_dir)
    if (source / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(source)).save_pretrained(output_dir)
    print(f"converted {source} -> {output_dir} (encoder {model.config.encoder.model_type}, current layout)")


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="offline smoke test: a tiny RetroMAE trained for a few steps on Python's own docstrings",
        description="Train a tokenizer and a tiny RetroMAE on text that ships with Python, then save both.",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/demo"), help="where to save the tiny model")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from .quickstart import run_demo

    result = run_demo(args.output_dir, steps=args.steps)
    print(
        f"demo: {result['sentences']} sentences; loss {result['first_loss']:.3f} -> {result['last_loss']:.3f} "
        f"after {args.steps} steps; model saved to {args.output_dir}"
    )


def _add_train(subparsers) -> None:
    from .training import RECIPE_FIELDS, available_recipes

    parser = subparsers.add_parser(
        "train",
        help="stage-1 RetroMAE or stage-2 RetroMAE + contrastive training from a recipe",
        description=(
            "Train from a recipe (a shipped name or a YAML file); every recipe key can be overridden by its flag "
            "below, nested keys with --set (e.g. --set training.learning_rate=5e-5). Runs unchanged under "
            "torchrun or accelerate launch. Shipped recipes: " + ", ".join(available_recipes()) + "."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--recipe", default=None, help="shipped recipe name or YAML path (default: flags only)")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=None, help="run only this stage of the recipe")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue exactly from a checkpoint folder (without a value: the newest in output_dir)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any (nested) recipe key"
    )
    parser.add_argument("--no-evaluate", action="store_true", help="skip the recipe's evaluation tasks after training")
    group = parser.add_argument_group("recipe keys (override the recipe file)")
    for name, spec in RECIPE_FIELDS.items():
        if name == "stage" or spec.type in (dict, "dict[str, Any]") or str(spec.type).startswith("dict"):
            continue
        flag = "--" + name.replace("_", "-")
        help_text = spec.metadata.get("help", "")
        if spec.type is bool:
            group.add_argument(flag, dest=f"recipe_{name}", action=argparse.BooleanOptionalAction, help=help_text)
        elif str(spec.type).startswith("list"):
            group.add_argument(flag, dest=f"recipe_{name}", nargs="+", metavar="VALUE", help=help_text)
        else:
            kind = {int: int, float: float}.get(spec.type, str)
            group.add_argument(flag, dest=f"recipe_{name}", type=kind, metavar=name.upper(), help=help_text)
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from .training import parse_override, run_recipe

    overrides = {
        key[len("recipe_") :]: value
        for key, value in vars(args).items()
        if key.startswith("recipe_") and value is not None
    }
    for text in args.set:
        keys, value = parse_override(text)
        overrides[".".join(keys)] = value
    results = run_recipe(args.recipe, overrides, stage=args.stage, resume=args.resume)
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


def _add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="RetroMAE checkpoint -> sentence-transformers folder (the encoder's own architecture, CLS pooling)",
        description=(
            "Write a standard sentence-transformers folder that SentenceTransformer(folder) loads without "
            "trust_remote_code and without retromae-hf: Transformer (the encoder's own architecture: BERT, "
            "XLM-RoBERTa, ModernBERT, ...) + CLS Pooling [+ Normalize for cosine]."
        ),
    )
    parser.add_argument("checkpoint", help="a RetroMAE checkpoint folder (stage 1, stage 2 or converted) or Hub id")
    parser.add_argument("output_dir", type=Path, help="the folder to write")
    parser.add_argument("--similarity", choices=["dot", "cosine"], default="dot", help="similarity to record")
    parser.add_argument("--tokenizer", default=None, help="tokenizer (default: the checkpoint's)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="truncation length of the export")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from .export import export_sentence_transformer

    out = export_sentence_transformer(
        args.checkpoint, args.output_dir, similarity=args.similarity, tokenizer=args.tokenizer,
        max_seq_length=args.max_seq_length,
    )  # fmt: skip
    print(f"exported {args.checkpoint} -> {out} ({args.similarity} similarity, CLS pooling)")


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on MTEB tasks or local BEIR folders / STS files through mteb",
        description=(
            "Evaluate a RetroMAE checkpoint, a sentence-transformers export, or any sentence-transformers model "
            "through mteb. Tasks are MTEB task names (need network) or local data (offline): a BEIR folder "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or an STS file (sentence1, sentence2, score). "
            "Writes mteb's result JSONs plus summary.json and summary.md."
        ),
    )
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("--tasks", nargs="+", required=True, help="MTEB task names and/or local paths")
    parser.add_argument("--output-dir", type=Path, default=Path("evaluation"), help="where results are written")
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    parser.add_argument("--max-length", type=int, default=None, help="truncation length (default: the model's)")
    parser.add_argument("--split", default="test", help="qrels / STS split to evaluate")
    parser.add_argument("--similarity", choices=["cosine", "dot"], default=None, help="override the model's similarity")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate, summary_to_markdown

    summary = evaluate(
        args.model,
        args.tasks,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        max_length=args.max_length,
        split=args.split,
        similarity=args.similarity,
    )
    print(summary_to_markdown(summary))
    print(f"summary: {args.output_dir / 'summary.json'}")


def _add_push(subparsers) -> None:
    parser = subparsers.add_parser(
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
        "--card-kind", choices=["auto", "base", "sentence-transformers"], default="auto", help="card template"
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
    parser = subparsers.add_parser(
        "pull",
        help="download a model from the Hub (revision pinning) and check it loads",
        description="snapshot_download a repository at a revision, then load it with the right class.",
    )
    parser.add_argument("repo_id", help="org/name on the Hub")
    parser.add_argument("--revision", default=None, help="branch, tag or commit sha (pin a sha to be reproducible)")
    parser.add_argument(
        "--kind",
        choices=["auto", "base", "pretraining", "sentence-transformers"],
        default="auto",
        help="what to load it as",
    )
    parser.set_defaults(handler=_run_pull)


def _run_pull(args: argparse.Namespace) -> None:
    from .hub import pull_from_hub

    model = pull_from_hub(args.repo_id, revision=args.revision, kind=args.kind)
    print(f"pulled {args.repo_id}@{args.revision or 'main'}: {type(model).__name__}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retromae-hf",
        description="RetroMAE pre-training, conversion, export, evaluation and Hub publishing.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_demo(subparsers)
    _add_train(subparsers)
    _add_export(subparsers)
    _add_evaluate(subparsers)
    _add_push(subparsers)
    _add_pull(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args.handler(args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # RuntimeError: HubPushError says what to retry
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
