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
        help="official RetroMAE or BertForMaskedLM checkpoint -> RetroMAEForPreTraining folder",
        description=(
            "Convert a state dict of the official RetroMAE code (staoxiao/RetroMAE, FlagEmbedding), or a published "
            "encoder-only BertForMaskedLM checkpoint (the decoder is then freshly initialised), into a "
            "RetroMAEForPreTraining folder that AutoModel / AutoModelForPreTraining load."
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retromae-hf",
        description="RetroMAE pre-training, conversion, export, evaluation and Hub publishing.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args.handler(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
