"""Domain adaptation of a sentence-transformers model from unlabelled documents: RetroMAELoss vs masked-LM.

For each BEIR folder (default: the shared SciFact and CISI), `all-MiniLM-L6-v2` is adapted on that set's
*documents only* (titles and abstracts; no queries, no relevance judgements) with the same budget in three arms:

- ``retromae``:       `RetroMAELoss` on the documents;
- ``masked_lm``:      `MaskedLMLoss` on the documents (the usual "continue masked-LM pre-training" baseline: the
                      same masks and head, no decoder);
- ``retromae_mnrl``:  `RetroMAELoss` on the documents and `MultipleNegativesRankingLoss` on SNLI entailment pairs
                      in one run (a dict of datasets and losses, round robin: half of the steps each).

Every model, the unadapted one included, is scored with `retromae_hf.evaluation.evaluate` (mteb) on the set's test
queries (nDCG@10) and on STS-B test (Spearman of cosine similarities), with paired bootstrap 95% intervals of the
difference to the unadapted model: per query for retrieval, per sentence pair for STS-B.

Finished pieces are kept under the work folder; rerunning the same command skips them (an interrupted piece starts
over). `--report-only` rebuilds the JSON and Markdown results from what exists.

    python benchmarks/domain_adaptation.py                         # the default budget (see --steps)
    python benchmarks/domain_adaptation.py --steps 20 --datasets cisi --work runs/da-smoke --output /tmp/da
    python benchmarks/domain_adaptation.py --report-only
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETROMAE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
STS_TEST = DATA / "sts" / "stsbenchmark" / "sts-test.tsv"
SNLI_PAIRS = DATA / "pairs" / "snli_devtest" / "snli_devtest_pairs.tsv"

ARMS = {
    "retromae": "RetroMAELoss on the documents",
    "masked_lm": "MaskedLMLoss on the documents (baseline)",
    "retromae_mnrl": "RetroMAELoss on the documents + MNRL on SNLI pairs",
}
BASE = "unadapted"
# The loss's own, freshly initialised parts (decoder, masked-LM head, embedding adapter) get their own learning rate.
LOSS_PARAMETERS = r"(^|\.)(decoder|head|embedding_adapter)\."

logger = logging.getLogger("domain_adaptation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--datasets", nargs="+", default=["cisi", "scifact"], help="BEIR folders under --beir-root")
    p.add_argument("--beir-root", default=str(DATA / "beir"))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    # Budget. Default: 60 steps of 16 documents (960 documents, truncated to 128 tokens) per arm and dataset:
    # 10-25 minutes of training per piece on the project's 2-core CPU shared with other work, and 20-25 minutes
    # to evaluate SciFact's 5,183 documents per model (about four hours in all).
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128, help="training truncation (evaluation uses the model's)")
    p.add_argument("--learning-rate", type=float, default=5e-5, help="the model's parameters")
    p.add_argument("--loss-learning-rate", type=float, default=5e-4, help="the loss's fresh decoder and head")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--work", default=str(ROOT / "runs" / "domain_adaptation"), help="kept pieces (ignored by git)")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "domain_adaptation"), help="results stem")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- data


def corpus_texts(folder: Path) -> list[str]:
    """The set's documents as the retrieval evaluation encodes them: title and text."""
    texts = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                text = f"{row.get('title', '')} {row.get('text', '')}".strip()
                if text:
                    texts.append(text)
    return texts


