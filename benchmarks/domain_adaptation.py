"""Domain adaptation of a sentence-transformers model from unlabelled documents: RetroMAELoss vs masked-LM.

For each BEIR folder (default: the shared SciFact and CISI), `all-MiniLM-L6-v2` is adapted on that set's
*documents only* (titles and abstracts; no queries, no relevance judgements) with the same budget in four unlabelled arms:

- ``retromae``:       `RetroMAELoss` on the documents;
- ``retromae_decoder``: `RetroMAELoss(model, encoder_mlm_weight=0)`: the decoder's reconstruction from the
                      embedding alone, without the encoder's masked-LM term (whose head is new to the model);
- ``masked_lm``:      `MaskedLMLoss` on the documents (the usual "continue masked-LM pre-training" baseline: the
                      same masks and head, no decoder);
- ``retromae_mnrl``:  `RetroMAELoss` on the documents and `MultipleNegativesRankingLoss` on SNLI entailment pairs
                      in one run (a dict of datasets and losses, round robin: half of the steps each).

Two more arms use a few labelled pairs from the domain, the set's *training* queries with their relevant documents
(SciFact has 919; CISI none, so they are skipped there), the test queries staying unseen: ``mnrl_domain``
(`MultipleNegativesRankingLoss` on those pairs alone) and ``retromae_mnrl_domain`` (`RetroMAELoss` on the documents
and MNRL on those pairs, round robin): does RetroMAE add anything to fine-tuning on in-domain pairs?

Every model, the unadapted one included, is scored with `retromae_hf.evaluation.evaluate` (mteb) on the set's test
queries (nDCG@10) and on STS-B test (Spearman of cosine similarities). Per-query nDCG@10 and per-pair similarities
come from the rankings and similarities mteb scored (`evaluation.per_query_scores`); each arm is compared with the
unadapted model by a paired bootstrap (`paired_bootstrap.py`: the seeds and the queries / sentence pairs
resampled), over all seeds together and per seed.

Finished pieces are kept under the work folder: ``<work>/<dataset>/unadapted.json`` and
``<work>/<dataset>/<tag>/seed<S>/<arm>.json``; rerunning the same command skips them (an interrupted piece starts
over). A ``--tag`` keeps another budget beside the first (e.g. ``--tag long --steps 1000``); each tag has its own
results page. Several processes may share a work folder (one per dataset and arm, say: `--models` picks what a
process computes), and `--report-only` rebuilds the JSON and Markdown results from what exists.

    python benchmarks/domain_adaptation.py                          # the CPU budget (see --steps), seed 42
    python benchmarks/domain_adaptation.py --steps 20 --datasets cisi --work runs/da-smoke --output /tmp/da
    python benchmarks/domain_adaptation.py --report-only
    bash benchmarks/gpu/domain_adaptation.sh                        # both budgets, three seeds, on one GPU
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
import os
import shlex
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
STS_TEST = DATA / "sts" / "stsbenchmark" / "sts-test.tsv"
SNLI_PAIRS = DATA / "pairs" / "snli_devtest" / "snli_devtest_pairs.tsv"

ARMS = {
    "retromae": "RetroMAELoss on the documents",
    "retromae_decoder": "RetroMAELoss without its encoder masked-LM term (encoder_mlm_weight=0): reconstruction only",
    "masked_lm": "MaskedLMLoss on the documents (baseline)",
    "retromae_mnrl": "RetroMAELoss on the documents + MNRL on SNLI pairs",
    # With a few labelled pairs from the domain (the set's *training* queries; the test queries stay unseen).
    "mnrl_domain": "MNRL on the set's training (query, document) pairs alone: labelled in-domain pairs",
    "retromae_mnrl_domain": "RetroMAELoss on the documents + MNRL on the set's training (query, document) pairs",
}
# Arms that need the set's training pairs (qrels/train.tsv); skipped where a set has none.
NEEDS_TRAIN_PAIRS = ("mnrl_domain", "retromae_mnrl_domain")
BASE = "unadapted"
# The loss's own, freshly initialised parts (decoder, masked-LM head, embedding adapter) get their own learning rate.
LOSS_PARAMETERS = r"(^|\.)(decoder|head|embedding_adapter)\."

logger = logging.getLogger("domain_adaptation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--datasets", nargs="+", default=["cisi", "scifact"], help="BEIR folders under --beir-root")
    p.add_argument("--beir-root", default=str(DATA / "beir"))
    p.add_argument(
        "--models",
        nargs="+",
        default=[BASE, *ARMS],
        choices=[BASE, *ARMS],
        help="what this process computes (the report shows whatever exists)",
    )
    # Budget. Default: 60 steps of 16 documents (960 documents, truncated to 128 tokens) per arm and dataset:
    # 6-25 minutes of training per piece on the project's 2-core CPU shared with other work, and 5-20 minutes to
    # evaluate SciFact's 5,183 documents per model (about four to five hours for every arm, dataset and the
    # unadapted model); seconds per piece on a GPU.
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128, help="training truncation (evaluation uses the model's)")
    p.add_argument("--learning-rate", type=float, default=5e-5, help="the model's parameters")
    p.add_argument("--loss-learning-rate", type=float, default=5e-4, help="the loss's fresh decoder and head")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--tag", default="base", help="name of this budget: its pieces and its results page")
    p.add_argument("--device", default="auto", help="'auto' (a GPU when there is one), 'cpu', 'cuda', ...")
    p.add_argument("--bf16", action="store_true", help="train with bf16 autocast (a GPU); evaluation stays fp32")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers during training")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--machine", default=None, help="where the pieces ran, for the results page (default: detected)")
    p.add_argument("--work", default=str(ROOT / "runs" / "domain_adaptation"), help="kept pieces (ignored by git)")
    p.add_argument("--output", default=None, help="results stem (default docs/results/domain_adaptation[_<tag>])")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-report", action="store_true", help="only compute pieces (processes side by side)")
    args = p.parse_args(argv)
    if args.output is None:
        suffix = "" if args.tag == "base" else f"_{args.tag}"
        args.output = str(ROOT / "docs" / "results" / f"domain_adaptation{suffix}")
    return args


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def machine_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores)"


# ----------------------------------------------------------------------------------------------- data


def corpus_documents(folder: Path) -> dict[str, str]:
    """The set's documents by id, as the retrieval evaluation encodes them: title and text."""
    documents = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                documents[str(row["_id"])] = f"{row.get('title', '')} {row.get('text', '')}".strip()
    return documents


