"""Reproduction of RetroMAE's central claim: RetroMAE pre-training vs masked-LM pre-training, on a CPU or one GPU.

Three arms, trained from scratch with the same BERT shape, corpus, token budget, optimizer and seed:

- ``mlm``:      masked-LM only (the BERT baseline): the encoder's MLM loss of `RetroMAEForPreTraining`, with the
                decoder term dropped (see `EncoderOnlyTrainer`). Same encoder mask ratio as the RetroMAE arms.
- ``enhanced``: RetroMAE with enhanced decoding (the paper's method).
- ``plain``:    RetroMAE with plain decoding (the paper's "w/o enhanced decoding" ablation).

Each stage-1 model is evaluated zero-shot ([CLS] embeddings, cosine, no fine-tuning) with the package's own
`retromae_hf.evaluation.evaluate` (mteb) on local BEIR folders (nDCG@10) and STS files (Spearman); then every arm
gets the *same* short stage-2 run (RetroMAE + in-batch contrastive on SNLI triplets + SciFact train pairs) and the
same evaluation again. Each stage-1 evaluation also scores the untrained initialisation every arm starts from.

Presets (every setting stays a flag that overrides its preset):

- ``--preset cpu`` (default): 200 stage-1 steps of 32 x 128 tokens, 100 stage-2 steps of 32 pairs, fp32, eval max
  length 128: what fits on a 2-core CPU (docs/reproduction.md).
- ``--preset gpu``: the protocol of the reference measurement (../shared/reference/gpu-reproduction-2026-11-27):
  1,352 stage-1 steps of 256 x 128 tokens (44.3 M tokens per arm), lr 5e-4, 10% warm-up, linear decay, weight
  decay 0.01; stage 2 200 steps of 64 pairs, lr 2e-4; eval max length 256; bf16; 8 DataLoader workers.

The corpus is tokenized and packed once (`data.tokenize_corpus`), saved under ``<output-dir>/tokenized/`` and
shared by every arm, seed and concurrent process (`--tokenize-only` builds it and exits). Runs live in
``<output-dir>/<tag>/seed<S>/<arm>/stage<N>/``: a ``--tag`` (default ``base``) keeps runs of another budget (e.g.
``--tag long --stage1-steps 4056``) beside the first, and the report shows each tag as its own block.

Every evaluation keeps per-query nDCG@10 (retrieval) and per-pair cosine similarities (STS), computed from the
rankings mteb scored (`evaluation.per_query_scores`). The report gives, beside the means, paired differences
between arms (enhanced - mlm, enhanced - plain, per stage and task) with 95% percentile bootstrap intervals.
Bootstrap (`paired_bootstrap.py`): seeds and queries (STS: sentence pairs) resampled with replacement.
Intervals are also given per seed. `--include-reference DIR` adds the reference measurement's seeds (its
per-query nDCG@10 files, SciFact and CISI only) as a block of their own and, where its protocol matches a tag's
budget, a combined block (reference seeds + ours), labelled as such.

Phases run in order (stage 1 for all arms, its evaluation, stage 2, its evaluation) and every finished piece is
kept: rerunning the same command skips what is done (an interrupted training piece starts over). `--report-only`
rebuilds the results JSON, the Markdown tables and the plots from what exists.

    python benchmarks/reproduce.py                                  # CPU preset: 2 seeds x 3 arms
    python benchmarks/reproduce.py --preset gpu --seeds 44          # the reference protocol on one GPU
    python benchmarks/reproduce.py --preset gpu --seeds 44 --tag long --stage1-steps 4056 --arms mlm enhanced
    python benchmarks/reproduce.py --preset gpu --seeds 44 --report-only --report-tags base long \\
        --include-reference ../shared/reference/gpu-reproduction-2026-11-27
"""

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared statistics
from paired_bootstrap import paired_bootstrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETROMAE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"

ARMS = {
    "mlm": {"label": "masked-LM only (BERT baseline)", "decoding": "enhanced", "encoder_only": True},
    "enhanced": {"label": "RetroMAE, enhanced decoding", "decoding": "enhanced", "encoder_only": False},
    "plain": {"label": "RetroMAE, plain decoding", "decoding": "plain", "encoder_only": False},
    # Not a stage-1 objective: the `enhanced` arm's stage-1 model, given a stage 2 of InfoNCE alone (the RetroMAE
    # term's weight 0), against the joint RetroMAE + InfoNCE stage 2 every other arm gets (the paper's stage 2).
    "enhanced_contrastive": {
        "label": "RetroMAE, enhanced decoding; stage 2 contrastive only",
        "decoding": "enhanced",
        "encoder_only": False,
        "stage1_from": "enhanced",
        "retromae_weight": 0.0,
    },
}
#: The arms run when --arms is not given (the three stage-1 objectives).
DEFAULT_ARMS = ("mlm", "enhanced", "plain")

# Not an arm: the shared starting point of every arm (same seed, same initialisation), evaluated as a reference.
UNTRAINED = "untrained"
LABELS = {**{arm: spec["label"] for arm, spec in ARMS.items()}, UNTRAINED: "untrained initialisation (reference)"}
COLORS = {
    "mlm": "tab:gray",
    "enhanced": "tab:blue",
    "plain": "tab:orange",
    "enhanced_contrastive": "tab:green",
    UNTRAINED: "lightgray",
}
#: The paired comparisons of the report: (arm, minus arm).
COMPARISONS = (("enhanced", "mlm"), ("enhanced", "plain"), ("enhanced", "enhanced_contrastive"))

