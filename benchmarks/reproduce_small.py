"""Small-scale reproduction of RetroMAE's central claim: RetroMAE pre-training vs masked-LM pre-training.

Three arms, trained from scratch with the same BERT shape, corpus, token budget, optimizer and seed:

- ``mlm``:      masked-LM only (the BERT baseline): the encoder's MLM loss of `RetroMAEForPreTraining`, with the
                decoder term dropped (see `EncoderOnlyTrainer`). Same encoder mask ratio as the RetroMAE arms.
- ``enhanced``: RetroMAE with enhanced decoding (the paper's method).
- ``plain``:    RetroMAE with plain decoding (the paper's "w/o enhanced decoding" ablation).

Each stage-1 model is evaluated zero-shot ([CLS] embeddings, no fine-tuning) on local BEIR folders (nDCG@10) and
STS files (Spearman); then every arm gets the *same* short stage-2 run (RetroMAE + in-batch contrastive on SNLI
triplets + SciFact train pairs) and the same evaluation again.

Phases run in order (stage 1 for all arms, its evaluation, stage 2, its evaluation) and every finished piece is
kept: rerunning the same command skips what is done (an interrupted training piece starts over). `--report-only`
rebuilds the results JSON, the Markdown table and the plots from what exists. Each stage-1 evaluation also scores
the untrained initialisation every arm starts from, as a reference row.

    python benchmarks/reproduce_small.py                       # the default budget: 2 seeds x 3 arms
    python benchmarks/reproduce_small.py --seeds 42 --stage1-steps 50 --stage2-steps 20 --stage2-batch-size 16
    python benchmarks/reproduce_small.py --report-only
"""

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETROMAE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"

ARMS = {
    "mlm": {"label": "masked-LM only (BERT baseline)", "decoding": "enhanced", "encoder_only": True},
    "enhanced": {"label": "RetroMAE, enhanced decoding", "decoding": "enhanced", "encoder_only": False},
    "plain": {"label": "RetroMAE, plain decoding", "decoding": "plain", "encoder_only": False},
}

# Not an arm: the shared starting point of every arm (same seed, same initialisation), evaluated as a reference.
UNTRAINED = "untrained"
LABELS = {**{arm: spec["label"] for arm, spec in ARMS.items()}, UNTRAINED: "untrained initialisation (reference)"}
COLORS = {"mlm": "tab:gray", "enhanced": "tab:blue", "plain": "tab:orange", UNTRAINED: "lightgray"}