def corpus_texts(folder: Path) -> list[str]:
    """The set's non-empty documents: what the unlabelled arms train on."""
    return [text for text in corpus_documents(folder).values() if text]


def train_pairs(folder: Path) -> tuple[list[str], list[str]]:
    """(query, relevant document) pairs of the set's training split: qrels/train.tsv, queries and corpus."""
    from retromae_hf.evaluation import read_qrels

    documents = corpus_documents(folder)
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = {str(row["_id"]): row["text"] for row in map(json.loads, filter(str.strip, handle))}
    anchors, positives = [], []
    for query, relevant in read_qrels(folder / "qrels" / "train.tsv").items():
        for document, grade in relevant.items():
            if grade > 0 and query in queries and documents.get(document):
                anchors.append(queries[query])
                positives.append(documents[document])
    return anchors, positives


def snli_entailment_pairs() -> tuple[list[str], list[str]]:
    premises, hypotheses = [], []
    with open(SNLI_PAIRS, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["label"] == "entailment":
                premises.append(row["premise"])
                hypotheses.append(row["hypothesis"])
    return premises, hypotheses


# ----------------------------------------------------------------------------------------------- pieces


def evaluate_model(model, dataset: str, folder: Path, args) -> dict:
    """nDCG@10 on the set's test queries and STS-B cosine Spearman (mteb), with per-query / per-pair scores."""
    from retromae_hf.evaluation import evaluate, per_query_scores

    evaluate(
        model,
        [Path(args.beir_root) / dataset, STS_TEST],
        output_dir=folder / "mteb",
        batch_size=args.eval_batch_size,
        show_progress_bar=False,
        save_predictions=True,
    )
    scores = per_query_scores(folder / "mteb")
    retrieval = next(entry for entry in scores.values() if "per_query" in entry)
    sts = next(entry for entry in scores.values() if "similarity" in entry)
    return {
        "ndcg_at_10": retrieval["mean"],
        "per_query_ndcg_at_10": retrieval["per_query"],
        "sts_spearman": sts["mean"],
        "sts_cosine": sts["similarity"],
    }


def adapt(arm: str, dataset: str, seed: int, folder: Path, args) -> tuple[object, dict]:
    """Adapt a fresh copy of the model with one arm's losses; returns the model and its training record."""
    import torch
    from datasets import Dataset, DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from retromae_hf.sentence_transformers import MaskedLMLoss, RetroMAELoss

    torch.manual_seed(seed)
    model = SentenceTransformer(args.model, device=args.device)
    evaluation_length = model.max_seq_length
    model.max_seq_length = args.max_length
    documents = Dataset.from_dict({"text": corpus_texts(Path(args.beir_root) / dataset)})
    if arm == "masked_lm":
        train_dataset, loss = documents, MaskedLMLoss(model)
    elif arm == "retromae":
        train_dataset, loss = documents, RetroMAELoss(model)
    elif arm == "retromae_decoder":
        train_dataset, loss = documents, RetroMAELoss(model, encoder_mlm_weight=0.0)
    elif arm == "retromae_mnrl":
        premises, hypotheses = snli_entailment_pairs()
        pairs = Dataset.from_dict({"anchor": premises, "positive": hypotheses})
        train_dataset = DatasetDict({"domain": documents, "snli": pairs})
        loss = {"domain": RetroMAELoss(model), "snli": MultipleNegativesRankingLoss(model)}
    else:
        anchors, positives = train_pairs(Path(args.beir_root) / dataset)
        pairs = Dataset.from_dict({"anchor": anchors, "positive": positives})
        if arm == "mnrl_domain":
            train_dataset, loss = pairs, MultipleNegativesRankingLoss(model)
        else:
            train_dataset = DatasetDict({"domain": documents, "pairs": pairs})
            loss = {"domain": RetroMAELoss(model), "pairs": MultipleNegativesRankingLoss(model)}
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(folder / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        # MNRL alone has no fresh parts (sentence-transformers refuses a pattern that matches nothing).
        learning_rate_mapping={} if arm == "mnrl_domain" else {LOSS_PARAMETERS: args.loss_learning_rate},
        warmup_steps=args.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        weight_decay=0.01,
        logging_steps=max(1, args.steps // 20),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        dataloader_num_workers=args.workers,
        dataloader_pin_memory=args.device != "cpu",
        seed=seed,
        multi_dataset_batch_sampler="round_robin",  # half of the steps on each dataset
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train_dataset, loss=loss)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    model.max_seq_length = evaluation_length
    keys = ("loss", "encoder_loss", "decoder_loss", "masked_lm_loss")
    log = [{k: r[k] for k in ("step", *keys) if k in r} for r in trainer.state.log_history if "loss" in r]
    return model, {"train_seconds": round(seconds, 1), "log": log}


def write_whole(path: Path, text: str) -> None:
    """Write `text` to a staging file beside `path`, then rename it into place: a reader (another process, an
    interrupted run) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def piece_path(work: Path, dataset: str, model: str, seed: int, tag: str) -> Path:
    if model == BASE:  # the same for every budget and seed
        return work / dataset / f"{BASE}.json"
    return work / dataset / tag / f"seed{seed}" / f"{model}.json"


def piece(work: Path, dataset: str, model: str, seed: int, args) -> None:
    """One evaluated model, kept as JSON (written whole, then renamed); computed when missing."""
    path = piece_path(work, dataset, model, seed, args.tag)
    if path.is_file():
        return
    if model in NEEDS_TRAIN_PAIRS and not (Path(args.beir_root) / dataset / "qrels" / "train.tsv").is_file():
        logger.info("%s / %s: skipped (the set has no qrels/train.tsv)", dataset, model)
        return
    folder = path.with_suffix("")
    logger.info("%s / %s%s: %s", dataset, model, "" if model == BASE else f" / seed {seed}", "working")
    if model == BASE:
        from sentence_transformers import SentenceTransformer

        adapted, record = SentenceTransformer(args.model, device=args.device), {}
    else:
        adapted, record = adapt(model, dataset, seed, folder, args)
    started = time.time()
    record.update(evaluate_model(adapted, dataset, folder, args))
    record["eval_seconds"] = round(time.time() - started, 1)
    record["machine"] = args.machine or machine_name(args.device)
    write_whole(path, json.dumps(record) + "\n")
    logger.info("%s / %s: nDCG@10 %.4f, STS-B %.4f", dataset, model, record["ndcg_at_10"], record["sts_spearman"])
    del adapted
    gc.collect()


# ----------------------------------------------------------------------------------------------- report


def paired_deltas(a: dict[int, dict], b: dict[int, dict], seeds: list[int], gold: list[float], args) -> tuple:
    """Paired differences a - b x100 with 95% intervals (`paired_bootstrap.py`), seed by seed over `seeds`:
    nDCG@10 over the queries, and STS-B cosine Spearman over the sentence pairs."""
    import numpy as np

    queries = sorted(b[seeds[0]]["per_query_ndcg_at_10"])
    retrieval = paired_bootstrap(
        [
            ([a[s]["per_query_ndcg_at_10"][q] for q in queries], [b[s]["per_query_ndcg_at_10"][q] for q in queries])
            for s in seeds
        ],
        "retrieval",
        args.bootstrap,
        np.random.default_rng(0),
    )
    sts = paired_bootstrap(
        [(a[s]["sts_cosine"], b[s]["sts_cosine"], gold) for s in seeds],
        "sts",
        max(200, args.bootstrap // 5),  # a Spearman per replicate and seed: fewer replicates
        np.random.default_rng(0),
    )
    return retrieval, sts


def compare(base: dict, adapted: dict[int, dict], gold: list[float], args) -> dict:
    """An arm (its seeds) against the unadapted model: means, paired differences x100 with 95% intervals."""
    seeds = sorted(adapted)
    queries = sorted(base["per_query_ndcg_at_10"])
    retrieval, sts = paired_deltas(adapted, dict.fromkeys(seeds, base), seeds, gold, args)
    mean_difference = [
        statistics.fmean(adapted[s]["per_query_ndcg_at_10"][q] for s in seeds) - base["per_query_ndcg_at_10"][q]
        for q in queries
    ]
    ndcg = [adapted[s]["ndcg_at_10"] for s in seeds]
    sts_scores = [adapted[s]["sts_spearman"] for s in seeds]
    return {
        "seeds": seeds,
        "ndcg_at_10": statistics.fmean(ndcg),
        "ndcg_at_10_per_seed": ndcg,
        "ndcg_delta": retrieval,
        "queries": len(queries),
        "queries_better": sum(d > 0 for d in mean_difference),
        "queries_worse": sum(d < 0 for d in mean_difference),
        "sts_spearman": statistics.fmean(sts_scores),
        "sts_spearman_per_seed": sts_scores,
        "sts_delta": sts,
        "train_seconds": statistics.fmean(adapted[s]["train_seconds"] for s in seeds),
        "machines": sorted({adapted[s].get("machine", "not recorded") for s in seeds}),
        "log": {s: adapted[s]["log"] for s in seeds},
    }


# Which arm is better than which: RetroMAE against the masked-LM baseline, and what the contrastive half adds.
ARM_COMPARISONS = (
    ("retromae", "masked_lm"),
    ("retromae_decoder", "retromae"),
    ("retromae_mnrl", "retromae"),
    ("retromae_mnrl_domain", "mnrl_domain"),  # does RetroMAE add to a few labelled in-domain pairs?
)


def arm_comparisons(pieces: dict[str, dict[str, dict[int, dict]]], gold: list[float], args) -> list[dict]:
    """Paired differences between arms (queries shared; the seeds of both arms paired by their number)."""
    rows = []
    for dataset, models in pieces.items():
        for arm_a, arm_b in ARM_COMPARISONS:
            a, b = models.get(arm_a, {}), models.get(arm_b, {})
            seeds = [seed for seed in args.seeds if seed in a and seed in b]
            if not seeds:
                continue
            retrieval, sts = paired_deltas(a, b, seeds, gold, args)
            rows.append(
                {
                    "dataset": dataset,
                    "comparison": f"{arm_a} - {arm_b}",
                    "seeds": seeds,
                    "ndcg_delta": retrieval,
                    "sts_delta": sts,
                }
            )
    return rows


def load_pieces(work: Path, args) -> dict[str, dict[str, dict[int, dict]]]:
    """`{dataset: {model: {seed: piece}}}` for what exists (the unadapted model under seed 0)."""
    pieces = {}
    for dataset in args.datasets:
        models = {}
        for model in [BASE, *ARMS]:
            found = {}
            for seed in [0] if model == BASE else args.seeds:
                path = piece_path(work, dataset, model, seed, args.tag)
                if path.is_file():
                    found[seed] = json.loads(path.read_text(encoding="utf-8"))
            if found:
                models[model] = found
        pieces[dataset] = models
    return pieces


def read_sts_gold() -> list[float]:
    from retromae_hf.evaluation import load_sts_file

    return list(load_sts_file(STS_TEST).score)


def _spread(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def _interval(entry: dict) -> str:
    return f"{entry['difference']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}]"


def _train_time(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def report(work: Path, args, command: str) -> dict:
    results = {
        "command": command,
        "tag": args.tag,
        "settings": {
            key: getattr(args, key)
            for key in (
                "model",
                "datasets",
                "steps",
                "batch_size",
                "max_length",
                "learning_rate",
                "loss_learning_rate",
                "warmup_ratio",
                "seeds",
                "bf16",
            )
        },
        "bootstrap_resamples": args.bootstrap,
        "datasets": {},
    }
    epochs = {d: args.steps * args.batch_size / len(corpus_texts(Path(args.beir_root) / d)) for d in args.datasets}
    lines = [
        f"# Domain adaptation of all-MiniLM-L6-v2: results ({args.tag})",
        "",
        f"Command: `{command}`",
        "",
        f"Budget per arm, dataset and seed: {args.steps} steps x {args.batch_size} texts, truncated to "
        f"{args.max_length} tokens ("
        + ", ".join(f"{d}: {e:.2g} passes over its documents" for d, e in epochs.items())
        + f"); learning rate {args.learning_rate:g} (model) and {args.loss_learning_rate:g} (the loss's decoder and "
        f"head), warm-up {args.warmup_ratio:.0%}, {'bf16 autocast' if args.bf16 else 'fp32'}, seeds "
        f"{', '.join(map(str, args.seeds))}. `retromae_mnrl` spends half of its steps on SNLI pairs (round robin).",
        "",
        "Scores x 100 (mean ± standard deviation over the seeds). Δ: adapted minus unadapted, mean over the seeds; "
        "[95% interval] from a paired bootstrap resampling the seeds and the queries (nDCG@10) or sentence pairs "
        "(STS-B); per seed: Δ of each seed alone. better / worse: test queries whose nDCG@10, averaged over the "
        "seeds, went up / down. train: wall time of one adaptation (mean over the seeds).",
        "",
        "| dataset | model | seeds | nDCG@10 | Δ nDCG@10 [95% CI] | Δ per seed | better / worse | STS-B | "
        "Δ STS-B [95% CI] | train |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pieces = load_pieces(work, args)
    gold = read_sts_gold()
    machines = set()
    for dataset, models in pieces.items():
        if BASE not in models:
            continue
        base = models[BASE][0]
        machines.add(base.get("machine", "not recorded"))
        entry = {BASE: {"ndcg_at_10": base["ndcg_at_10"], "sts_spearman": base["sts_spearman"]}}
        lines.append(
            f"| {dataset} | {BASE} | | {100 * base['ndcg_at_10']:.2f} | | | | {100 * base['sts_spearman']:.2f} | | |"
        )
        for arm in ARMS:
            if arm not in models:
                continue
            row = compare(base, models[arm], gold, args)
            machines.update(row["machines"])
            entry[arm] = row
            per_seed = ", ".join(f"{item['difference']:+.2f}" for item in row["ndcg_delta"]["per_seed"])
            lines.append(
                f"| {dataset} | {arm} | {len(row['seeds'])} | {_spread(row['ndcg_at_10_per_seed'])} | "
                f"{_interval(row['ndcg_delta'])} | {per_seed} | {row['queries_better']} / {row['queries_worse']} "
                f"(of {row['queries']}) | {_spread(row['sts_spearman_per_seed'])} | {_interval(row['sts_delta'])} | "
                f"{_train_time(row['train_seconds'])} |"
            )
        results["datasets"][dataset] = entry
    if not results["datasets"]:
        raise SystemExit(
            f"error: no unadapted piece under {work} for {', '.join(args.datasets)}: nothing to report (is --work "
            "the folder the pieces were written to?); no results file was written"
        )
    results["comparisons"] = arm_comparisons(pieces, gold, args)
    lines += [
        "",
        "Arms against each other (Δ x100 [95% CI], same bootstrap; seeds paired by number):",
        "",
        "| dataset | comparison | seeds | Δ nDCG@10 [95% CI] | Δ STS-B [95% CI] |",
        "|---|---|---:|---:|---:|",
    ]
    for row in results["comparisons"]:
        lines.append(
            f"| {row['dataset']} | {row['comparison']} | {len(row['seeds'])} | {_interval(row['ndcg_delta'])} | "
            f"{_interval(row['sts_delta'])} |"
        )
    results["machines"] = sorted(machines)
    lines += ["", f"Machine: {'; '.join(sorted(machines))}.", "", "Arms:", ""]
    present = {arm for entry in results["datasets"].values() for arm in entry}
    lines += [f"- `{arm}`: {label}" for arm, label in ARMS.items() if arm in present]
    output = Path(args.output)
    write_whole(output.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    write_whole(output.with_suffix(".md"), "\n".join(lines) + "\n")
    return results


def reproducing_command(args: argparse.Namespace) -> str:
    """The command that computes these results: the settings that differ from the defaults, without the
    bookkeeping flags (where pieces and pages go, which process computes what, report-only)."""
    defaults = vars(parse_args(["--tag", args.tag]))
    bookkeeping = (
        "work",
        "output",
        "report_only",
        "no_report",
        "models",
        "device",
        "workers",
        "machine",
        "eval_batch_size",
    )
    parts = ["python", "benchmarks/domain_adaptation.py"] + (["--tag", args.tag] if args.tag != "base" else [])
    for key, value in vars(args).items():
        if key in bookkeeping or key == "tag" or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag)  # a switch: differs from its default only when on
        else:
            parts += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.path.insert(0, str(ROOT))
    command = reproducing_command(args)
    work = Path(args.work)
    needed = [STS_TEST, SNLI_PAIRS, Path(args.model), *(Path(args.beir_root) / name for name in args.datasets)]
    missing = [path for path in needed if not path.exists()]
    if missing:
        print(f"error: missing {', '.join(map(str, missing))} (the shared data beside the checkout)", file=sys.stderr)
        return 2
    if not args.report_only:
        args.device = resolve_device(args.device)
        for dataset in args.datasets:
            for model in args.models:
                for seed in [0] if model == BASE else args.seeds:
                    piece(work, dataset, model, seed, args)
                    if not args.no_report:
                        report(work, args, command)  # the page is current after every piece
    if args.no_report:
        return 0
    report(work, args, command)
    print(Path(args.output).with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