def snli_entailment_pairs() -> tuple[list[str], list[str]]:
    premises, hypotheses = [], []
    with open(SNLI_PAIRS, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["label"] == "entailment":
                premises.append(row["premise"])
                hypotheses.append(row["hypothesis"])
    return premises, hypotheses


def read_qrels(folder: Path) -> dict[str, dict[str, int]]:
    from retromae_hf.evaluation import read_qrels as read

    return read(folder / "qrels" / "test.tsv")


def read_sts() -> tuple[list[str], list[str], list[float]]:
    first, second, gold = [], [], []
    with open(STS_TEST, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            first.append(row["sentence1"])
            second.append(row["sentence2"])
            gold.append(float(row["score"]))
    return first, second, gold


# ----------------------------------------------------------------------------------------------- scores


def ndcg_at_10(ranking: dict[str, float], relevant: dict[str, int]) -> float:
    """nDCG@10 with linear gains (trec_eval's, as mteb's pytrec_eval): relevance judgements are 0/1 here."""
    ranked = sorted(ranking.items(), key=lambda item: -item[1])[:10]
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, (doc, _) in enumerate(ranked))
    ideal = sorted((grade for grade in relevant.values() if grade > 0), reverse=True)[:10]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def per_query_ndcg(predictions_file: Path, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    predictions = json.loads(predictions_file.read_text(encoding="utf-8"))["default"]["test"]
    return {query: ndcg_at_10(predictions.get(query, {}), relevant) for query, relevant in qrels.items()}


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def paired_bootstrap(differences, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of per-item differences, items resampled with replacement."""
    import numpy as np

    values = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def sts_bootstrap(gold, base, adapted, resamples: int, seed: int) -> tuple[float, float]:
    """95% interval of Spearman(adapted) - Spearman(base), sentence pairs resampled with replacement together."""
    import numpy as np
    from scipy.stats import rankdata

    gold, base, adapted = (np.asarray(x, dtype=float) for x in (gold, base, adapted))
    rng = np.random.default_rng(seed)

    def rho(x, y):  # Spearman per resample row: Pearson correlation of (average) ranks
        rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        return (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))

    differences = []
    for start in range(0, resamples, 500):  # chunks keep the rank matrices small
        index = rng.integers(0, len(gold), size=(min(500, resamples - start), len(gold)))
        differences.append(rho(gold[index], adapted[index]) - rho(gold[index], base[index]))
    low, high = np.percentile(np.concatenate(differences), [2.5, 97.5])
    return float(low), float(high)


def evaluate_model(model, dataset: str, folder: Path, args) -> dict:
    """nDCG@10 (mteb, and per query from mteb's own rankings) and STS-B (mteb, and per pair)."""
    import torch

    from retromae_hf.evaluation import PREDICTIONS_DIR, evaluate

    summary = evaluate(
        model,
        [Path(args.beir_root) / dataset, STS_TEST],
        output_dir=folder / "mteb",
        batch_size=args.eval_batch_size,
        show_progress_bar=False,
        save_predictions=True,
    )
    predictions = folder / "mteb" / PREDICTIONS_DIR
    by_type = {result["task_type"]: result for result in summary["results"]}
    retrieval, sts = by_type["Retrieval"], by_type["STS"]
    per_query = per_query_ndcg(
        predictions / f"{retrieval['task']}_predictions.json", read_qrels(Path(args.beir_root) / dataset)
    )
    mean = sum(per_query.values()) / len(per_query)
    # The per-query scores must average to mteb's own nDCG@10, or the bootstrap would describe another metric.
    if abs(mean - retrieval["main_score"]) > 1e-3:
        raise RuntimeError(f"per-query nDCG@10 averages {mean:.5f}, mteb reports {retrieval['main_score']:.5f}")
    first, second, gold = read_sts()
    with torch.no_grad():
        a = model.encode(first, batch_size=args.eval_batch_size, convert_to_tensor=True, normalize_embeddings=True)
        b = model.encode(second, batch_size=args.eval_batch_size, convert_to_tensor=True, normalize_embeddings=True)
    cosine = (a * b).sum(-1).tolist()
    if abs(spearman(gold, cosine) - sts["metrics"]["cosine_spearman"]) > 1e-3:
        raise RuntimeError("per-pair cosine similarities do not reproduce mteb's STS-B cosine Spearman")
    return {
        "ndcg_at_10": retrieval["main_score"],
        "per_query_ndcg_at_10": per_query,
        "sts_spearman": sts["metrics"]["cosine_spearman"],
        "sts_cosine": cosine,
    }


# ----------------------------------------------------------------------------------------------- training


def adapt(arm: str, dataset: str, folder: Path, args) -> tuple[object, dict]:
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

    torch.manual_seed(args.seed)
    model = SentenceTransformer(args.model, device="cpu")
    evaluation_length = model.max_seq_length
    model.max_seq_length = args.max_length
    documents = Dataset.from_dict({"text": corpus_texts(Path(args.beir_root) / dataset)})
    if arm == "masked_lm":
        train_dataset, loss = documents, MaskedLMLoss(model)
    elif arm == "retromae":
        train_dataset, loss = documents, RetroMAELoss(model)
    else:
        premises, hypotheses = snli_entailment_pairs()
        pairs = Dataset.from_dict({"anchor": premises, "positive": hypotheses})
        train_dataset = DatasetDict({"domain": documents, "snli": pairs})
        loss = {"domain": RetroMAELoss(model), "snli": MultipleNegativesRankingLoss(model)}
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(folder / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        learning_rate_mapping={LOSS_PARAMETERS: args.loss_learning_rate},
        warmup_steps=args.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        weight_decay=0.01,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        seed=args.seed,
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


# ----------------------------------------------------------------------------------------------- pieces and report


def piece(work: Path, dataset: str, arm: str, args) -> dict:
    """One evaluated model, kept as JSON; computed when missing."""
    path = work / dataset / f"{arm}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    folder = work / dataset / arm
    logger.info("%s / %s: %s", dataset, arm, "evaluating" if arm == BASE else "adapting")
    if arm == BASE:
        from sentence_transformers import SentenceTransformer

        model, record = SentenceTransformer(args.model, device="cpu"), {}
    else:
        model, record = adapt(arm, dataset, folder, args)
    started = time.time()
    record.update(evaluate_model(model, dataset, folder, args))
    record["eval_seconds"] = round(time.time() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    del model
    gc.collect()
    return record


def compare(base: dict, adapted: dict, args) -> dict:
    queries = sorted(base["per_query_ndcg_at_10"])
    differences = [adapted["per_query_ndcg_at_10"][q] - base["per_query_ndcg_at_10"][q] for q in queries]
    gold = read_sts()[2]
    return {
        "ndcg_at_10": adapted["ndcg_at_10"],
        "ndcg_delta": adapted["ndcg_at_10"] - base["ndcg_at_10"],
        "ndcg_delta_ci95": paired_bootstrap(differences, args.bootstrap, args.seed),
        "queries": len(queries),
        "queries_better": sum(d > 0 for d in differences),
        "queries_worse": sum(d < 0 for d in differences),
        "sts_spearman": adapted["sts_spearman"],
        "sts_delta": adapted["sts_spearman"] - base["sts_spearman"],
        "sts_delta_ci95": sts_bootstrap(
            gold, base["sts_cosine"], adapted["sts_cosine"], args.bootstrap // 5, args.seed
        ),
    }


def report(work: Path, args, command: str) -> dict:
    results = {
        "command": command,
        "settings": {
            key: getattr(args, key)
            for key in ("model", "datasets", "arms", "steps", "batch_size", "max_length", "learning_rate")
        }
        | {"loss_learning_rate": args.loss_learning_rate, "warmup_ratio": args.warmup_ratio, "seed": args.seed},
        "datasets": {},
    }
    lines = [
        "# Domain adaptation of all-MiniLM-L6-v2: results",
        "",
        f"Command: `{command}`",
        "",
        f"Budget per arm and dataset: {args.steps} steps x {args.batch_size} texts, truncated to {args.max_length} "
        f"tokens; learning rate {args.learning_rate:g} (model) and {args.loss_learning_rate:g} (the loss's decoder "
        f"and head), warm-up {args.warmup_ratio:.0%}, one seed ({args.seed}). `retromae_mnrl` spends half of its "
        "steps on SNLI pairs (round robin).",
        "",
        "Scores x 100. Δ: adapted minus unadapted; [95% interval] from a paired bootstrap over queries (nDCG@10) or "
        "sentence pairs (STS-B). better/worse: test queries whose nDCG@10 went up/down.",
        "",
        "| dataset | model | nDCG@10 | Δ nDCG@10 [95% CI] | better / worse | STS-B | Δ STS-B [95% CI] | train |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset in args.datasets:
        base_path = work / dataset / f"{BASE}.json"
        if not base_path.is_file():
            continue
        base = json.loads(base_path.read_text(encoding="utf-8"))
        entry = {BASE: {"ndcg_at_10": base["ndcg_at_10"], "sts_spearman": base["sts_spearman"]}}
        lines.append(
            f"| {dataset} | {BASE} | {100 * base['ndcg_at_10']:.2f} | | | {100 * base['sts_spearman']:.2f} | | |"
        )
        for arm in args.arms:
            path = work / dataset / f"{arm}.json"
            if not path.is_file():
                continue
            adapted = json.loads(path.read_text(encoding="utf-8"))
            row = compare(base, adapted, args) | {"train_seconds": adapted["train_seconds"], "log": adapted["log"]}
            entry[arm] = row
            low, high = row["ndcg_delta_ci95"]
            sts_low, sts_high = row["sts_delta_ci95"]
            lines.append(
                f"| {dataset} | {arm} | {100 * row['ndcg_at_10']:.2f} | {100 * row['ndcg_delta']:+.2f} "
                f"[{100 * low:+.2f}, {100 * high:+.2f}] | {row['queries_better']} / {row['queries_worse']} "
                f"(of {row['queries']}) | {100 * row['sts_spearman']:.2f} | {100 * row['sts_delta']:+.2f} "
                f"[{100 * sts_low:+.2f}, {100 * sts_high:+.2f}] | {row['train_seconds'] / 60:.0f} min |"
            )
        results["datasets"][dataset] = entry
    lines += ["", "Arms:", ""] + [f"- `{arm}`: {label}" for arm, label in ARMS.items()]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results


def reproducing_command(args: argparse.Namespace) -> str:
    """The command that computes these results: the settings that differ from the defaults, without the
    bookkeeping flags (where pieces and pages go, report-only)."""
    defaults = vars(parse_args([]))
    parts = ["python", "benchmarks/domain_adaptation.py"]
    for key, value in vars(args).items():
        if key in ("work", "output", "report_only") or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
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
        for dataset in args.datasets:
            for arm in [BASE, *args.arms]:
                piece(work, dataset, arm, args)
                report(work, args, command)  # the page is current after every piece
    report(work, args, command)
    print(Path(args.output).with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