logger = logging.getLogger("reproduce_small")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    # Budget. Default: about 20 minutes per RetroMAE arm and seed on an idle 2-core CPU (~5 s per 32 x 128-token
    # stage-1 step with a decoder, ~2 s masked-LM only; stage 2 and both evaluations add ~6 min). See
    # docs/reproduction.md for what ran and what a meaningful budget would be.
    p.add_argument("--stage1-steps", type=int, default=200)
    p.add_argument("--stage2-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32, help="stage-1 sequences per step")
    p.add_argument("--stage2-batch-size", type=int, default=32, help="stage-2 queries per step")
    p.add_argument("--max-length", type=int, default=128, help="stage-1 sequence length (tokens, packed)")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--stage2-learning-rate", type=float, default=2e-4)
    p.add_argument("--encoder-mask-ratio", type=float, default=0.3)
    p.add_argument("--decoder-mask-ratio", type=float, default=0.5)
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
    p.add_argument("--eval-max-length", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--skip-stage2", action="store_true")
    p.add_argument("--no-eval", action="store_true", help="train only (a smoke test of the training path)")
    p.add_argument("--output-dir", default=str(ROOT / "runs" / "reproduce_small"), help="checkpoints (git-ignored)")
    p.add_argument("--results", default=str(ROOT / "docs" / "results" / "reproduce_small.json"))
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    p.add_argument("--figure-prefix", default="reproduce_small")
    p.add_argument("--machine", default="", help="a line describing the machine, stored in the results")
    p.add_argument("--report-only", action="store_true", help="only rebuild results JSON, table and plots")
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate the trained final folders that have no evaluation yet (e.g. in a second "
        "process while the next arm trains), then report",
    )
    return p.parse_args(argv)


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
            "max_steps": args.stage1_steps,
            "per_device_train_batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "warmup_steps": 0.1,
            "weight_decay": 0.01,
            "lr_scheduler_type": "linear",
            "logging_steps": max(1, min(10, args.stage1_steps // 10)),
            "save_steps": 10**9,  # final model only: no intermediate checkpoints
            "seed": seed,
            "dataloader_num_workers": 0,
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
        "retromae_weight": 1.0,
        "contrastive_weight": 1.0,
        "similarity": "cosine",
        "temperature": 0.05,
        "output_dir": str(run_dir(args, arm, seed, 2)),
        "training": {
            "max_steps": args.stage2_steps,
            "per_device_train_batch_size": args.stage2_batch_size,
            "learning_rate": args.stage2_learning_rate,
            "warmup_steps": 0.1,
            "weight_decay": 0.01,
            "logging_steps": max(1, min(10, args.stage2_steps // 10)),
            "save_steps": 10**9,
            "seed": seed,
            "dataloader_num_workers": 0,
        },
    }


def run_dir(args, arm: str, seed: int, stage: int) -> Path:
    return Path(args.output_dir) / f"seed{seed}" / arm / f"stage{stage}"


# ------------------------------------------------------------------------------------------------ phases
def train_stage(args, arm: str, seed: int, stage: int) -> None:
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
    trainer_class = encoder_only_trainer_class() if use_encoder_only else None
    # An interrupted piece starts over: its folder holds only what an earlier try of this same piece made.
    final = train(recipe, trainer_class=trainer_class, overwrite_output_dir=True)
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
    from retromae_hf.evaluation import evaluate

    final = run_dir(args, arm, seed, stage) / "final"
    out = run_dir(args, arm, seed, stage) / "eval"
    if (out / "summary.json").is_file():
        logger.info("evaluated already: %s", out)
        return
    start = time.time()
    # Stage 1 was trained with no similarity in mind: rank with cosine for every model and stage, so the
    # comparison is the same throughout (STS reports cosine Spearman regardless).
    evaluate(
        str(final),
        args.tasks,
        output_dir=out,
        batch_size=args.eval_batch_size,
        max_length=args.eval_max_length,
        similarity="cosine",
        show_progress_bar=False,
        overwrite=True,  # no summary.json yet: whatever is there is an interrupted try of this evaluation
    )
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

    sts_files = [task for task in args.tasks if not Path(task).is_dir()]
    if not sts_files:
        return {}
    sentences = list(dict.fromkeys(load_sts_file(sts_files[0]).sentence1))[:n_sentences]
    model = load_sentence_transformer(final, device="cpu")
    model.max_seq_length = args.eval_max_length
    embeddings = model.encode(
        sentences, batch_size=args.eval_batch_size, convert_to_tensor=True, normalize_embeddings=True
    )
    cosines = embeddings @ embeddings.T
    off_diagonal = cosines[~torch.eye(len(sentences), dtype=torch.bool)]
    return {
        "mean_cosine": off_diagonal.mean().item(),
        "min_cosine": off_diagonal.min().item(),
        "sentences": len(sentences),
        "source": _relative(sts_files[0]),
    }


# ------------------------------------------------------------------------------------------------ report
def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def collect(args) -> dict:
    runs = []
    for seed in args.seeds:
        for arm in [*args.arms, UNTRAINED]:
            for stage in (1, 2):
                folder = run_dir(args, arm, seed, stage)
                summary = _read_json(folder / "eval" / "summary.json")
                train_summary = _read_json(folder / "final" / "training_summary.json")
                if train_summary is None and summary is None:
                    continue
                log = _read_log(folder / "training_log.jsonl")
                runs.append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "stage": stage,
                        "global_step": (train_summary or {}).get("global_step"),
                        "train_loss": (train_summary or {}).get("train_loss"),
                        "train_wall_seconds": (_read_json(folder / "final" / "wall_time.json") or {}).get(
                            "wall_seconds"
                        ),
                        "eval_wall_seconds": (_read_json(folder / "eval" / "wall_time.json") or {}).get("wall_seconds"),
                        "eval_settings": (summary or {}).get("settings"),
                        "cls_collapse": _read_json(folder / "eval" / "cls_collapse.json"),
                        "scores": {
                            r["task"]: {"metric": r["main_metric"], "score": r["main_score"]}
                            for r in (summary or {}).get("results", [])
                        },
                        "log": [
                            {
                                k: v
                                for k, v in rec.items()
                                if k
                                in ("step", "loss", "encoder_loss", "decoder_loss", "contrastive_loss", "learning_rate")
                            }
                            for rec in log
                            if "loss" in rec
                        ],
                    }
                )
    return runs


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
            "Scores ×100 (nDCG@10 for cisi/scifact, cosine Spearman for STS), mean ± sample std over "
            "seeds. [CLS] cosine: mean cosine between the [CLS] embeddings of 500 different STS-B sentences "
            "(near 1 = collapsed embeddings).",
            "",
        ]
    return "\n".join(lines)


def plots(args, runs: list[dict], agg: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in sorted(agg):
        tasks = sorted({task for arm in agg[stage].values() for task in arm})
        arms = [arm for arm in [*args.arms, UNTRAINED] if arm in agg[stage]]
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
        ax.set_title(f"stage {stage}: " + ("zero-shot after pre-training" if stage == "1" else "after short stage 2"))
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = figures / f"{args.figure_prefix}_scores_stage{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    for stage in (1, 2):
        stage_runs = [run for run in runs if run["stage"] == stage and run["log"]]
        if not stage_runs:
            continue
        keys = ["encoder_loss", "decoder_loss"] + (["contrastive_loss"] if stage == 2 else [])
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6))
        for ax, key in zip(axes, keys, strict=True):
            for run in stage_runs:
                points = [(rec["step"], rec[key]) for rec in run["log"] if rec.get(key) is not None]
                if points:
                    ax.plot(
                        *zip(*points, strict=True),
                        color=COLORS[run["arm"]],
                        linestyle="-" if run["seed"] == args.seeds[0] else "--",
                        label=f"{run['arm']} (seed {run['seed']})",
                    )
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"stage {stage} training losses")
        fig.tight_layout()
        path = figures / f"{args.figure_prefix}_losses_stage{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def report(args, command: str, budget: dict) -> None:
    runs = collect(args)
    agg = aggregate(runs)
    table = markdown_table(agg, [*args.arms, UNTRAINED], collapse_by_cell(runs))
    written = plots(args, runs, agg) if runs else []
    results = {
        "command": command,
        "budget": budget,
        "machine": args.machine,
        "arms": {arm: ARMS[arm]["label"] for arm in args.arms},
        "seeds": args.seeds,
        "tasks": [_relative(task) for task in args.tasks],
        "aggregate": agg,
        "runs": runs,
        "figures": [_relative(figure) for figure in written],
    }
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"wrote {path}, {path.with_suffix('.md')}, {', '.join(written)}")


