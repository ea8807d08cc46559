"""Score a sentence-embedding model with `mteb`, on local data folders or on named MTEB tasks.

Two kinds of local data are turned into mteb tasks at run time, so that nothing has to be downloaded:

* a BEIR-format retrieval folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) becomes a subclass of
  mteb's `AbsTaskRetrieval` whose data is read from the folder instead of the Hugging Face Hub;
* an STS file (``.tsv``, ``.csv`` or ``.jsonl`` with the columns ``sentence1``, ``sentence2``, ``score``) becomes a
  subclass of mteb's `AbsTaskSTS`;
* a classification folder (``train.jsonl`` + ``test.jsonl``, ``dev.jsonl`` optional, or one ``all.jsonl``; rows
  ``{"text", "label"}``) becomes a subclass of mteb's `AbsTaskClassification` that trains a logistic regression on
  the frozen embeddings of the whole training split (or of each fold of a stratified 10-fold cross-validation),
  as SentEval scores its transfer tasks. ``senteval=DIR`` stands for DIR's folders ``mr``, ``cr``, ``subj``,
  ``mpqa``, ``sst2`` and ``trec``.

Anything else is looked up as an MTEB task name with `mteb.get_tasks` (that needs the Hub, or a warm datasets
cache). The scores are computed by mteb itself; this module only builds the tasks, runs `mteb.evaluate`, lets mteb
write its usual result JSONs, and condenses them into ``summary.json`` / ``summary.md`` (see `evaluate`).

Everything works offline (``HF_HUB_OFFLINE=1``) for local tasks and a local model folder. The module imports
nothing from the training code of the package.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NetworkError, UserError, hub_unreachable_reason, is_network_error, offline_fix

if TYPE_CHECKING:
    from mteb import AbsTask
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_JSON",
    "SUMMARY_MD",
    "EvaluationDataError",
    "build_classification_task",
    "evaluate",
    "expand_task_folders",
    "expand_task_groups",
    "load_classification_folder",
    "load_summary",
    "per_query_scores",
    "summary_to_markdown",
]

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
#: Sub-folder of an evaluation's output_dir where mteb writes its predictions (``evaluate(save_predictions=True)``).
PREDICTIONS_DIR = "predictions"

#: Suffixes read as STS files; any other existing file is refused with a clear message.
STS_SUFFIXES = (".tsv", ".csv", ".jsonl")
#: The rank cut-offs asked of mteb for local retrieval tasks (1000 is added when the corpus has more documents).
RETRIEVAL_K_VALUES = (1, 3, 5, 10, 20, 50, 100)
#: Retrieval metrics copied into the summary, in this order, when mteb reports them.
RETRIEVAL_SUMMARY_METRICS = (
    "ndcg_at_10",
    "mrr_at_10",
    "map_at_10",
    "recall_at_5",
    "recall_at_10",
    "recall_at_20",
    "recall_at_50",
    "recall_at_100",
    "recall_at_1000",
)
#: STS metrics copied into the summary, in this order.
STS_SUMMARY_METRICS = (
    "cosine_spearman",
    "cosine_pearson",
    "spearman",
    "pearson",
    "euclidean_spearman",
    "manhattan_spearman",
)
#: Classification metrics copied into the summary, in this order (F1, precision and recall macro-averaged).
CLASSIFICATION_SUMMARY_METRICS = ("accuracy", "f1", "f1_weighted", "precision", "recall", "ap")
#: The metrics shown beside the main score in ``summary.md``.
MARKDOWN_METRICS = {
    "Retrieval": ("mrr_at_10", "map_at_10", "recall_at_10", "recall_at_100"),
    "STS": ("cosine_pearson",),
    "Classification": ("f1",),
}
_SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
_MAX_NAMED_IDS = 5


class EvaluationDataError(UserError, ValueError):
    """A local evaluation file or folder is missing or malformed; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------------------------------