#: Settings per preset; a flag given on the command line wins. `cpu` = the budget of docs/reproduction.md.
PRESETS = {
    "cpu": {
        "stage1_steps": 200,
        "stage2_steps": 100,
        "batch_size": 32,
        "stage2_batch_size": 32,
        "eval_max_length": 128,
        "eval_batch_size": 64,
        "bf16": False,
        "workers": 0,
        "name": "small",
    },
    # The reference measurement's protocol (../shared/reference/gpu-reproduction-2026-11-27/README.md).
    "gpu": {
        "stage1_steps": 1352,
        "stage2_steps": 200,
        "batch_size": 256,
        "stage2_batch_size": 64,
        "eval_max_length": 256,
        "eval_batch_size": 128,
        "bf16": True,
        "workers": 8,
        "name": "gpu",
    },
}

#: Task names of the reference measurement's files -> the task names our evaluation gives the same data.
REFERENCE_TASKS = {"scifact": "scifact", "cisi": "cisi", "stsb": "stsbenchmark-sts-test", "sickr": "sick-sick-test"}

logger = logging.getLogger("reproduce")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="cpu", help="default budget and settings (see above)")
    p.add_argument(
        "--arms",
        nargs="+",
        default=list(DEFAULT_ARMS),
        choices=list(ARMS),
        help="enhanced_contrastive: the enhanced arm's stage-1 model with a contrastive-only stage 2",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    p.add_argument("--tag", default="base", help="budget tag: runs live in <output-dir>/<tag>/ (a report block)")
    # Budget (preset defaults; None = take the preset's value).
    p.add_argument("--stage1-steps", type=int)
    p.add_argument("--stage2-steps", type=int)
    p.add_argument("--batch-size", type=int, help="stage-1 sequences per step")
    p.add_argument("--stage2-batch-size", type=int, help="stage-2 queries per step")
    p.add_argument("--max-length", type=int, default=128, help="stage-1 sequence length (tokens, packed)")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--stage2-learning-rate", type=float, default=2e-4)
    p.add_argument("--encoder-mask-ratio", type=float, default=0.3)
    p.add_argument("--decoder-mask-ratio", type=float, default=0.5)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 mixed precision for training")
    p.add_argument("--workers", type=int, help="DataLoader worker processes per training run")
    # Model shape (every arm).
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=1024)
    p.add_argument(
        "--tokenizer",
        default=str(SHARED / "models" / "all-MiniLM-L6-v2"),
        help="only its (bert-base-uncased) tokenizer is used; every arm trains from scratch",
    )
    p.add_argument(
        "--corpus",
        nargs="+",
        default=[str(DATA / "corpus" / "gutenberg_en.txt"), str(DATA / "corpus" / "wiki1m_for_simcse_head.txt")],
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        default=[str(DATA / "pairs" / "snli_devtest" / "snli_devtest_triplets.csv"), str(DATA / "beir" / "scifact")],
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=[
            str(DATA / "beir" / "scifact"),
            str(DATA / "beir" / "cisi"),
            str(DATA / "sts" / "stsbenchmark" / "sts-test.tsv"),
            str(DATA / "sts" / "sick" / "sick-test.tsv"),
        ],
    )
    p.add_argument("--eval-max-length", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--skip-stage2", action="store_true")
    p.add_argument(
        "--eval-stages",
        nargs="+",
        type=int,
        choices=(1, 2),
        default=[1, 2],
        help="which stages' models are evaluated (stage 1 includes the untrained reference); default both",
    )
    p.add_argument("--no-eval", action="store_true", help="train only (a smoke test of the training path)")
    p.add_argument(
        "--no-untrained",
        action="store_true",
        help="do not evaluate the untrained initialisation (when another process running other arms of the same "
        "seed and output folder evaluates it)",
    )
    p.add_argument("--output-dir", help="checkpoints (git-ignored); default runs/reproduce_<small|gpu>")
    p.add_argument("--results", help="results JSON; default docs/results/reproduce_<small|gpu>[_<tag>].json")
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    p.add_argument("--figure-prefix", help="default: the results file's stem")
    p.add_argument("--machine", default="", help="a line describing the machine, stored in the results")
    p.add_argument("--bootstrap", type=int, default=5000, help="bootstrap replicates for the intervals")
    p.add_argument("--tokenize-only", action="store_true", help="only tokenize and pack the corpus (shared cache)")
    p.add_argument("--report-only", action="store_true", help="only rebuild results JSON, tables and plots")
    p.add_argument("--report-tags", nargs="+", help="the tags (blocks) the report covers; default: --tag")
    p.add_argument(
        "--include-reference",
        metavar="DIR",
        help="a reference measurement folder (results_seed*.json, per_query_ndcg10_seed*.json) to report beside ours",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate the trained final folders that have no evaluation yet (e.g. in a second "
        "process while the next arm trains), then report",
    )
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    for key, value in preset.items():
        if key != "name" and getattr(args, key) is None:
            setattr(args, key, value)
    suffix = "" if args.tag == "base" else f"_{args.tag}"
    args.output_dir = args.output_dir or str(ROOT / "runs" / f"reproduce_{preset['name']}")
    args.results = args.results or str(ROOT / "docs" / "results" / f"reproduce_{preset['name']}{suffix}.json")
    args.figure_prefix = args.figure_prefix or Path(args.results).stem
    args.report_tags = args.report_tags or [args.tag]
    return args


def fail(message: str) -> None:
    """A user mistake: one clear paragraph on stderr and exit status 2, no traceback."""
    print(f"reproduce.py: {message}", file=sys.stderr)
    sys.exit(2)


def check_inputs(args) -> None:
    missing = [path for path in [args.tokenizer, *args.corpus, *args.pairs, *args.tasks] if not Path(path).exists()]
    if missing:
        fail(
            f"these inputs do not exist: {', '.join(missing)}. The defaults read the shared data at {SHARED} "
            "(set RETROMAE_SHARED to the folder holding data/ and models/), or pass --tokenizer / --corpus / "
            "--pairs / --tasks explicitly."
        )
    if args.tag != Path(args.tag).name or args.tag in ("", ".", "..", "tokenized"):
        fail(f"--tag {args.tag!r} must be a plain folder name (letters, digits, - or _), not a path.")


# ------------------------------------------------------------------------------------------------ the MLM arm
def encoder_only_trainer_class():
    """`RetroMAETrainer` minus the decoder term: the masked-LM (BERT) baseline, passed to `train(trainer_class=...)`.

    `RetroMAEForPreTraining.forward` skips the decoder when no `decoder_*` keys are passed, and its loss is then
    the encoder's MLM loss alone. The collator still builds the decoder inputs (identical batches and encoder masks
    in every arm); this trainer drops them before the forward pass. The decoder's weights exist but get no gradient
    (AdamW leaves parameters without a gradient untouched).
    """
    from retromae_hf.training import RetroMAETrainer

    class EncoderOnlyTrainer(RetroMAETrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {key: value for key, value in inputs.items() if not key.startswith("decoder_")}
            outputs = model(**inputs)
            loss = outputs.encoder_loss
            if loss is None:
                raise ValueError("the batch has no encoder labels")
            if model.training:
                self.record_components({"encoder_loss": loss})
            return (loss, outputs) if return_outputs else loss

    return EncoderOnlyTrainer


# ------------------------------------------------------------------------------------------------ recipes
def _common_training(args, seed: int, steps: int) -> dict:
    return {
        "max_steps": steps,
        "warmup_steps": 0.1,
        "weight_decay": 0.01,
        "lr_scheduler_type": "linear",
        "logging_steps": max(1, min(10, steps // 10)) if steps < 1000 else max(10, steps // 20),
        "save_steps": 10**9,  # final model only: no intermediate checkpoints
        "seed": seed,
        "bf16": bool(args.bf16),
        "dataloader_num_workers": args.workers,
    }


def stage1_recipe(args, arm: str, seed: int) -> dict:
    return {
        "stage": 1,
        "model": "scratch",
        "tokenizer": args.tokenizer,
        "model_config": {
            "hidden_size": args.hidden_size,
            "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads,
            "intermediate_size": args.intermediate_size,
            "max_position_embeddings": 512,  # room for evaluation at longer lengths than training
            "decoding": ARMS[arm]["decoding"],
        },
        "corpus": list(args.corpus),
        "packing": True,
        "max_length": args.max_length,
        "encoder_mask_ratio": args.encoder_mask_ratio,
        "decoder_mask_ratio": args.decoder_mask_ratio,
        "output_dir": str(run_dir(args, arm, seed, 1)),
        "training": {
            **_common_training(args, seed, args.stage1_steps),
            "per_device_train_batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
    }


def stage2_recipe(args, arm: str, seed: int) -> dict:
    return {
        "stage": 2,
        "model": str(run_dir(args, arm, seed, 1) / "final"),
        "pairs": list(args.pairs),
        "query_column": "sent0",
        "positive_column": "sent1",
        "negative_columns": ["hard_neg"],
        "num_negatives": 0,  # BEIR folders give no negatives: in-batch negatives only, for every arm
        "query_max_length": 64,
        "passage_max_length": args.max_length,
        "max_length": args.max_length,
        "encoder_mask_ratio": args.encoder_mask_ratio,
        "decoder_mask_ratio": args.decoder_mask_ratio,
        "retromae_weight": ARMS[arm].get("retromae_weight", 1.0),
        "contrastive_weight": 1.0,
        "similarity": "cosine",
        "temperature": 0.05,
        "output_dir": str(run_dir(args, arm, seed, 2)),
        "training": {
            **_common_training(args, seed, args.stage2_steps),
            "per_device_train_batch_size": args.stage2_batch_size,
            "learning_rate": args.stage2_learning_rate,
        },
    }


def run_dir(args, arm: str, seed: int, stage: int, tag: str | None = None) -> Path:
    if stage == 1:  # an arm that differs only in stage 2 shares its base arm's stage-1 run
        arm = ARMS.get(arm, {}).get("stage1_from", arm)
    return Path(args.output_dir) / (tag or args.tag) / f"seed{seed}" / arm / f"stage{stage}"


# ------------------------------------------------------------------------------------------------ the corpus, once
def tokenized_dir(args) -> Path:
    """Where the tokenized corpus is cached: keyed by the corpus files (path, size, mtime), tokenizer and length."""
    key = hashlib.sha256()
    for path in [*args.corpus, args.tokenizer]:
        resolved = Path(path).resolve()
        key.update(str(resolved).encode())
        files = sorted(resolved.iterdir()) if resolved.is_dir() else [resolved]
        for file in files:
            if file.is_file():
                stat = file.stat()
                key.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    key.update(f"max_length={args.max_length};packing=True".encode())
    return Path(args.output_dir) / "tokenized" / key.hexdigest()[:16]


def tokenized_corpus(args):
    """The stage-1 corpus tokenized and packed once (as `train()` would), saved to disk and shared by every run.

    Several processes may start at once: each builds into its own temporary folder and renames it into place;
    whoever comes second finds the folder and uses it (both results are identical).
    """
    from datasets import load_from_disk

    folder = tokenized_dir(args)
    if not (folder / "dataset_info.json").is_file():
        from retromae_hf.data import tokenize_corpus
        from retromae_hf.training import build_recipe, load_corpus_texts, load_tokenizer

        recipe = build_recipe(stage1_recipe(args, "enhanced", args.seeds[0]), source="corpus")
        start = time.time()
        # One process (num_proc=None): packing forms blocks within map batches, so more processes would shift
        # batch boundaries and give slightly different blocks than train() builds.
        dataset = tokenize_corpus(load_corpus_texts(recipe), load_tokenizer(recipe), max_length=args.max_length)
        staging = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        dataset.save_to_disk(str(staging))
        if (folder / "dataset_info.json").is_file():
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
        stats = {"blocks": len(dataset), "tokens": int(sum(len(ids) for ids in dataset["input_ids"]))}
        stats["seconds"] = round(time.time() - start, 1)
        (folder / "corpus_stats.json").write_text(json.dumps(stats), encoding="utf-8")
        logger.info("tokenized the corpus once: %s -> %s", stats, folder)
    return load_from_disk(str(folder))


def corpus_stats(args) -> dict | None:
    return _read_json(tokenized_dir(args) / "corpus_stats.json")


# ------------------------------------------------------------------------------------------------ phases
def train_stage(args, arm: str, seed: int, stage: int, corpus=None) -> None:
    from retromae_hf.training import build_recipe, train

    folder = run_dir(args, arm, seed, stage)
    if (folder / "final" / "training_summary.json").is_file():
        logger.info("done already: %s", folder)
        return
    raw = stage1_recipe(args, arm, seed) if stage == 1 else stage2_recipe(args, arm, seed)
    recipe = build_recipe(raw, source=f"{arm}/seed{seed}/stage{stage}")
    logger.info("training %s seed %d stage %d -> %s", arm, seed, stage, folder)
    start = time.time()
    use_encoder_only = stage == 1 and ARMS[arm]["encoder_only"]
    final = train(
        recipe,
        trainer_class=encoder_only_trainer_class() if use_encoder_only else None,
        train_dataset=corpus if stage == 1 else None,
        # An interrupted piece starts over: its folder holds only what an earlier try of this same piece made.
        overwrite_output_dir=True,
    )
    wall = time.time() - start
    (final / "wall_time.json").write_text(json.dumps({"wall_seconds": wall}), encoding="utf-8")
    logger.info("trained %s seed %d stage %d in %.0f s", arm, seed, stage, wall)


def save_untrained(args, seed: int) -> None:
    """Save the initialisation every arm starts from (`train()` seeds, then builds the model the same way)."""
    from transformers import set_seed

    from retromae_hf.training import build_model, build_recipe, load_tokenizer

    final = run_dir(args, UNTRAINED, seed, 1) / "final"
    if (final / "config.json").is_file():
        return
    recipe = build_recipe(stage1_recipe(args, "enhanced", seed), source=f"{UNTRAINED}/seed{seed}")
    tokenizer = load_tokenizer(recipe)
    set_seed(seed)
    model = build_model(recipe, tokenizer)
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)


def evaluate_stage(args, arm: str, seed: int, stage: int) -> None:
    """Score one model with the package's `evaluate` (mteb) and keep its per-query / per-pair scores."""
    from retromae_hf.evaluation import evaluate, per_query_scores

    final = run_dir(args, arm, seed, stage) / "final"
    out = run_dir(args, arm, seed, stage) / "eval"
    if (out / "summary.json").is_file() and (out / "per_query.json").is_file():
        logger.info("evaluated already: %s", out)
        return
    start = time.time()
    # Stage 1 was trained with no similarity in mind: rank with cosine for every model and stage, so the
    # comparison is the same throughout (STS reports cosine Spearman regardless).
    summary = evaluate(
        str(final),
        args.tasks,
        output_dir=out,
        batch_size=args.eval_batch_size,
        max_length=args.eval_max_length,
        similarity="cosine",
        show_progress_bar=False,
        save_predictions=True,
        overwrite=True,  # not complete (no per_query.json): what is there is an earlier try of this evaluation
    )
    per_query = per_query_scores(out)
    # The per-query scores come from the rankings mteb scored: their mean must give mteb's score back.
    for result in summary["results"]:
        entry = per_query.get(result["task"])
        if entry is not None and abs(entry["mean"] - result["main_score"]) > 1e-4:
            raise RuntimeError(
                f"{out}: per-query {entry['metric']} of {result['task']} averages {entry['mean']:.5f}, "
                f"but mteb reports {result['main_score']:.5f}"
            )
    (out / "per_query.json").write_text(json.dumps(per_query), encoding="utf-8")
    (out / "wall_time.json").write_text(json.dumps({"wall_seconds": time.time() - start}), encoding="utf-8")
    (out / "cls_collapse.json").write_text(json.dumps(cls_collapse(final, args)), encoding="utf-8")
    logger.info("evaluated %s seed %d stage %d in %.0f s", arm, seed, stage, time.time() - start)


def cls_collapse(final: Path, args, n_sentences: int = 500) -> dict:
    """Mean cosine between the [CLS] embeddings of different sentences (the first STS file's first column).

    A model whose [CLS] vectors all point one way (mean cosine near 1) ranks by tiny residuals, so its retrieval
    and STS scores say little about what its objective taught; this number tells a reader when that is the case.
    """
    import torch

    from retromae_hf.evaluation import load_sts_file
    from retromae_hf.export import load_sentence_transformer

    sts_files = [task for task in args.tasks if str(task).lower().endswith((".tsv", ".csv"))]
    if not sts_files:
        return {}
    sentences = list(dict.fromkeys(load_sts_file(sts_files[0]).sentence1))[:n_sentences]
    model = load_sentence_transformer(final)  # on the GPU when there is one
    model.max_seq_length = args.eval_max_length
    embeddings = model.encode(
        sentences, batch_size=args.eval_batch_size, convert_to_tensor=True, normalize_embeddings=True
    ).float()
    cosines = embeddings @ embeddings.T
    off_diagonal = cosines[~torch.eye(len(sentences), dtype=torch.bool, device=cosines.device)]
    return {
        "mean_cosine": off_diagonal.mean().item(),
        "min_cosine": off_diagonal.min().item(),
        "sentences": len(sentences),
        "source": _relative(sts_files[0]),
    }


# ------------------------------------------------------------------------------------------------ collecting runs
def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


LOG_KEYS = ("step", "loss", "encoder_loss", "decoder_loss", "contrastive_loss", "learning_rate")


def collect(args, tag: str) -> list[dict]:
    """Every trained or evaluated piece of one tag; `per_query` (kept out of the results JSON) rides along."""
    runs = []
    for seed in args.seeds:
        for arm in [*ARMS, UNTRAINED]:
            for stage in (1, 2):
                if stage == 1 and "stage1_from" in ARMS.get(arm, {}):
                    continue  # the base arm's stage-1 run, reported under that arm
                folder = run_dir(args, arm, seed, stage, tag)
                summary = _read_json(folder / "eval" / "summary.json")
                train_summary = _read_json(folder / "final" / "training_summary.json")
                if train_summary is None and summary is None:
                    continue
                runs.append(
                    {
                        "source": "this script",
                        "tag": tag,
                        "arm": arm,
                        "seed": seed,
                        "stage": stage,
                        "global_step": (train_summary or {}).get("global_step"),
                        "train_loss": (train_summary or {}).get("train_loss"),
                        "train_wall_seconds": (_read_json(folder / "final" / "wall_time.json") or {}).get(
                            "wall_seconds"
                        ),
                        "train_metrics": (train_summary or {}).get("metrics"),
                        "eval_wall_seconds": (_read_json(folder / "eval" / "wall_time.json") or {}).get("wall_seconds"),
                        "eval_settings": (summary or {}).get("settings"),
                        "cls_collapse": _read_json(folder / "eval" / "cls_collapse.json"),
                        "scores": {
                            r["task"]: {"metric": r["main_metric"], "score": r["main_score"]}
                            for r in (summary or {}).get("results", [])
                        },
                        "log": [
                            {k: v for k, v in rec.items() if k in LOG_KEYS}
                            for rec in _read_log(folder / "training_log.jsonl")
                            if "loss" in rec
                        ],
                        "per_query": _read_json(folder / "eval" / "per_query.json") or {},
                    }
                )
    return runs


def load_reference(args, directory: str | Path) -> tuple[list[dict], dict]:
    """The reference measurement's seeds as runs like `collect`'s (source ``reference``), and its protocol.

    Its per-query nDCG@10 lists are in qrels order; they are keyed here by the query ids of the local BEIR folder
    of the same name among `--tasks` (queries with a relevant document, in qrels order, as mteb evaluates them).
    """
    from retromae_hf.evaluation import read_qrels

    directory = Path(directory)
    result_files = sorted(directory.glob("results_seed*.json"))
    if not result_files:
        fail(f"--include-reference {directory}: no results_seed*.json there (the reference measurement's files).")
    query_ids = {}
    for task in args.tasks:
        if Path(task).is_dir():
            qrels = read_qrels(Path(task) / "qrels" / "test.tsv")
            query_ids[Path(task).name] = [q for q, docs in qrels.items() if any(v > 0 for v in docs.values())]
    runs, protocol = [], {}
    for path in result_files:
        results = json.loads(path.read_text(encoding="utf-8"))
        seed = int(results["seed"])
        protocol = {"stage1_steps": results.get("stage1_steps"), "tokens_per_arm": results.get("stage1_tokens_per_arm")}
        per_query_file = _read_json(directory / f"per_query_ndcg10_seed{seed}.json") or {}
        for arm, entry in results["runs"].items():
            for stage in (1, 2):
                scores = entry.get(f"stage{stage}_eval")
                if not scores:
                    continue
                per_query = {}
                for task, values in per_query_file.get(f"{arm}_stage{stage}", {}).items():
                    ids = query_ids.get(task)
                    if ids is None:
                        continue
                    if len(ids) != len(values):
                        fail(
                            f"{directory}: seed {seed} {arm} stage {stage} has {len(values)} {task} queries, but "
                            f"the local qrels have {len(ids)}; the reference was scored on other data."
                        )
                    per_query[task] = {"metric": "ndcg_at_10", "per_query": dict(zip(ids, values, strict=True))}
                runs.append(
                    {
                        "source": "reference",
                        "tag": "reference",
                        "arm": arm,
                        "seed": seed,
                        "stage": stage,
                        "train_wall_seconds": entry.get(f"stage{stage}_wall"),
                        "cls_collapse": {"mean_cosine": scores["cls_cosine"]} if "cls_cosine" in scores else None,
                        "scores": {
                            REFERENCE_TASKS[task]: {"score": value}
                            for task, value in scores.items()
                            if task in REFERENCE_TASKS
                        },
                        "log": [
                            {k: v for k, v in rec.items() if k in LOG_KEYS}
                            for rec in entry.get(f"stage{stage}_loss_log", [])
                        ],
                        "per_query": per_query,
                    }
                )
    return runs, protocol


# ------------------------------------------------------------------------------------------------ statistics
def aggregate(runs: list[dict]) -> dict:
    """mean and spread (sample std; 0 with one seed) per (stage, arm, task), scores in percent."""
    table: dict = {}
    for run in runs:
        for task, entry in run["scores"].items():
            table.setdefault(run["stage"], {}).setdefault(run["arm"], {}).setdefault(task, []).append(
                100 * entry["score"]
            )
    out = {}
    for stage, arms in table.items():
        for arm, tasks in arms.items():
            for task, values in tasks.items():
                out.setdefault(str(stage), {}).setdefault(arm, {})[task] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "n": len(values),
                    "values": values,
                }
    return out


def collapse_by_cell(runs: list[dict]) -> dict:
    """Mean [CLS] cosine between different sentences per (stage, arm), averaged over seeds."""
    cells: dict = {}
    for run in runs:
        if run.get("cls_collapse"):
            cells.setdefault((str(run["stage"]), run["arm"]), []).append(run["cls_collapse"]["mean_cosine"])
    return {key: statistics.fmean(values) for key, values in cells.items()}


def differences(runs: list[dict], replicates: int, seed: int = 0) -> list[dict]:
    """Paired per-query differences between arms (`COMPARISONS`) per stage and task, with bootstrap intervals."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cells = {(run["arm"], run["stage"], run["seed"], run["source"]): run for run in runs}
    rows = []
    for stage in (1, 2):
        for arm_a, arm_b in COMPARISONS:
            pairs = [
                (cells[(arm_a, stage, s, src)], cells[(arm_b, stage, s, src)])
                for (arm, st, s, src) in sorted(cells, key=lambda key: (key[2], key[3]))
                if arm == arm_a and st == stage and (arm_b, stage, s, src) in cells
            ]
            tasks = sorted({task for a, b in pairs for task in a["per_query"] if task in b["per_query"]})
            for task in tasks:
                usable = [(a, b) for a, b in pairs if task in a["per_query"] and task in b["per_query"]]
                first = usable[0][0]["per_query"][task]
                if "per_query" in first:
                    ids = list(first["per_query"])
                    items = [
                        (
                            [a["per_query"][task]["per_query"][q] for q in ids],
                            [b["per_query"][task]["per_query"][q] for q in ids],
                        )
                        for a, b in usable
                    ]
                    kind, metric = "retrieval", first["metric"]
                else:
                    gold = first["gold"]
                    items = [
                        (a["per_query"][task]["similarity"], b["per_query"][task]["similarity"], gold)
                        for a, b in usable
                    ]
                    kind, metric = "sts", first["metric"]
                result = paired_bootstrap(items, kind, replicates, rng)
                rows.append(
                    {
                        "stage": stage,
                        "comparison": f"{arm_a} - {arm_b}",
                        "task": task,
                        "metric": metric,
                        "units": {"accuracy": "sentences", "cosine_spearman": "sentence pairs"}.get(metric, "queries"),
                        "n_units": len(items[0][0]),
                        "seeds": [
                            f"{a['seed']}" + (" (reference)" if a["source"] == "reference" else "") for a, _ in usable
                        ],
                        **result,
                    }
                )
    return rows


# ------------------------------------------------------------------------------------------------ report
def markdown_table(agg: dict, arms: list[str], collapse: dict | None = None) -> str:
    collapse = collapse or {}
    lines = []
    for stage in sorted(agg):
        tasks = sorted({task for arm in agg[stage].values() for task in arm})
        title = (
            "stage 1 (zero-shot, pre-training only)"
            if stage == "1"
            else "stage 2 (after the same short contrastive run)"
        )
        lines += [
            f"**{title}**",
            "",
            "| arm | " + " | ".join(tasks) + " | mean | [CLS] cosine |",
            "|---|" + "---:|" * (len(tasks) + 2),
        ]
        for arm in arms:
            if arm not in agg[stage]:
                continue
            cells, means = [], []
            for task in tasks:
                e = agg[stage][arm].get(task)
                if e is None:
                    cells.append("–")
                    continue
                means.append(e["mean"])
                cells.append(f"{e['mean']:.2f}" + (f" ± {e['std']:.2f}" if e["n"] > 1 else ""))
            mean = f"{statistics.fmean(means):.2f}" if len(means) == len(tasks) else "–"
            cosine = collapse.get((stage, arm))
            cosine = "–" if cosine is None else f"{cosine:.3f}"
            lines.append(f"| {LABELS[arm]} | " + " | ".join(cells) + f" | {mean} | {cosine} |")
        lines += [
            "",
            "Scores ×100 (nDCG@10 for retrieval, cosine Spearman for STS, accuracy for the transfer tasks), "
            "mean ± sample std over "
            "seeds. [CLS] cosine: mean cosine between the [CLS] embeddings of 500 different STS-B sentences "
            "(near 1 = collapsed embeddings).",
            "",
        ]
    return "\n".join(lines)


def differences_table(rows: list[dict], replicates: int) -> str:
    if not rows:
        return ""
    lines = [
        "**paired differences between arms** (×100, 95% bootstrap intervals)",
        "",
        "| stage | difference | task | seeds | difference [95% interval] | per seed |",
        "|---|---|---|---|---:|---|",
    ]
    for row in rows:
        per_seed = "; ".join(
            f"{seed}: {e['difference']:+.1f} [{e['low']:+.1f}, {e['high']:+.1f}]"
            for seed, e in zip(row["seeds"], row["per_seed"], strict=True)
        )
        lines.append(
            f"| {row['stage']} | {row['comparison']} | {row['task']} | {', '.join(row['seeds'])} | "
            f"{row['difference']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] | {per_seed} |"
        )
    lines += [
        "",
        f"Difference of the two arms' scores on the same queries (retrieval: mean per-query nDCG@10 difference; "
        f"transfer tasks: accuracy difference over the same test sentences; "
        f"STS: Spearman difference), averaged over the seeds listed. Interval: 2.5th-97.5th percentile of "
        f"{replicates} bootstrap replicates, each resampling the seeds and the queries / sentences / sentence pairs with "
        "replacement; per seed: the same over that seed's queries alone. An interval that excludes 0 separates "
        "the arms beyond query-sampling (and, with several seeds, seed) noise.",
        "",
    ]
    return "\n".join(lines)


def _block_key(name: str) -> str:
    """A block name as a file-name part: "base + reference" -> "base_reference"."""
    return "_".join("".join(ch if ch.isalnum() else " " for ch in name).split())


def plots(args, block: str, runs: list[dict], agg: dict, rows: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    # The block of this run's own tag keeps the plain prefix (for the default tag: the figure names
    # docs/reproduction.md has always used); other blocks add their name, e.g. reproduce_gpu_long_*.
    prefix = args.figure_prefix if block == args.tag else f"{args.figure_prefix}_{_block_key(block)}"
    written = []
    for stage in sorted(agg):
        tasks = sorted({task for arm in agg[stage].values() for task in arm})
        arms = [arm for arm in [*ARMS, UNTRAINED] if arm in agg[stage]]
        fig, ax = plt.subplots(figsize=(2 + 1.8 * len(tasks), 4))
        width = 0.8 / max(1, len(arms))
        for i, arm in enumerate(arms):
            xs = [t + (i - (len(arms) - 1) / 2) * width for t in range(len(tasks))]
            entries = [agg[stage][arm].get(task, {"mean": 0, "std": 0, "values": []}) for task in tasks]
            ax.bar(
                xs,
                [e["mean"] for e in entries],
                width,
                yerr=[e["std"] for e in entries],
                capsize=3,
                label=LABELS[arm],
                color=COLORS[arm],
            )
            for x, e in zip(xs, entries, strict=True):  # the individual seeds
                ax.scatter([x] * len(e["values"]), e["values"], color="black", s=8, zorder=3)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, fontsize=8)
        ax.set_ylabel("score (nDCG@10 or Spearman, ×100)")
        ax.set_title(f"{block}, stage {stage}: " + ("zero-shot" if stage == "1" else "after short stage 2"))
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = figures / f"{prefix}_scores_stage{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    if rows:  # the paired differences with their intervals: the figure that separates signal from noise
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
        for y, row in enumerate(rows):
            color = "tab:blue" if row["comparison"].endswith("mlm") else "tab:orange"
            ax.errorbar(
                row["difference"],
                y,
                xerr=[[row["difference"] - row["low"]], [row["high"] - row["difference"]]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"stage {r['stage']}: {r['comparison']}, {r['task']}" for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("paired difference ×100 (95% bootstrap interval)")
        ax.set_title(f"{block}: differences between arms")
        fig.tight_layout()
        path = figures / f"{prefix}_differences.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    for stage in (1, 2):
        stage_runs = [run for run in runs if run["stage"] == stage and run["log"]]
        if not stage_runs:
            continue
        keys = ["encoder_loss", "decoder_loss"] + (["contrastive_loss"] if stage == 2 else [])
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6))
        seeds = sorted({run["seed"] for run in stage_runs})
        for ax, key in zip(axes, keys, strict=True):
            for run in stage_runs:
                points = [(rec["step"], rec[key]) for rec in run["log"] if rec.get(key) is not None]
                if points:
                    ax.plot(
                        *zip(*points, strict=True),
                        color=COLORS[run["arm"]],
                        linestyle=["-", "--", ":", "-."][seeds.index(run["seed"]) % 4],
                        label=f"{run['arm']} (seed {run['seed']})",
                    )
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"{block}: stage {stage} training losses")
        fig.tight_layout()
        path = figures / f"{prefix}_losses_stage{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def _budget_matches_reference(budget: dict | None, protocol: dict) -> bool:
    if not budget or not protocol:
        return False
    stage1 = budget["stage1"]
    return stage1["steps"] == protocol.get("stage1_steps") and stage1["tokens_per_arm"] == protocol.get(
        "tokens_per_arm"
    )


def report(args, command: str) -> None:
    """Results JSON (+ a per-query JSON beside it), Markdown tables and figures for every block of the report."""
    blocks: dict[str, dict] = {}
    for tag in args.report_tags:
        runs = collect(args, tag)
        if not runs:
            # A tag that was asked for but never ran (e.g. the longer budget, when the GPU time ran out) would
            # only print an empty heading; say so in the log and leave it out of the report instead.
            logger.info("tag %r: nothing trained or evaluated under %s; left out of the report", tag, args.output_dir)
            continue
        blocks[tag] = {
            "label": f"tag {tag!r}: this script",
            "budget": _read_json(Path(args.output_dir) / tag / "budget.json"),
            "runs": runs,
        }
    our_tags = list(blocks)
    if args.include_reference:
        reference_runs, protocol = load_reference(args, args.include_reference)
        blocks["reference"] = {
            "label": f"reference measurement ({_relative(args.include_reference)}), an external run of this code",
            "budget": protocol,
            "runs": reference_runs,
        }
        for tag in our_tags:
            if _budget_matches_reference(blocks[tag]["budget"], protocol):
                ours = sorted({run["seed"] for run in blocks[tag]["runs"]})
                theirs = sorted({run["seed"] for run in reference_runs})
                blocks[f"{tag} + reference"] = {
                    "label": f"combined, same protocol: reference seeds {theirs} and this script's seeds {ours} "
                    f"(tag {tag!r})",
                    "budget": blocks[tag]["budget"],
                    "runs": reference_runs + blocks[tag]["runs"],
                }
    markdown, written, per_query_out = [], [], {}
    for name, block in blocks.items():
        runs = block["runs"]
        block["aggregate"] = agg = aggregate(runs)
        block["differences"] = rows = differences(runs, args.bootstrap)
        markdown += [
            f"### {name}",
            "",
            block["label"] + ".",
            "",
            markdown_table(agg, [*ARMS, UNTRAINED], collapse_by_cell(runs)),
            differences_table(rows, args.bootstrap),
        ]
        written += plots(args, name, runs, agg, rows) if runs else []
        per_query_out[name] = {
            f"{run['source']}/seed{run['seed']}/{run['arm']}_stage{run['stage']}": run["per_query"]
            for run in runs
            if run["per_query"]
        }
        block["runs"] = [{k: v for k, v in run.items() if k != "per_query"} for run in runs]
    results = {
        "command": command,
        "machine": args.machine,
        "preset": args.preset,
        "arms": {arm: ARMS[arm]["label"] for arm in ARMS},
        "seeds": args.seeds,
        "tasks": [_relative(task) for task in args.tasks],
        "corpus": corpus_stats(args),
        "bootstrap_replicates": args.bootstrap,
        "blocks": blocks,
        "figures": [_relative(figure) for figure in written],
    }
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    per_query_path = path.with_name(path.stem + "_per_query.json")
    per_query_path.write_text(json.dumps(per_query_out) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text("\n".join(markdown) + "\n", encoding="utf-8")
    print("\n".join(markdown))
    print(f"wrote {path}, {per_query_path}, {path.with_suffix('.md')}, {', '.join(written)}")


def _relative(path: str) -> str:
    """A path as seen from the repository root, so stored results do not name this machine's folders."""
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def budget_of(args) -> dict:
    tokens1 = args.stage1_steps * args.batch_size * args.max_length
    return {
        "preset": args.preset,
        "tag": args.tag,
        "stage1": {
            "steps": args.stage1_steps,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "tokens_per_arm": tokens1,
            "learning_rate": args.learning_rate,
            "encoder_mask_ratio": args.encoder_mask_ratio,
            "decoder_mask_ratio": args.decoder_mask_ratio,
            "bf16": bool(args.bf16),
            "dataloader_workers": args.workers,
        },
        "stage2": None
        if args.skip_stage2
        else {
            "steps": args.stage2_steps,
            "batch_size": args.stage2_batch_size,
            "learning_rate": args.stage2_learning_rate,
            "pairs": [_relative(source) for source in args.pairs],
        },
        "model": {
            "hidden_size": args.hidden_size,
            "layers": args.layers,
            "heads": args.heads,
            "intermediate_size": args.intermediate_size,
            "tokenizer": _relative(args.tokenizer),
        },
        "corpus": [_relative(path) for path in args.corpus],
        "eval_max_length": args.eval_max_length,
        "eval_batch_size": args.eval_batch_size,
    }


def versions() -> dict:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda}
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return info


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])])
    check_inputs(args)
    budget = budget_of(args)
    print("command:", command)
    print("budget:", json.dumps(budget, indent=1))
    if args.report_only:
        report(args, command)
        return
    import torch

    if args.bf16 and not torch.cuda.is_available():
        logger.warning("--bf16 without a GPU: training runs in bf16 on the CPU (slow); --no-bf16 turns it off")
    budget["versions"] = versions()
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, {budget['versions']}")
    tag_dir = Path(args.output_dir) / args.tag
    tag_dir.mkdir(parents=True, exist_ok=True)
    (tag_dir / "budget.json").write_text(json.dumps(budget, indent=1), encoding="utf-8")
    if args.tokenize_only:
        print("tokenized corpus:", tokenized_dir(args), len(tokenized_corpus(args)), "blocks")
        return
    if args.eval_only:
        for stage in args.eval_stages:
            for seed in args.seeds:
                for arm in args.arms:
                    if stage == 1 and arm == args.arms[0]:
                        save_untrained(args, seed)
                        evaluate_stage(args, UNTRAINED, seed, 1)
                    if (run_dir(args, arm, seed, stage) / "final" / "training_summary.json").is_file():
                        evaluate_stage(args, arm, seed, stage)
    else:
        corpus = tokenized_corpus(args)
        stages = (1,) if args.skip_stage2 else (1, 2)
        for stage in stages:
            for seed in args.seeds:
                for arm in args.arms:
                    train_stage(args, arm, seed, stage, corpus)
            for seed in [] if args.no_eval or stage not in args.eval_stages else args.seeds:
                if stage == 1 and not args.no_untrained:
                    save_untrained(args, seed)
                    evaluate_stage(args, UNTRAINED, seed, 1)
                for arm in args.arms:
                    evaluate_stage(args, arm, seed, stage)
            if not args.no_eval:
                report(args, command)  # keep the results current as each stage finishes
    report(args, command)


if __name__ == "__main__":
    main()