def _relative(path: str) -> str:
    """A path as seen from the repository root, so stored results do not name this machine's folders."""
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def budget_of(args) -> dict:
    tokens1 = args.stage1_steps * args.batch_size * args.max_length
    return {
        "stage1": {
            "steps": args.stage1_steps,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "tokens_per_arm": tokens1,
            "learning_rate": args.learning_rate,
            "encoder_mask_ratio": args.encoder_mask_ratio,
            "decoder_mask_ratio": args.decoder_mask_ratio,
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
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])])
    budget = budget_of(args)
    print("command:", command)
    print("budget:", json.dumps(budget, indent=1))
    if args.eval_only:
        for stage in (1, 2):
            for seed in args.seeds:
                for arm in args.arms:
                    if stage == 1 and arm == args.arms[0]:
                        save_untrained(args, seed)
                        evaluate_stage(args, UNTRAINED, seed, 1)
                    if (run_dir(args, arm, seed, stage) / "final" / "training_summary.json").is_file():
                        evaluate_stage(args, arm, seed, stage)
    elif not args.report_only:
        import torch

        print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}")
        stages = (1,) if args.skip_stage2 else (1, 2)
        for stage in stages:
            for seed in args.seeds:
                for arm in args.arms:
                    train_stage(args, arm, seed, stage)
            for seed in [] if args.no_eval else args.seeds:
                if stage == 1:
                    save_untrained(args, seed)
                    evaluate_stage(args, UNTRAINED, seed, 1)
                for arm in args.arms:
                    evaluate_stage(args, arm, seed, stage)
                    report(args, command, budget)  # keep the results current as each piece finishes
    report(args, command, budget)


if __name__ == "__main__":
    main()