# Local data: reading and checking
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class BeirData:
    """A BEIR-format retrieval split read from a folder.

    Attributes:
        corpus_ids: Document ids, in file order.
        titles: Document titles ("" when absent), aligned with `corpus_ids`.
        texts: Document texts, aligned with `corpus_ids`.
        query_ids: Ids of the queries judged in the split, in ``queries.jsonl`` order.
        query_texts: Their texts, aligned with `query_ids`.
        qrels: ``{query_id: {doc_id: relevance}}`` for the split.
    """

    corpus_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    query_ids: list[str] = field(default_factory=list)
    query_texts: list[str] = field(default_factory=list)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class StsData:
    """Sentence pairs with gold similarity scores read from an STS file."""

    sentence1: list[str] = field(default_factory=list)
    sentence2: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    @property
    def min_score(self) -> float:
        """The smallest gold score in the data."""
        return min(self.score)

    @property
    def max_score(self) -> float:
        """The largest gold score in the data."""
        return max(self.score)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise EvaluationDataError(f"{path}, line {line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(obj, dict):
                raise EvaluationDataError(
                    f"{path}, line {line_number}: expected a JSON object, got {type(obj).__name__}"
                )
            yield line_number, obj


def _as_id(value: Any, path: Path, line_number: int) -> str:
    if value is None or isinstance(value, (dict, list)) or str(value) == "":
        raise EvaluationDataError(f"{path}, line {line_number}: missing or empty '_id'")
    return str(value)


def _name_some(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_NAMED_IDS])
    more = f" and {len(ids) - _MAX_NAMED_IDS} more" if len(ids) > _MAX_NAMED_IDS else ""
    return f"{shown}{more}"


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``) into ``{query_id: {doc_id: score}}``.

    Raises:
        EvaluationDataError: The file is missing, has no or a wrong header, a row without three columns, or a score
            that is not an integer.
    """
    if not path.is_file():
        raise EvaluationDataError(f"{path}: qrels file not found (a BEIR folder needs qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise EvaluationDataError(f"{path}: qrels file is empty (expected a header 'query-id corpus-id score')")
        if [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise EvaluationDataError(
                f"{path}, line 1: expected the header 'query-id<TAB>corpus-id<TAB>score', got {header!r}"
            )
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) < 3:
                raise EvaluationDataError(
                    f"{path}, line {reader.line_num}: expected 3 tab-separated columns, got {row!r}"
                )
            query_id, doc_id, raw_score = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                score_float = float(raw_score)
            except ValueError:
                raise EvaluationDataError(
                    f"{path}, line {reader.line_num}: relevance score {raw_score!r} is not a number"
                ) from None
            if not score_float.is_integer():
                raise EvaluationDataError(
                    f"{path}, line {reader.line_num}: relevance score {raw_score!r} is not an integer"
                )
            qrels.setdefault(query_id, {})[doc_id] = int(score_float)
    if not qrels:
        raise EvaluationDataError(f"{path}: qrels file has a header but no judgements")
    return qrels


def load_beir_folder(folder: str | Path, split: str = "test") -> BeirData:
    """Read and check a BEIR-format folder, keeping only the queries judged in `split`.

    Args:
        folder: A folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
            and ``qrels/<split>.tsv``.
        split: Which qrels file to evaluate. Queries that have no judgement in it are dropped (SciFact's
            ``queries.jsonl`` holds train and test queries together).

    Returns:
        The corpus, the judged queries and the qrels.

    Raises:
        EvaluationDataError: A file is missing or malformed, qrels name query or document ids that do not exist, a
            judged query has an empty text, or ids are duplicated.
    """
    folder = Path(folder)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for required in (corpus_path, queries_path):
        if not required.is_file():
            raise EvaluationDataError(
                f"{required}: file not found (a BEIR folder needs corpus.jsonl and queries.jsonl)"
            )
    qrels = read_qrels(qrels_path)

    data = BeirData()
    seen_docs: set[str] = set()
    for line_number, obj in _iter_jsonl(corpus_path):
        doc_id = _as_id(obj.get("_id"), corpus_path, line_number)
        if doc_id in seen_docs:
            raise EvaluationDataError(f"{corpus_path}, line {line_number}: duplicate document id {doc_id!r}")
        if "text" not in obj:
            raise EvaluationDataError(f"{corpus_path}, line {line_number}: document {doc_id!r} has no 'text' field")
        seen_docs.add(doc_id)
        data.corpus_ids.append(doc_id)
        data.titles.append(str(obj.get("title") or ""))
        data.texts.append(str(obj.get("text") or ""))
    if not data.corpus_ids:
        raise EvaluationDataError(f"{corpus_path}: the corpus is empty")

    all_queries: dict[str, tuple[int, str]] = {}
    for line_number, obj in _iter_jsonl(queries_path):
        query_id = _as_id(obj.get("_id"), queries_path, line_number)
        if query_id in all_queries:
            raise EvaluationDataError(f"{queries_path}, line {line_number}: duplicate query id {query_id!r}")
        all_queries[query_id] = (line_number, str(obj.get("text") or ""))

    unknown_queries = [q for q in qrels if q not in all_queries]
    if unknown_queries:
        raise EvaluationDataError(
            f"{qrels_path}: {len(unknown_queries)} query id(s) are not in {queries_path.name}: {_name_some(unknown_queries)}"
        )
    unknown_docs = sorted({d for docs in qrels.values() for d in docs if d not in seen_docs})
    if unknown_docs:
        raise EvaluationDataError(
            f"{qrels_path}: {len(unknown_docs)} corpus id(s) are not in {corpus_path.name}: {_name_some(unknown_docs)}"
        )

    for query_id, (line_number, text) in all_queries.items():
        if query_id not in qrels:
            continue
        if not text.strip():
            raise EvaluationDataError(f"{queries_path}, line {line_number}: query {query_id!r} has an empty text")
        data.query_ids.append(query_id)
        data.query_texts.append(text)
    data.qrels = {q: dict(qrels[q]) for q in data.query_ids}
    logger.info(
        "Read %s: %d documents, %d of %d queries judged in split %r, %d judgements",
        folder,
        len(data.corpus_ids),
        len(data.query_ids),
        len(all_queries),
        split,
        sum(len(d) for d in data.qrels.values()),
    )
    return data


def _sts_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yield ``(line_number, row)`` from an STS file, checking the three columns are there."""
    required = ("sentence1", "sentence2", "score")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line_number, obj in _iter_jsonl(path):
            missing = [c for c in required if c not in obj]
            if missing:
                raise EvaluationDataError(f"{path}, line {line_number}: missing STS column(s) {missing}")
            yield line_number, obj
        return
    # TSV files of STS-B and SICK have literal quote characters and no quoting at all; CSV files use standard quoting.
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if suffix == ".tsv" else (",", csv.QUOTE_MINIMAL)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            raise EvaluationDataError(f"{path}: file is empty (expected a header with sentence1, sentence2, score)")
        header = [h.strip().lstrip("\ufeff") for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise EvaluationDataError(
                f"{path}, line 1: missing STS column(s) {missing}; the header has {header} "
                f"(expected sentence1, sentence2, score)"
            )
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise EvaluationDataError(
                    f"{path}, line {reader.line_num}: expected {len(header)} columns like the header, got {len(row)}"
                )
            yield reader.line_num, dict(zip(header, row, strict=True))


def load_sts_file(path: str | Path) -> StsData:
    """Read and check an STS file with the columns ``sentence1``, ``sentence2`` and ``score``.

    ``.tsv`` files are read tab-separated with no quoting (``csv.QUOTE_NONE``), as the STS-B and SICK files are
    written; ``.csv`` files with standard CSV quoting; ``.jsonl`` files one JSON object per line. Other columns are
    ignored.

    Raises:
        EvaluationDataError: The file is missing, lacks a column, has an empty sentence, a non-numeric score (the
            message gives the line number), no rows, or only one distinct score.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationDataError(f"{path}: STS file not found")
    if path.suffix.lower() not in STS_SUFFIXES:
        raise EvaluationDataError(f"{path}: unsupported STS file type {path.suffix!r} (use one of {STS_SUFFIXES})")
    data = StsData()
    for line_number, row in _sts_rows(path):
        raw_score = row["score"]
        try:
            score = float(raw_score)
        except (TypeError, ValueError):
            raise EvaluationDataError(f"{path}, line {line_number}: score {raw_score!r} is not a number") from None
        if not math.isfinite(score):
            raise EvaluationDataError(f"{path}, line {line_number}: score {raw_score!r} is not a finite number")
        for column in ("sentence1", "sentence2"):
            if not str(row[column] or "").strip():
                raise EvaluationDataError(f"{path}, line {line_number}: empty {column}")
        data.sentence1.append(str(row["sentence1"]))
        data.sentence2.append(str(row["sentence2"]))
        data.score.append(score)
    if not data.score:
        raise EvaluationDataError(f"{path}: no sentence pairs found")
    if data.min_score == data.max_score:
        raise EvaluationDataError(f"{path}: every score is {data.min_score}; correlations need at least two values")
    logger.info("Read %s: %d pairs, scores %g..%g", path, len(data.score), data.min_score, data.max_score)
    return data


def _content_hash(*paths: Path) -> str:
    """A short content hash of the files, recorded as the dataset "revision" of a local task."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "local-sha256-" + digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------------
# Local data: mteb tasks
# --------------------------------------------------------------------------------------------------------------------


def _task_metadata(
    name: str, description: str, path: Path, revision: str, task_type: str, main_score: str, split: str
) -> Any:
    from mteb import TaskMetadata

    return TaskMetadata(
        name=name,
        description=description,
        dataset={"path": str(path), "revision": revision},
        type=task_type,
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        # Local files carry no language tag; mteb needs one, and it only labels the results.
        eval_langs=["eng-Latn"],
        main_score=main_score,
        sample_creation="found",
    )


def _class_name(prefix: str, name: str) -> str:
    return prefix + "".join(ch if ch.isalnum() else "_" for ch in name)


def build_retrieval_task(folder: str | Path, split: str = "test", name: str | None = None) -> AbsTask:
    """Build an mteb retrieval task that reads a local BEIR-format folder instead of the Hub.

    The folder is read and checked right away (see `load_beir_folder`); mteb gets the data through the task's
    ``load_data``, in the shape its own loader produces (``dataset[subset][split]`` holding ``corpus`` and
    ``queries`` as `datasets.Dataset` and ``relevant_docs`` as a dict).

    Args:
        folder: The BEIR folder.
        split: The qrels split to evaluate.
        name: Task name in the results; defaults to the folder name.

    Returns:
        An instance of a fresh `AbsTaskRetrieval` subclass, with main score ``ndcg_at_10``.
    """
    from mteb.abstasks import AbsTaskRetrieval

    folder = Path(folder).resolve()
    data = load_beir_folder(folder, split)
    name = name or folder.name
    revision = _content_hash(folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv")
    metadata = _task_metadata(
        name,
        f"Local BEIR-format retrieval folder {folder} (qrels split {split!r}), read by retromae_hf.evaluation.",
        folder,
        revision,
        "Retrieval",
        "ndcg_at_10",
        split,
    )
    k_values = RETRIEVAL_K_VALUES + ((1000,) if len(data.corpus_ids) > 1000 else ())

    def load_data(self: Any, num_proc: int | None = None, *, timer: Any = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from datasets import Dataset
        from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

        corpus = Dataset.from_dict({"id": data.corpus_ids, "title": data.titles, "text": data.texts})
        queries = Dataset.from_dict({"id": data.query_ids, "text": data.query_texts})
        self.dataset = {
            "default": {
                split: RetrievalSplitData(
                    corpus=corpus,
                    queries=queries,
                    relevant_docs={q: dict(docs) for q, docs in data.qrels.items()},
                    top_ranked=None,
                )
            }
        }
        self.data_loaded = True

    # mteb's `unload_data` drops instance-level metadata, so metadata lives on a class made for this folder.
    task_class = type(
        _class_name("LocalRetrieval_", name),
        (AbsTaskRetrieval,),
        {"metadata": metadata, "k_values": k_values, "load_data": load_data, "__module__": __name__},
    )
    return task_class()


def build_sts_task(path: str | Path, split: str = "test", name: str | None = None) -> AbsTask:
    """Build an mteb STS task from a local STS file (see `load_sts_file` for the formats).

    The score range mteb normalises by is the minimum and maximum gold score found in the file.

    Args:
        path: The STS file.
        split: The split name recorded in the results (a file holds a single split).
        name: Task name in the results; defaults to ``<parent folder>-<file stem>``, e.g. ``stsbenchmark-sts-test``.

    Returns:
        An instance of a fresh `AbsTaskSTS` subclass, with main score ``cosine_spearman``.
    """
    from mteb.abstasks import AbsTaskSTS

    path = Path(path).resolve()
    data = load_sts_file(path)
    name = name or f"{path.parent.name}-{path.stem}"
    metadata = _task_metadata(
        name,
        f"Local STS file {path}, read by retromae_hf.evaluation.",
        path,
        _content_hash(path),
        "STS",
        "cosine_spearman",
        split,
    )

    def load_data(self: Any, num_proc: int | None = None, *, timer: Any = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from datasets import Dataset, DatasetDict

        rows = {"sentence1": data.sentence1, "sentence2": data.sentence2, "score": data.score}
        self.dataset = DatasetDict({split: Dataset.from_dict(rows)})
        self.data_loaded = True

    task_class = type(
        _class_name("LocalSTS_", name),
        (AbsTaskSTS,),
        {
            "metadata": metadata,
            "min_score": data.min_score,
            "max_score": data.max_score,
            "load_data": load_data,
            "__module__": __name__,
        },
    )
    return task_class()


# --------------------------------------------------------------------------------------------------------------------
# Local data: classification (SentEval's transfer tasks)
# --------------------------------------------------------------------------------------------------------------------

#: The files a classification folder may hold: train/test (dev optional), or one all.jsonl for cross-validation.
CLASSIFICATION_FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "all.jsonl")
#: Folds of the stratified cross-validation of a folder with a single ``all.jsonl`` (SentEval's 10 for MR, CR, ...).
CLASSIFICATION_FOLDS = 10
#: The split name recorded for a cross-validated folder (its one file, ``all.jsonl``).
CROSS_VALIDATION_SPLIT = "all"
#: The classifier trained on the frozen embeddings: scikit-learn's logistic regression, default L2 penalty (C=1).
#: `max_iter` is raised from mteb's 100 so that lbfgs converges on the full training sets of SentEval's tasks.
CLASSIFIER_MAX_ITER = 1000
#: SentEval's six single-sentence transfer tasks (the folder names of the group ``senteval``), in SentEval's order.
SENTEVAL_TASKS = ("mr", "cr", "subj", "mpqa", "sst2", "trec")
#: The group name: ``senteval`` = mteb's tasks of that name (online); ``senteval=DIR`` = DIR's folders of those names.
SENTEVAL_GROUP = "senteval"


@dataclass
class ClassificationData:
    """A labelled text folder read from JSON lines ``{"text": str, "label": int | str}``.

    Attributes:
        splits: ``{split: (texts, labels)}``: ``train``, ``test`` and optionally ``dev``, or ``all`` alone.
        files: ``{split: path}`` of the file each split came from.
    """

    splits: dict[str, tuple[list[str], list[int | str]]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def label_codes(self) -> dict[int | str, int]:
        """Each label's class number for the classifier: the labels in sorted order, numbered from 0. (mteb's
        average precision needs numeric labels; integer labels map to their own rank, string labels to theirs.)"""
        labels = sorted({label for _, split_labels in self.splits.values() for label in split_labels})  # type: ignore[type-var]
        return {label: code for code, label in enumerate(labels)}

    @property
    def cross_validation(self) -> bool:
        """True for a folder with one ``all.jsonl``, scored by stratified k-fold cross-validation."""
        return CROSS_VALIDATION_SPLIT in self.splits


def is_classification_folder(path: str | Path) -> bool:
    """A folder holding at least one of `CLASSIFICATION_FILES` and no ``corpus.jsonl`` (which makes it BEIR)."""
    path = Path(path)
    return (
        path.is_dir()
        and not (path / "corpus.jsonl").is_file()
        and any((path / name).is_file() for name in CLASSIFICATION_FILES)
    )


def _read_classification_file(path: Path) -> tuple[list[str], list[int | str]]:
    """Read one split, checking every row has a string ``text`` and an integer or string ``label``."""
    texts: list[str] = []
    labels: list[int | str] = []
    first_kind: tuple[type, int] | None = None
    empty = 0
    for line_number, obj in _iter_jsonl(path):
        if "label" not in obj:
            raise EvaluationDataError(
                f"{path}, line {line_number}: no 'label' field; every row of a classification file is "
                '{"text": "...", "label": <integer or string class>}'
            )
        text, label = obj.get("text"), obj["label"]
        if not isinstance(text, str):
            raise EvaluationDataError(
                f"{path}, line {line_number}: 'text' is {'missing' if text is None else type(text).__name__}; "
                "every row needs its text as a string"
            )
        empty += not text.strip()
        if isinstance(label, bool) or not isinstance(label, (int, str)) or label == "":
            raise EvaluationDataError(
                f"{path}, line {line_number}: label {label!r} is neither an integer nor a non-empty string; "
                "give each class as an integer (0, 1, ...) or as a name"
            )
        kind = int if isinstance(label, int) else str
        if first_kind is None:
            first_kind = (kind, line_number)
        elif kind is not first_kind[0]:
            raise EvaluationDataError(
                f"{path}, line {line_number}: label {label!r} is a {kind.__name__}, but line {first_kind[1]} has a "
                f"{first_kind[0].__name__} label; write every label of a folder the same way (all integers or all "
                "strings)"
            )
        texts.append(text)
        labels.append(label)
    if not texts:
        raise EvaluationDataError(f"{path}: the file holds no rows; remove it or fill it with labelled texts")
    if empty:
        # SentEval's own copies of CR and MPQA hold a few empty sentences; it keeps them, and so do we.
        logger.warning("%s: %d of %d texts are empty; they are kept (encoded as empty input)", path, empty, len(texts))
    return texts, labels


def load_classification_folder(folder: str | Path, folds: int = CLASSIFICATION_FOLDS) -> ClassificationData:
    """Read and check a classification folder: ``train.jsonl`` + ``test.jsonl`` (``dev.jsonl`` optional), or one
    ``all.jsonl`` (scored by stratified `folds`-fold cross-validation).

    Raises:
        EvaluationDataError: The layout is ambiguous or incomplete (``test.jsonl`` without ``train.jsonl`` and the
            reverse, ``all.jsonl`` beside split files), a row lacks ``text`` or ``label``, labels mix integers and
            strings (across the folder's files too), a file is empty, the training data has one class only, the
            evaluated split has a class the training data lacks, or (cross-validation) a class has fewer rows than
            folds. The message names the file and says how to fix it.
    """
    folder = Path(folder)
    present = {name.removesuffix(".jsonl"): folder / name for name in CLASSIFICATION_FILES if (folder / name).is_file()}
    if "all" in present and len(present) > 1:
        others = ", ".join(f"{split}.jsonl" for split in present if split != "all")
        raise EvaluationDataError(
            f"{present['all']}: all.jsonl (scored by {folds}-fold cross-validation) lies beside {others} (scored "
            "train -> test); keep one layout in the folder"
        )
    if "all" not in present:
        if "train" not in present:
            first = present.get("test") or present.get("dev") or folder
            raise EvaluationDataError(
                f"{first}: no train.jsonl beside it in {folder}; the classifier is trained on train.jsonl and scored "
                f"on test.jsonl. Add train.jsonl, or put every row in one all.jsonl to score it by {folds}-fold "
                "cross-validation"
            )
        if "test" not in present:
            raise EvaluationDataError(
                f"{present['train']}: no test.jsonl beside it in {folder}; add the test split, or rename the file to "
                f"all.jsonl to score it by {folds}-fold cross-validation"
            )
    data = ClassificationData()
    kinds: dict[type, Path] = {}
    for split, path in present.items():
        data.splits[split] = _read_classification_file(path)
        data.files[split] = path
        kinds.setdefault(type(data.splits[split][1][0]), path)
    if len(kinds) > 1:
        (int_file, str_file) = kinds[int], kinds[str]
        raise EvaluationDataError(
            f"{str_file}: string labels, but {int_file.name} in the same folder has integer labels; write every "
            "label of a folder the same way"
        )
    train_split = "all" if "all" in present else "train"
    train_labels = data.splits[train_split][1]
    counts: dict[int | str, int] = {}
    for label in train_labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise EvaluationDataError(
            f"{data.files[train_split]}: every row has the label {train_labels[0]!r}; a classifier needs at least "
            "two classes"
        )
    if train_split == "all":
        rare = sorted((label for label, count in counts.items() if count < folds), key=str)
        if rare:
            raise EvaluationDataError(
                f"{data.files['all']}: class(es) {_name_some([str(r) for r in rare])} have fewer than {folds} rows, "
                f"too few for stratified {folds}-fold cross-validation; add rows or give train.jsonl and test.jsonl"
            )
    for split in ("dev", "test"):
        unseen = sorted({label for label in data.splits.get(split, ((), ()))[1] if label not in counts}, key=str)
        if unseen:
            raise EvaluationDataError(
                f"{data.files[split]}: label(s) {_name_some([str(u) for u in unseen])} never occur in "
                f"{data.files['train'].name}, so no classifier trained on it can predict them; fix the labels or "
                "add training rows of those classes"
            )
    logger.info(
        "Read %s: %s, %d classes",
        folder,
        ", ".join(f"{split} {len(texts)}" for split, (texts, _) in data.splits.items()),
        len(counts),
    )
    return data


def _classification_task_base() -> type:
    """mteb's `AbsTaskClassification` with SentEval's protocol: the whole training split (no few-shot sampling),
    one experiment, logistic regression, and *stratified* k-fold for cross-validation (mteb's own uses `KFold`)."""
    from mteb.abstasks import AbsTaskClassification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    class LocalClassificationBase(AbsTaskClassification):
        evaluator_model = LogisticRegression(max_iter=CLASSIFIER_MAX_ITER)
        n_experiments = 1
        n_splits = CLASSIFICATION_FOLDS

        def _evaluate_subset_cross_validation(
            self, model: Any, data_split: Any, *, encode_kwargs: Any, hf_split: str, hf_subset: str,
            prediction_folder: Path | None = None, num_proc: int | None = None, timer: Any, **kwargs: Any,
        ) -> Any:  # fmt: skip
            from mteb._create_dataloaders import create_dataloader

            dataset = data_split[self.train_split]
            labels = dataset[self.label_column_name]
            loader = create_dataloader(
                dataset, task_metadata=self.metadata, input_column=self.input_column_name, num_proc=num_proc,
                **encode_kwargs,
            )  # fmt: skip
            embeddings = model.encode(
                loader, task_metadata=self.metadata, hf_split=hf_split, hf_subset=hf_subset, **encode_kwargs
            )
            splitter = StratifiedKFold(n_splits=self.n_splits, shuffle=True, random_state=self.seed)
            scores: list[Any] = []
            pooled: list[Any] = [None] * len(labels)  # each row's prediction by the fold that held it out
            for train_idx, test_idx in splitter.split(embeddings, labels):
                fold_scores, fold_predictions = self._run_experiment(
                    dataset.select(train_idx),
                    dataset.select(test_idx),
                    embeddings[train_idx],
                    embeddings[test_idx],
                    timer=timer,
                )
                scores.append(fold_scores)
                for index, prediction in zip(test_idx, fold_predictions, strict=True):
                    pooled[index] = prediction
            if prediction_folder:  # one list in file order, like a train -> test task's (see per_query_scores)
                self._save_task_predictions([pooled], model, prediction_folder, hf_subset=hf_subset, hf_split=hf_split)
            return self._calculate_avg_scores(scores)

    return LocalClassificationBase


def build_classification_task(
    folder: str | Path, split: str = "test", name: str | None = None, folds: int = CLASSIFICATION_FOLDS
) -> AbsTask:
    """Build an mteb classification task from a local folder (see `load_classification_folder` for the layout).

    A logistic regression is trained on the frozen embeddings of the training split and scored on `split`
    (``test``, or ``dev`` when the folder has one), or, for a folder with one ``all.jsonl``, on each fold of a
    stratified `folds`-fold cross-validation (split ``all``), as SentEval scores MR, CR, SUBJ and MPQA.

    Returns:
        An instance of a fresh `AbsTaskClassification` subclass, with main score ``accuracy`` (F1 beside it).

    Raises:
        EvaluationDataError: The folder is malformed, or `split` is not one of its evaluation files.
    """
    folder = Path(folder).resolve()
    data = load_classification_folder(folder, folds)
    if data.cross_validation:
        split = CROSS_VALIDATION_SPLIT
    elif split not in data.splits or split == "train":
        raise EvaluationDataError(
            f"{folder}: no {split}.jsonl to score (it holds {', '.join(p.name for p in data.files.values())}); "
            "evaluate with --split test (or dev when the folder has dev.jsonl)"
        )
    name = name or folder.name
    protocol = (
        f"stratified {folds}-fold cross-validation on all.jsonl"
        if data.cross_validation
        else f"trained on train.jsonl, scored on {split}.jsonl"
    )
    metadata = _task_metadata(
        name,
        f"Local classification folder {folder} ({protocol}), read by retromae_hf.evaluation.",
        folder,
        _content_hash(*data.files.values()),
        "Classification",
        "accuracy",
        split,
    )
    train_split = CROSS_VALIDATION_SPLIT if data.cross_validation else "train"
    largest_class = max(data.splits[train_split][1].count(label) for label in set(data.splits[train_split][1]))

    def load_data(self: Any, num_proc: int | None = None, *, timer: Any = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from datasets import Dataset, DatasetDict

        codes = data.label_codes()
        self.dataset = DatasetDict(
            {
                s: Dataset.from_dict({"text": texts, "label": [codes[label] for label in labels]})
                for s, (texts, labels) in data.splits.items()
            }
        )
        self.data_loaded = True

    task_class = type(
        _class_name("LocalClassification_", name),
        (_classification_task_base(),),
        {
            "metadata": metadata,
            "train_split": train_split,
            "is_cross_validation": data.cross_validation,
            "n_splits": folds,
            # mteb samples `samples_per_label` rows per class for training; SentEval trains on all of them.
            "samples_per_label": largest_class,
            "protocol": protocol,
            "load_data": load_data,
            "__module__": __name__,
        },
    )
    return task_class()


def senteval_mteb_task_names() -> dict[str, str | None]:
    """SentEval's six transfer tasks in mteb's registry (no network: the registry ships with mteb).

    A task is found when an mteb classification task is named after it (``MR``, ``SST2``, ``TRECClassification``,
    ...; case and ``-``/``_`` ignored). Returns ``{task: mteb name or None}``; mteb 2.26 has none of the six.
    """
    import mteb

    def key(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower()).removesuffix("classification")

    registry = {key(task.metadata.name): task.metadata.name for task in mteb.get_tasks(task_types=["Classification"])}
    return {task: registry.get(task) for task in SENTEVAL_TASKS}


def expand_task_groups(tasks: Sequence[str | Path | AbsTask]) -> list[str | Path | AbsTask]:
    """Replace the group name ``senteval`` by its tasks: ``senteval=DIR`` by DIR's folders named ``mr``, ``cr``,
    ``subj``, ``mpqa``, ``sst2``, ``trec`` (those present; a missing one is logged), and a bare ``senteval`` by the
    mteb tasks of those names (online).

    Raises:
        EvaluationDataError: ``senteval=DIR`` where DIR holds none of the six folders.
        ValueError: a bare ``senteval`` while mteb's registry lacks some of the six (mteb 2.26 has none of them).
    """
    expanded: list[str | Path | AbsTask] = []
    for spec in tasks:
        text = spec if isinstance(spec, str) else None
        if text is None or text.split("=", 1)[0].lower() != SENTEVAL_GROUP:
            expanded.append(spec)
            continue
        if "=" in text:
            root = Path(text.split("=", 1)[1])
            found = [root / task for task in SENTEVAL_TASKS if is_classification_folder(root / task)]
            if not found:
                raise EvaluationDataError(
                    f"{root}: holds none of SentEval's task folders ({', '.join(SENTEVAL_TASKS)}), each with "
                    "train.jsonl + test.jsonl or all.jsonl; point senteval=DIR at the folder that holds them"
                )
            missing = [task for task in SENTEVAL_TASKS if root / task not in found]
            if missing:
                logger.warning("senteval=%s: no folder for %s; scoring the other tasks", root, ", ".join(missing))
            expanded += [str(path) for path in found]
            continue
        names = senteval_mteb_task_names()
        absent = [task for task, name in names.items() if name is None]
        if absent:
            import mteb

            raise ValueError(
                f"'{SENTEVAL_GROUP}' names SentEval's tasks ({', '.join(SENTEVAL_TASKS)}), but mteb "
                f"{mteb.__version__}'s registry has no task for {', '.join(absent)}. Give the local folders instead: "
                f"--tasks {SENTEVAL_GROUP}=DIR, where DIR holds mr/, cr/, ... (train.jsonl + test.jsonl, or all.jsonl; "
                "the project's copy is ../shared/data/transfer)"
            )
        expanded += [name for name in names.values() if name is not None]
    return expanded


# --------------------------------------------------------------------------------------------------------------------
# Task resolution
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _ResolvedTask:
    task: Any
    dataset_name: str
    path_or_hub_id: str
    split: str
    revision: str | None
    #: Every split evaluated (one summary entry each): `split` alone, or all of an MTEB task's splits when it has
    #: none of the name asked for (LongEmbed's `test_256` ... `test_32768`).
    splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.splits = self.splits or (self.split,)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith(".") or spec.lower().endswith(STS_SUFFIXES)


def check_long_eval_tokenizer(resolved: Sequence[_ResolvedTask], st_model: SentenceTransformer) -> None:
    """A long-document set (`retromae-hf make-long-eval`) counts its lengths in one tokenizer's tokens, recorded
    per document; scored with a model whose tokenizer counts otherwise, `passkey-8192` is not 8,192 tokens long
    for it (and a tokenizer of another vocabulary may read it mostly as [UNK]). The first document of each
    such folder is counted again with the model's tokenizer; a different count is refused, naming both.

    Raises:
        EvaluationDataError: the set was built with another tokenizer (with the command that rebuilds it).
    """
    tokenizer = getattr(st_model, "tokenizer", None)
    if tokenizer is None:
        return
    for item in resolved:
        folder = Path(item.path_or_hub_id)
        manifest = folder.parent / "long_eval.json"
        if not (folder / "corpus.jsonl").is_file() or not manifest.is_file():
            continue
        with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
            first = json.loads(handle.readline() or "{}")
        recorded = first.get("tokens") if isinstance(first, dict) else None
        if not isinstance(recorded, int) or not isinstance(first.get("text"), str):
            continue
        counted = len(tokenizer(first["text"], add_special_tokens=True, verbose=False)["input_ids"])
        if counted == recorded:
            continue
        try:
            built_with = json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer")
        except (OSError, ValueError, AttributeError):
            built_with = None
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise EvaluationDataError(
            f"{folder}: this long-document set was built with the tokenizer {built_with or '(not recorded)'} "
            f"({manifest}); its lengths are counted in that tokenizer's tokens, and the model's tokenizer ({name}) "
            f"counts its first document as {counted:,} tokens, not {recorded:,}, so the lengths it reports would "
            f"be wrong. Build the set for this model: retromae-hf make-long-eval --tokenizer MODEL_FOLDER "
            f"--output-dir NEW_FOLDER, and evaluate on that."
        )


def _natural_key(name: str) -> list[Any]:
    """`passkey-512` before `passkey-1024`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def expand_task_folders(tasks: Sequence[str | Path | AbsTask]) -> list[str | Path | AbsTask]:
    """Replace each folder of BEIR folders by the BEIR folders it holds, in natural order (``passkey-256``,
    ``passkey-512``, ..., ``passkey-8192``), so that a set written by `retromae-hf make-long-eval` is one task
    argument. A folder with its own ``corpus.jsonl`` is a BEIR folder and stays as it is."""
    expanded: list[str | Path | AbsTask] = []
    for spec in tasks:
        path = Path(spec) if isinstance(spec, str | Path) else None
        if path is None or not path.is_dir() or (path / "corpus.jsonl").is_file() or is_classification_folder(path):
            expanded.append(spec)
            continue
        children = sorted(
            (
                child
                for child in path.iterdir()
                if child.is_dir() and ((child / "corpus.jsonl").is_file() or is_classification_folder(child))
            ),
            key=lambda child: _natural_key(child.name),
        )
        if not children:
            expanded.append(spec)  # reported by the BEIR reader, which names the missing corpus.jsonl
            continue
        incomplete = sorted(
            (child for child in path.iterdir() if child.is_dir() and not (child / "corpus.jsonl").is_file()
             and ((child / "queries.jsonl").is_file() or (child / "qrels").is_dir())),
            key=lambda child: _natural_key(child.name),
        )  # fmt: skip
        if incomplete:  # one length of a set lost its corpus: scoring the others would hide that length
            names = ", ".join(child.name for child in incomplete)
            raise EvaluationDataError(
                f"{path}: the BEIR folder(s) {names} lack corpus.jsonl, beside {len(children)} complete one(s). "
                "Restore the file (or write the set again with `retromae-hf make-long-eval`), or pass the complete "
                "folders one by one with --tasks."
            )
        logger.info("%s holds %d BEIR folders: %s", path, len(children), ", ".join(child.name for child in children))
        expanded += [type(spec)(child) if isinstance(spec, Path) else str(child) for child in children]
    return expanded


def _resolve_task(spec: str | Path | AbsTask, split: str) -> _ResolvedTask:
    """Turn one entry of ``tasks`` into an mteb task plus what the summary says about its data."""
    from mteb import AbsTask

    if isinstance(spec, AbsTask):
        return _resolve_mteb_task(spec, split)
    path = Path(spec)
    if is_classification_folder(path):
        task = build_classification_task(path, split)
        split_used = task.metadata.eval_splits[0]
        return _ResolvedTask(task, path.resolve().name, str(path.resolve()), split_used, task.metadata.revision)
    if path.is_dir():
        task = build_retrieval_task(path, split)
        return _ResolvedTask(task, path.resolve().name, str(path.resolve()), split, task.metadata.revision)
    if path.is_file():
        task = build_sts_task(path, split)
        resolved = path.resolve()
        return _ResolvedTask(
            task, f"{resolved.parent.name}/{resolved.name}", str(resolved), split, task.metadata.revision
        )
    if isinstance(spec, Path) or _looks_like_path(str(spec)):
        raise EvaluationDataError(f"{spec}: no such file or folder (expected a BEIR folder or an STS file)")

    import mteb

    try:
        found = mteb.get_tasks(tasks=[str(spec)])
    except KeyError as error:
        raise ValueError(f"{spec!r} is neither a local path nor an MTEB task name ({error})") from None
    if len(found) != 1:
        raise ValueError(f"{spec!r} matched {len(found)} MTEB tasks; name exactly one")
    return _resolve_mteb_task(found[0], split)


def _resolve_mteb_task(task: Any, split: str) -> _ResolvedTask:
    splits = list(task.metadata.eval_splits)
    if split in splits:
        task.filter_eval_splits([split])
        used = [split]
    else:
        used = splits  # e.g. LongEmbed's lengths, test_256 ... test_32768: each is a result of its own
        logger.warning(
            "MTEB task %s has no split %r; evaluating each of its splits (%s); choose one with --split",
            task.metadata.name,
            split,
            ", ".join(used),
        )
    reason = hub_unreachable_reason()  # without the Hub: the datasets cache only, at once rather than after retries
    if reason:
        logger.warning(
            "%s: MTEB task %s loads its data from the Hub and only works with a warm datasets cache",
            reason,
            task.metadata.name,
        )
    return _ResolvedTask(
        task, task.metadata.name, task.metadata.dataset["path"], used[0], task.metadata.revision, tuple(used)
    )


def _dedupe_names(resolved: list[_ResolvedTask]) -> None:
    """Give local tasks unique names, so that their result files do not overwrite each other."""
    seen: dict[str, int] = {}
    for item in resolved:
        name = item.task.metadata.name
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            if not type(item.task).__name__.startswith(("LocalRetrieval_", "LocalSTS_", "LocalClassification_")):
                raise ValueError(f"task {name!r} is listed twice")
            new_name = f"{name}-{seen[name]}"
            type(item.task).metadata = item.task.metadata.model_copy(update={"name": new_name})


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def _load_model(model: str | Path) -> SentenceTransformer:
    """Load a sentence-transformers model from a folder or Hub id (RetroMAE checkpoints get CLS pooling)."""
    from .export import load_sentence_transformer  # lazy: keeps torch-heavy imports off `import evaluation`

    return load_sentence_transformer(str(model))


def _longest_input(st_model: Any) -> int | None:
    """The longest input of a sentence-transformers model's transformer in tokens (its absolute position table
    less RoBERTa's offset, else `max_position_embeddings`), or None where it states none."""
    from .modeling_retromae import absolute_position_table

    auto_model = getattr(st_model[0], "auto_model", None) if len(st_model) else None
    if callable(getattr(auto_model, "max_sequence_length", None)):  # a RetroMAE checkpoint knows its own
        return auto_model.max_sequence_length()
    config = getattr(auto_model, "config", None)
    if config is None:
        return None
    embeddings = getattr(auto_model, "embeddings", None)
    found = absolute_position_table(embeddings, config.hidden_size) if embeddings is not None else None
    if found is not None:
        return found[0].num_embeddings - found[1]
    positions = getattr(config, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def _model_display_name(model: Any, given: str | Path | None) -> str:
    if given is not None:
        return str(given)
    card = getattr(model, "model_card_data", None)
    for attribute in ("model_name", "model_id", "base_model"):
        value = getattr(card, attribute, None) if card is not None else None
        if value:
            return str(value)
    try:
        name_or_path = model[0].auto_model.config.name_or_path
    except (AttributeError, IndexError, KeyError, TypeError):
        name_or_path = None
    return str(name_or_path or type(model).__name__)


def _mteb_model_name(display_name: str) -> str:
    """mteb wants ``organisation/name``; local paths become ``local/<folder name>``."""
    path = Path(display_name)
    if path.exists() or display_name.startswith(("/", ".", "~")):
        return f"local/{path.name or 'model'}"
    return display_name if display_name.count("/") == 1 else f"local/{display_name.replace('/', '__')}"


# --------------------------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------------------------


def _package_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("retromae-hf")
    except metadata.PackageNotFoundError:
        import sys

        package = sys.modules.get("retromae_hf")
        return getattr(package, "__version__", None)


def _numeric_scores(entries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Average each numeric score over the subsets (languages) mteb reports; a single subset is copied."""
    sums: dict[str, list[float]] = {}
    for entry in entries:
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            sums.setdefault(key, []).append(float(value))
    return {key: sum(values) / len(values) for key, values in sums.items()}


def _summary_entry(resolved: _ResolvedTask, task_result: Any, split: str | None = None) -> dict[str, Any]:
    metadata = resolved.task.metadata
    split = split or resolved.split
    entries = task_result.scores.get(split) or []
    if not entries:
        raise RuntimeError(f"mteb returned no scores for {metadata.name} on split {split!r}")
    scores = _numeric_scores(entries)
    main_metric = str(metadata.main_score)
    # Known task types get a short, fixed list of metrics; other types keep every numeric score mteb reports.
    wanted = {
        "Retrieval": RETRIEVAL_SUMMARY_METRICS,
        "STS": STS_SUMMARY_METRICS,
        "Classification": CLASSIFICATION_SUMMARY_METRICS,
    }.get(str(metadata.type))
    keys = scores if wanted is None else [key for key in (main_metric, *wanted) if key in scores]
    metrics = {key: scores[key] for key in keys}
    dataset = {
        "name": resolved.dataset_name,
        "path_or_hub_id": resolved.path_or_hub_id,
        "split": split,
        "revision": resolved.revision,
    }
    protocol = getattr(resolved.task, "protocol", None)  # local classification: train -> test or k-fold
    if protocol:
        dataset["protocol"] = protocol
    return {
        "task": metadata.name,
        "task_type": str(metadata.type),
        "dataset": dataset,
        "main_metric": main_metric,
        "main_score": scores.get("main_score", scores.get(main_metric, float("nan"))),
        "metrics": metrics,
    }


def _format_score(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{100 * value:.2f}"
    return "n/a"


def summary_to_markdown(summary: Mapping[str, Any]) -> str:
    """Render a summary (as written to ``summary.json``) as one Markdown table, one row per task.

    Scores are shown ×100 with two decimals. Besides the main metric, a few metrics typical of the task type are
    listed (MRR@10, MAP@10, Recall@10/100 for retrieval; cosine Pearson for STS).
    """
    settings = summary.get("settings", {})
    lines = [
        f"Model: `{summary.get('model', '?')}` · mteb {summary.get('mteb_version', '?')} · "
        f"batch size {settings.get('batch_size', '?')} · max length {settings.get('max_length', '?')} · "
        f"created {summary.get('created', '?')}",
        "",
        "| Task | Type | Split | Main metric | Score | Other metrics |",
        "|---|---|---|---|---:|---|",
    ]
    for result in summary.get("results", []):
        metrics = result.get("metrics", {})
        extra_keys = MARKDOWN_METRICS.get(result.get("task_type", ""), ())
        extras = ", ".join(f"{key} {_format_score(metrics[key])}" for key in extra_keys if key in metrics)
        lines.append(
            f"| {result.get('task', '?')} | {result.get('task_type', '?')} | "
            f"{result.get('dataset', {}).get('split', '?')} | {result.get('main_metric', '?')} | "
            f"{_format_score(result.get('main_score'))} | {extras or '-'} |"
        )
    return "\n".join(lines) + "\n"


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a ``summary.json`` written by `evaluate` (a folder holding one is accepted too).

    Raises:
        EvaluationDataError: The file is missing or is not a summary (no ``results`` list).
    """
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_JSON
    if not path.is_file():
        raise EvaluationDataError(f"{path}: summary file not found")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvaluationDataError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("results"), list):
        raise EvaluationDataError(f"{path}: not an evaluation summary (no 'results' list)")
    return summary


# --------------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------------


def evaluate(
    model: SentenceTransformer | str | Path,
    tasks: Sequence[str | Path],
    *,
    output_dir: str | Path,
    batch_size: int = 32,
    max_length: int | None = None,
    split: str = "test",
    similarity: str | None = None,
    show_progress_bar: bool = True,
    save_predictions: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a sentence-embedding model with mteb and write a summary.

    Every local task is read and checked before the model is loaded, so malformed data fails fast.

    Args:
        model: A `sentence_transformers.SentenceTransformer`, or a folder / Hub id to load one from (through
            `retromae_hf.export.load_sentence_transformer`).
        tasks: Each entry is a BEIR-format folder (retrieval), a folder of BEIR folders (each scored, in natural
            order: the lengths of a `retromae-hf make-long-eval` set), an STS file (``.tsv``/``.csv``/``.jsonl``
            with ``sentence1, sentence2, score``), a classification folder (``train.jsonl`` + ``test.jsonl``, or
            ``all.jsonl`` scored by stratified 10-fold cross-validation; see `build_classification_task`), a folder
            of classification folders, ``senteval=DIR`` (DIR's ``mr``, ``cr``, ``subj``, ``mpqa``, ``sst2``,
            ``trec``), or an MTEB task name such as ``"SciFact"`` or
            ``"LEMBPasskeyRetrieval"`` (needs the Hub).
        output_dir: Where mteb writes its result JSONs (``results/<model>/<revision>/<task>.json``, mteb's usual
            cache layout) and where ``summary.json`` and ``summary.md`` go.
        batch_size: Encoding batch size.
        max_length: If given, sets ``model.max_seq_length`` for the run (restored afterwards).
        split: The split to evaluate: the qrels file of a BEIR folder, the recorded split of an STS file, and the
            split of an MTEB task (each of its splits, one result each, when it has no such split: LongEmbed's
            ``test_256`` ... ``test_32768``).
        similarity: If given, the model's similarity function for the run: ``cosine``, ``dot``, ``euclidean`` or
            ``manhattan`` (restored afterwards). Retrieval ranks with it; STS reports cosine metrics regardless,
            plus ``spearman``/``pearson`` computed with it.
        show_progress_bar: Show progress bars while encoding.
        save_predictions: Let mteb also write what it scored to ``output_dir/predictions/<task>_predictions.json``
            (retrieval: the top-ranked documents of every query with their similarities; STS: the similarity of
            every pair), for `per_query_scores`. A SciFact file is about 10 MB.
        overwrite: Replace an existing `output_dir` written by an earlier evaluation (it holds the marker
            `.retromae-output.json`); anything else there is refused. The results are written beside it and
            renamed into place (`retromae_hf.outputs.staged_output`).

    Returns:
        The summary, also written to ``output_dir/summary.json``. Its schema (stable; the Hub model card reads it)::

            {
              "model": str,                    # the path/Hub id given, or the model's own name
              "mteb_version": str,
              "retromae_hf_version": str | None,
              "created": str,                  # ISO 8601, UTC
              "settings": {"batch_size": int, "max_length": int | None,   # max_seq_length in effect
                           "split": str, "similarity": str | None},       # similarity function in effect
              "results": [
                {
                  "task": str,                 # mteb task name (folder name / "<parent>-<stem>" for local data)
                  "task_type": str,            # "Retrieval", "STS", ... (mteb's task type)
                  "dataset": {"name": str, "path_or_hub_id": str, "split": str,
                              "revision": str | None,   # Hub revision, or a content hash for local data
                              "protocol": str},         # local classification only: train -> test or k-fold
                  "main_metric": str,          # "ndcg_at_10", "cosine_spearman", ...
                  "main_score": float,         # 0-1 scale, as mteb reports it
                  "metrics": {str: float}      # main metric plus e.g. mrr_at_10, map_at_10, recall_at_k (retrieval)
                }                              #   or cosine_pearson, spearman, pearson (STS); 0-1 scale
              ]
            }

    Raises:
        EvaluationDataError: A local task's data is missing or malformed (the message names the file).
        ValueError: A task is neither a local path nor a known MTEB task, or `similarity` is unknown.
        OutputExistsError: `output_dir` holds something (without `overwrite`), or is inside the model or a task.
        NetworkError: An MTEB task's data or a Hub model is needed and the Hub cannot be reached.
    """
    from .outputs import staged_output

    if similarity is not None and similarity not in _SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity must be one of {_SIMILARITY_FUNCTIONS} or None, got {similarity!r}")
    if isinstance(tasks, (str, Path)):
        tasks = [tasks]
    if not tasks:
        raise ValueError("no tasks given")
    if batch_size < 1 or (max_length is not None and max_length < 1):
        raise ValueError(f"batch_size and max_length must be positive, got {batch_size} and {max_length}")
    inputs = [str(model)] if isinstance(model, str | Path) else []
    inputs += [str(task) for task in tasks if isinstance(task, str | Path)]
    with staged_output(
        output_dir, overwrite=overwrite, inputs=inputs, what="evaluation folder (--output-dir)", command="evaluate"
    ) as staging:
        summary = _evaluate_into(
            staging, model, tasks, batch_size, max_length, split, similarity, show_progress_bar, save_predictions
        )
    logger.info("Wrote %s and %s", Path(output_dir) / SUMMARY_JSON, Path(output_dir) / SUMMARY_MD)
    return summary


def _evaluate_into(
    output_dir: Path,
    model: SentenceTransformer | str | Path,
    tasks: Sequence[str | Path],
    batch_size: int,
    max_length: int | None,
    split: str,
    similarity: str | None,
    show_progress_bar: bool,
    save_predictions: bool,
) -> dict[str, Any]:
    resolved = [_resolve_task(spec, split) for spec in expand_task_folders(expand_task_groups(tasks))]
    _dedupe_names(resolved)

    import mteb
    from mteb.models import SentenceTransformerEncoderWrapper

    given_name = None if not isinstance(model, (str, Path)) else model
    st_model = _load_model(model) if isinstance(model, (str, Path)) else model
    check_long_eval_tokenizer(resolved, st_model)
    display_name = _model_display_name(st_model, given_name)

    positions = _longest_input(st_model)
    if max_length is not None and positions is not None and max_length > positions:
        raise EvaluationDataError(
            f"--max-length {max_length} is longer than the model's {positions} positions ({display_name}): it "
            f"cannot read more tokens than that. Use --max-length {positions} or less (or leave it out: the model's "
            "own length), or a model with a longer position table (docs/encoders.md)."
        )
    saved = (st_model.max_seq_length, st_model.similarity_fn_name)
    try:
        if max_length is not None:
            st_model.max_seq_length = max_length
        if similarity is not None:
            st_model.similarity_fn_name = similarity
        wrapper = SentenceTransformerEncoderWrapper(st_model)
        wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"name": _mteb_model_name(display_name)})
        effective = {
            "batch_size": batch_size,
            "max_length": st_model.max_seq_length,
            "split": split,
            "similarity": st_model.similarity_fn_name,
        }
        logger.info("Evaluating %s on %d task(s) with %s", display_name, len(resolved), effective)
        model_result = mteb.evaluate(
            wrapper,
            [item.task for item in resolved],
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
            cache=mteb.ResultCache(cache_path=output_dir),
            overwrite_strategy="always",
            co2_tracker=False,
            show_progress_bar=show_progress_bar,
            prediction_folder=output_dir / PREDICTIONS_DIR if save_predictions else None,
        )
    except Exception as error:
        if not is_network_error(error):
            raise
        named = [item.task.metadata.name for item in resolved if not type(item.task).__name__.startswith("Local")]
        long_hint = (
            " For LongEmbed's tasks, `retromae-hf make-long-eval` writes a synthetic passkey set offline."
            if any(name.startswith("LEMB") for name in named)
            else ""
        )
        raise NetworkError(
            f"MTEB task(s) {', '.join(named) or 'given'} load their data from the Hugging Face Hub, which cannot be "
            f"reached ({hub_unreachable_reason() or error}). Evaluate local data instead (a BEIR folder or an STS "
            "file, see `retromae-hf evaluate --help`), run once with network so the datasets cache holds the data, "
            f"or {offline_fix()}.{long_hint}"
        ) from error
    finally:
        st_model.max_seq_length, st_model.similarity_fn_name = saved

    by_name = {task_result.task_name: task_result for task_result in model_result.task_results}
    results = []
    for item in resolved:
        task_result = by_name.get(item.task.metadata.name)
        if task_result is None:
            raise RuntimeError(f"mteb returned no result for task {item.task.metadata.name}")
        results += [_summary_entry(item, task_result, split) for split in item.splits]

    summary = {
        "model": display_name,
        "mteb_version": mteb.__version__,
        "retromae_hf_version": _package_version(),
        "created": datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="seconds"),
        "settings": effective,
        "results": results,
    }
    (output_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (output_dir / SUMMARY_MD).write_text(summary_to_markdown(summary), encoding="utf-8")
    for result in results:
        logger.info("%s: %s = %s", result["task"], result["main_metric"], _format_score(result["main_score"]))
    return summary


def per_query_scores(output_dir: str | Path, k: int = 10) -> dict[str, dict[str, Any]]:
    """Per-query (retrieval) and per-pair (STS) scores of an `evaluate(..., save_predictions=True)` run.

    They are computed from the predictions mteb wrote, i.e. from the very rankings and similarities behind the
    summary's scores, so that two models can be compared query by query (paired differences, bootstrap intervals).

    Args:
        output_dir: The evaluation's output folder (holding ``summary.json`` and ``predictions/``).
        k: The nDCG cut-off for retrieval tasks.

    Returns:
        ``{task: entry}`` for every local task in the summary with predictions. Retrieval entries are
        ``{"metric": "ndcg_at_<k>", "per_query": {query_id: score}, "mean": float}``: trec_eval's nDCG@k (linear
        gain, as mteb computes it through pytrec_eval) for every judged query with a relevant document, in qrels
        order; ``mean`` equals mteb's score. STS entries are ``{"metric": "cosine_spearman", "similarity": [...],
        "gold": [...], "mean": float}``: the cosine similarity mteb computed for every pair and the gold score, in
        file order; ``mean`` is their Spearman correlation. Classification entries are like retrieval's with
        ``{"metric": "accuracy", "per_query": {row: 1.0 | 0.0}}``: whether each row of the scored file (test.jsonl,
        or all.jsonl, each row predicted by the fold that held it out) was classified right; ``mean`` is the
        accuracy over all rows (mteb's cross-validated score averages the folds' accuracies: equal up to the folds'
        sizes differing by one row).

    Raises:
        EvaluationDataError: The summary or a predictions file is missing (evaluate without ``save_predictions``).
    """
    import pytrec_eval
    from scipy.stats import spearmanr

    output_dir = Path(output_dir)
    summary = load_summary(output_dir)
    scores: dict[str, dict[str, Any]] = {}
    for result in summary["results"]:
        task, dataset = result["task"], result["dataset"]
        source = Path(dataset["path_or_hub_id"])
        if not source.exists():
            continue  # an MTEB task from the Hub: its data is not at hand here
        path = output_dir / PREDICTIONS_DIR / f"{task}_predictions.json"
        if not path.is_file():
            raise EvaluationDataError(f"{path}: no predictions; evaluate with save_predictions=True first")
        predictions = json.loads(path.read_text(encoding="utf-8"))
        subsets = [value for key, value in predictions.items() if key != "mteb_model_meta"]
        predicted = subsets[0][dataset["split"]]
        if result["task_type"] == "Retrieval":
            qrels = {q: docs for q, docs in read_qrels(source / "qrels" / f"{dataset['split']}.tsv").items()}
            qrels = {q: docs for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())}
            measure = f"ndcg_cut_{k}"
            evaluated = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"}).evaluate(predicted)
            per_query = {q: float(evaluated[q][measure]) if q in evaluated else 0.0 for q in qrels}
            scores[task] = {
                "metric": f"ndcg_at_{k}",
                "per_query": per_query,
                "mean": sum(per_query.values()) / len(per_query),
            }
        elif result["task_type"] == "Classification":
            scores[task] = _classification_per_item(source, dataset["split"], predicted)
        elif result["task_type"] == "STS":
            gold = load_sts_file(source).score
            similarity = [float(value) for value in predicted["cosine_scores"]]
            scores[task] = {
                "metric": "cosine_spearman",
                "similarity": similarity,
                "gold": gold,
                "mean": float(spearmanr(similarity, gold)[0]),
            }
    return scores


def _classification_per_item(folder: Path, split: str, predicted: Any) -> dict[str, Any]:
    """Per-row correctness (1.0 / 0.0) of a classification task's predictions, keyed by row number in the file."""
    data = load_classification_folder(folder)
    codes = data.label_codes()
    labels = [codes[label] for label in data.splits[split][1]]  # the classes as the classifier numbered them
    predictions = predicted[0]  # one experiment (train -> test) or the pooled folds (cross-validation)
    if len(predictions) != len(labels):
        raise EvaluationDataError(
            f"{folder / (split + '.jsonl')}: {len(labels)} rows, but the predictions hold {len(predictions)}; "
            "the folder changed after it was evaluated: evaluate it again"
        )
    per_item = {
        str(row): float(prediction == label)
        for row, (prediction, label) in enumerate(zip(predictions, labels, strict=True))
    }
    return {"metric": "accuracy", "per_query": per_item, "mean": sum(per_item.values()) / len(per_item)}
