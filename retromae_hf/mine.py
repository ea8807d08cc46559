"""Hard negatives for (query, positive) pairs, mined with a sentence-transformers model (`retromae-hf mine`).

The paper's stage 2, like every strong retriever trained since, learns from hard negatives: passages a retriever
ranks high for a query that are not its answer. A user with (query, positive) pairs only, such as a BEIR folder's
training qrels, gets them here: the pairs are read with the package's readers (`data.load_pairs`, which also
reads DPR and Tevatron files, or `data.load_beir_training_pairs` plus the folder's whole corpus as candidates),
embedded with any sentence-transformers model or an export of this package (`export.load_sentence_transformer`),
and mined by sentence-transformers' own `util.mine_hard_negatives`, whose range, margin, score, sampling and count
options are exposed as they are (faiss is used when it is installed).

The result is a folder holding `pairs.jsonl`, in Tevatron's layout (`{query_id, query, positive_passages: [{text}],
negative_passages: [{text}, ...]}`), which `train --stage 2 --pairs` reads unchanged (the negatives are found
without `--negative-columns`), and `mining.json`, the record of how it was mined. It is
written through `outputs.staged_output`: a folder that holds anything is never replaced unless it is an earlier
output of `mine` and `--overwrite` is given.

This room imports the data readers and the model loader (lazily: `retromae-hf mine --help` reads `MiningOptions`
without loading datasets or torch); training knows nothing of it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import MissingInputError, UserError
from .outputs import check_output, staged_output

logger = logging.getLogger(__name__)

__all__ = ["MINED_PAIRS_FILE", "MINING_RECORD_FILE", "MiningError", "MiningOptions", "mine_hard_negatives"]

#: The pairs file a mining run writes (Tevatron's layout, read by `train --stage 2 --pairs`).
MINED_PAIRS_FILE = "pairs.jsonl"
#: The record of how it was mined: model, data, options, counts, the score statistics sentence-transformers reports.
MINING_RECORD_FILE = "mining.json"

SAMPLING_STRATEGIES = ("top", "random")


class MiningError(UserError, ValueError):
    """Mining options that cannot work together, or data from which no negative could be mined."""


@dataclass
class MiningOptions:
    """The options of sentence-transformers' `mine_hard_negatives` that `mine` exposes (same names, same meaning).

    Candidates are the passages ranked `range_min` to `range_max` for a query by cosine similarity (the query's
    own positives excluded); `max_score`, `min_score`, `absolute_margin` and `relative_margin` drop candidates too
    close to (or too far from) the query or its positive; `sampling_strategy` "top" keeps the best
    `num_negatives` of those left, "random" draws them (with `seed`). A pair for which fewer than `num_negatives`
    candidates are left is dropped (and counted in the record).
    """

    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    sampling_strategy: str = "top"
    batch_size: int = 32
    use_faiss: bool | None = None
    seed: int = 42

    def check(self) -> None:
        """Refuse values sentence-transformers would refuse later (after the model was loaded), naming the flag."""
        if self.num_negatives < 1:
            raise MiningError(f"--num-negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise MiningError(f"--range-min must be >= 0, got {self.range_min}")
        if self.range_max is not None:
            if self.range_max <= self.range_min:
                raise MiningError(
                    f"--range-max ({self.range_max}) must be larger than --range-min ({self.range_min}): candidates "
                    "are the passages ranked from range-min to range-max for each query"
                )
            if self.num_negatives > self.range_max - self.range_min:
                raise MiningError(
                    f"cannot mine {self.num_negatives} negatives per query from the "
                    f"{self.range_max - self.range_min} candidates ranked {self.range_min} to {self.range_max}: "
                    "lower --num-negatives or --range-min, or raise --range-max"
                )
        for name in ("max_score", "min_score", "absolute_margin", "relative_margin"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise MiningError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise MiningError(
                f"--sampling must be one of {', '.join(SAMPLING_STRATEGIES)}, got {self.sampling_strategy!r}"
            )
        if self.batch_size < 1:
            raise MiningError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.use_faiss and importlib.util.find_spec("faiss") is None:
            raise MiningError("faiss was asked for but is not installed: `pip install faiss-cpu`, or leave it out")


def faiss_installed() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _is_beir_folder(data: Path) -> bool:
    return data.is_dir() and (data / "qrels").is_dir()


def read_pairs_to_mine(
    data: str | os.PathLike[str],
    *,
    split: str = "train",
    query_column: str = "query",
    positive_column: str = "positive",
) -> tuple[Any, list[str] | None]:
    """The (query, positive) pairs to mine for, and the candidate corpus (None: the positives themselves).

    A BEIR folder (`qrels/` inside) gives the judged pairs of `qrels/<split>.tsv` and, as candidates, every
    document of its `corpus.jsonl` (title + text, as everywhere in the package); any other source is read by
    `load_pairs` (CSV/TSV/JSON(L)/Parquet files with `query_column` and `positive_column`, DPR and Tevatron files;
    their own negatives are set aside), and the candidates are the positives of all pairs.
    """
    from .data import load_beir_training_pairs, load_pairs

    path = Path(data).expanduser()
    if not path.exists():
        raise MissingInputError(f"--data {data}: no such file or folder (pairs to mine for, or a BEIR folder)")
    if _is_beir_folder(path):
        pairs = load_beir_training_pairs(path, split=split)
        corpus = _beir_corpus(path / "corpus.jsonl")
    else:
        pairs = load_pairs(path, query_column=query_column, positive_column=positive_column)
        corpus = None
    return pairs.select_columns(["query", "positive"]), corpus


def _beir_corpus(path: Path) -> list[str]:
    """Every document text of a BEIR `corpus.jsonl` (duplicates included; mining de-duplicates them)."""
    from tqdm.auto import tqdm

    from .data import DataError, passage_text

    texts = []
    with path.open("rb") as handle:
        for number, raw in enumerate(tqdm(handle, desc=f"Reading {path.name}", unit=" lines", disable=None), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(f"{path}, line {number}: invalid JSON ({error})") from error
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            text = passage_text(record.get("title"), record.get("text"))
            if text:
                texts.append(text)
    return texts


def _tevatron_rows(mined: Any, num_negatives: int) -> list[dict[str, Any]]:
    """`mine_hard_negatives`' n-tuple rows (query, positive, negative_1..n, scores) in Tevatron's layout."""
    rows = []
    negative_columns = [f"negative_{i}" for i in range(1, num_negatives + 1)]
    for index, row in enumerate(mined):
        rows.append(
            {
                "query_id": str(index),
                "query": row["query"],
                "positive_passages": [{"title": "", "text": row["positive"]}],
                "negative_passages": [{"title": "", "text": row[column]} for column in negative_columns],
            }
        )
    return rows


def _score_summary(mined: Any) -> dict[str, float]:
    """Mean cosine similarity of the queries to their positives and to their mined negatives."""
    scores = mined["scores"] if "scores" in mined.column_names else []
    positives = [row[0] for row in scores]
    negatives = [value for row in scores for value in row[1:]]
    summary = {}
    if positives:
        summary["mean_positive_score"] = round(sum(positives) / len(positives), 4)
    if negatives:
        summary["mean_negative_score"] = round(sum(negatives) / len(negatives), 4)
    return summary


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("retromae-hf", "sentence-transformers", "faiss-cpu", "faiss-gpu"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return versions


def mine_hard_negatives(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    split: str = "train",
    query_column: str = "query",
    positive_column: str = "positive",
    options: MiningOptions | None = None,
    overwrite: bool = False,
) -> Path:
    """Mine hard negatives for the pairs in `data` with `model`; write `pairs.jsonl` and `mining.json` into
    `output_dir` and return it.

    Args:
        model: a sentence-transformers model (folder or Hub id), an export of this package, or a RetroMAE
            checkpoint (loaded with CLS pooling).
        data: a pairs file or folder (what `load_pairs` reads) or a BEIR folder (with `qrels/<split>.tsv`).
        output_dir: the folder to write; it must not hold anything, unless it is an earlier output of `mine` and
            `overwrite` is set.
        split: the qrels split of a BEIR folder.
        query_column, positive_column: the columns of a pairs file (ignored for BEIR, DPR and Tevatron data).
        options: `MiningOptions` (sentence-transformers' defaults otherwise, 3 negatives per pair).
        overwrite: replace an earlier output of `mine` at `output_dir`.

    Raises:
        MiningError: options that cannot work together, or no pair with enough negatives.
        DataError, MissingInputError, OutputExistsError: bad data or destination; all checked before the model
            is loaded.
    """
    options = options or MiningOptions()
    options.check()
    destination = check_output(
        output_dir, overwrite=overwrite, inputs=[data, model], what="mining folder (--output-dir)", command="mine"
    )
    pairs, corpus = read_pairs_to_mine(data, split=split, query_column=query_column, positive_column=positive_column)
    use_faiss = faiss_installed() if options.use_faiss is None else options.use_faiss

    from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

    from .export import load_sentence_transformer

    encoder = load_sentence_transformer(model)
    random.seed(options.seed)  # sentence-transformers draws "random" negatives with Python's `random`
    report = io.StringIO()
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(report):  # its statistics table goes to the log and the record, not stdout
            mined = st_mine_hard_negatives(
                pairs,
                encoder,
                anchor_column_name="query",
                positive_column_name="positive",
                corpus=corpus,
                range_min=options.range_min,
                range_max=options.range_max,
                max_score=options.max_score,
                min_score=options.min_score,
                absolute_margin=options.absolute_margin,
                relative_margin=options.relative_margin,
                num_negatives=options.num_negatives,
                sampling_strategy=options.sampling_strategy,
                output_format="n-tuple",
                output_scores=True,
                batch_size=options.batch_size,
                use_faiss=use_faiss,
                verbose=True,
            )
    except ValueError as error:  # its own checks of options against the data (e.g. range-max past the corpus)
        raise MiningError(f"sentence-transformers' mine_hard_negatives refused the options: {error}") from error
    seconds = time.monotonic() - started
    report_lines = [line.rstrip() for line in report.getvalue().splitlines() if line.strip()]
    for line in report_lines:
        logger.info("mine_hard_negatives: %s", line)
    if len(mined) == 0:
        raise MiningError(
            f"no pair of {data} got {options.num_negatives} negatives: the candidates left after --range-min, "
            "--range-max and the score and margin limits are too few. Lower --num-negatives, loosen the limits, or "
            "mine on more data (a BEIR folder's whole corpus is used as candidates)."
        )
    dropped = len(pairs) - len(mined)
    if dropped:
        logger.warning(
            "%d of %d pairs got fewer than %d negatives and were left out", dropped, len(pairs), options.num_negatives
        )
    record = {
        "model": str(model),
        "data": str(data),
        "split": split if _is_beir_folder(Path(data).expanduser()) else None,
        "candidates": "the BEIR folder's corpus.jsonl" if corpus is not None else "the positives of all pairs",
        "candidate_count": len(corpus) if corpus is not None else len(set(pairs["positive"])),
        "options": {**asdict(options), "use_faiss": use_faiss},
        "similarity": "cosine (mine_hard_negatives normalises the embeddings)",
        "pairs_in": len(pairs),
        "pairs_out": len(mined),
        "pairs_left_out": dropped,
        **_score_summary(mined),
        "seconds": round(seconds, 2),
        "sentence_transformers_report": report_lines,
        "versions": _package_versions(),
        "pairs_file": MINED_PAIRS_FILE,
        "pairs_file_layout": "Tevatron (query, positive_passages, negative_passages); train --stage 2 --pairs reads it",
    }
    rows = _tevatron_rows(mined, options.num_negatives)
    with staged_output(
        destination, overwrite=overwrite, inputs=[data, model], what="mining folder (--output-dir)", command="mine"
    ) as staging:
        with (staging / MINED_PAIRS_FILE).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (staging / MINING_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("mined %d negatives for each of %d pairs into %s", options.num_negatives, len(rows), destination)
    return destination
