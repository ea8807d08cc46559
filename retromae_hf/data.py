"""Data loading for RetroMAE pre-training (stage 1) and contrastive fine-tuning (stage 2).

Stage 1 needs raw text: `load_corpus` reads local files or a Hub dataset into a one-column (`text`) dataset, and
`tokenize_corpus` turns it into `input_ids` plus `word_ids` (the whole-word index of every token, -1 for special
tokens), packing consecutive lines into blocks the way the official RetroMAE preprocessing does. The output feeds
`RetroMAECollator` directly.

Stage 2 needs (query, positive, negatives) rows: `load_pairs` reads them from CSV/TSV/JSONL/Parquet files or a Hub
dataset, and `load_beir_training_pairs` builds them from a BEIR folder (`queries.jsonl`, `corpus.jsonl`,
`qrels/<split>.tsv`). `load_pairs` also recognises DPR's training files (one JSON array, parsed as a stream) and
Tevatron's JSON Lines from their rows, with the passage text joined from title and text as for BEIR.

Everything here is strict about bad input: undecodable bytes, missing columns and empty required values raise
`DataError` with the file and line (or row), and whatever is skipped on purpose (empty lines, over-long sentences
that get cut) is counted in the log. Both `datasets.Dataset` and, with `streaming=True`, `datasets.IterableDataset`
are supported; the two give the same examples in the same order.

This module deliberately imports nothing from the model code.
"""

import csv
import gzip
import itertools
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import datasets
from datasets import Dataset, Features, IterableDataset, List, Value
from datasets.exceptions import DatasetGenerationError
from tqdm.auto import tqdm

from .errors import UserError, remote_resource

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "CORPUS_FEATURES",
    "NEGATIVE_KINDS",
    "PAIR_FEATURES",
    "PASSAGE_ROW_LAYOUTS",
    "SUPPORTED_EXTENSIONS",
    "TOKENIZED_FEATURES",
    "DataError",
    "DataFileNotFoundError",
    "PassageRowLayout",
    "line_ranges",
    "load_beir_training_pairs",
    "load_corpus",
    "load_pairs",
    "passage_row_layout",
    "passage_text",
    "shard_file_specs",
    "tokenize_corpus",
]

PathLike = str | os.PathLike[str]
Sources = PathLike | Sequence[PathLike]

#: File extensions understood by `load_corpus` and `load_pairs`, mapped to the reader used. Text-based formats may
#: also be gzip-compressed (`corpus.txt.gz`).
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".txt": "text",
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}

CORPUS_FEATURES = Features({"text": Value("string")})
PAIR_FEATURES = Features({"query": Value("string"), "positive": Value("string"), "negatives": List(Value("string"))})
TOKENIZED_FEATURES = Features({"input_ids": List(Value("int32")), "word_ids": List(Value("int32"))})

# A file spec travels through `datasets` generators as a plain tuple: (path, format, compressed, size, mtime_ns).
# Size and mtime are there so that the `datasets` cache of `Dataset.from_generator` is invalidated when a file
# changes (its fingerprint hashes the generator's arguments).
_FileSpec = tuple[str, str, bool, int, int]

_CSV_FIELD_LIMIT = 2**31 - 1


class DataError(UserError, ValueError):
    """Input data is unusable: undecodable bytes, a missing column, an empty required value, an unknown id..."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A source that is clearly a local path (it has a data-file suffix or a path separator) does not exist."""


# ---------------------------------------------------------------------------------------------------------- sources
def _file_format(path: Path) -> tuple[str, bool] | None:
    """Return `(format, gzip_compressed)` for a data file name, or None if the extension is not supported."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in SUPPORTED_EXTENSIONS:
        return None
    fmt = SUPPORTED_EXTENSIONS[suffixes[-1]]
    if compressed and fmt == "parquet":
        return None  # parquet compresses internally; a gzipped parquet file is not a thing we read
    return fmt, compressed


def _looks_local(source: str) -> bool:
    """Whether a string that is not an existing path must still be a local path rather than a Hub dataset id.

    Hub ids are `name` or `owner/name` and never start with `.`; so anything with a data-file suffix, a leading
    `/`, `.` or `~`, a backslash, a drive letter, more than one `/`, or whose first component is an existing local
    directory is treated as a (missing) local path.
    """
    if source.startswith(("/", ".", "~", "\\")) or "\\" in source or source.count("/") > 1:
        return True
    if len(source) > 1 and source[1] == ":":
        return True
    if _file_format(Path(source)) is not None or Path(source).suffix.lower() == ".gz":
        return True
    return "/" in source and Path(source.split("/", 1)[0]).is_dir()


def _file_spec(path: Path) -> _FileSpec:
    detected = _file_format(path)
    if detected is None:
        raise DataError(
            f"{path}: unsupported file type; expected one of {', '.join(SUPPORTED_EXTENSIONS)} (text formats may be .gz)"
        )
    stat = path.stat()
    return (str(path.resolve()), detected[0], detected[1], stat.st_size, stat.st_mtime_ns)


def _holds_weights(folder: Path) -> bool:
    patterns = ("*.safetensors", "pytorch_model*.bin", "modules.json")
    return any(next(folder.glob(pattern), None) is not None for pattern in patterns)


def _resolve_sources(sources: Sources) -> list[tuple[str, Any]]:
    """Group sources into `("files", [spec, ...])` runs and `("hub", name)` entries, keeping their order."""
    items: list[PathLike] = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if not items:
        raise DataError("no data sources given")
    groups: list[tuple[str, Any]] = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise DataError(f"a data source must be a path or a Hub dataset name, got {type(item).__name__}")
        path = Path(item).expanduser()
        if path.is_dir() and (path / "config.json").is_file() and _holds_weights(path):
            raise DataError(
                f"{path} is a model folder (config.json and weights), not a corpus: pass text data (.txt, .jsonl, "
                ".csv, ... files, a folder of them, or a Hub dataset name). A model goes to --model."
            )
        if path.is_dir():
            files = _folder_files(path)
            specs = [_file_spec(p) for p in files]
        elif path.is_file():
            specs = [_file_spec(path)]
        elif isinstance(item, os.PathLike) or _looks_local(str(item)):
            raise DataFileNotFoundError(f"{item}: no such file or directory")
        else:
            groups.append(("hub", str(item)))
            continue
        if groups and groups[-1][0] == "files":
            groups[-1][1].extend(specs)
        else:
            groups.append(("files", specs))
    return groups


def _folder_files(folder: Path) -> list[Path]:
    """The data files directly in `folder`, sorted by name, saying in the log what was read and what was skipped.

    Sub-folders are not read (a folder of corpora is passed as several sources, one per sub-folder, so that
    nothing is taken in by accident: a prepared corpus, a checkpoint, a copy of the data); files of other types are
    skipped too. Both are counted, by kind, in a warning.

    Raises:
        DataError: the folder holds no data file (naming what it holds instead).
    """
    files, folders, others = [], [], {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            folders.append(entry.name)
        elif entry.is_file() and _file_format(entry) is not None:
            files.append(entry)
        else:
            kind = "".join(entry.suffixes[-2:]).lower() or "no extension"
            others[kind] = others.get(kind, 0) + 1
    skipped = []
    if folders:
        shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
        skipped.append(f"{len(folders)} sub-folder{'s' if len(folders) > 1 else ''} ({shown})")
    if others:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(others.items()))
        skipped.append(f"{sum(others.values())} file{'s' if sum(others.values()) > 1 else ''} of other types ({kinds})")
    if not files:
        holds = f"; it holds {' and '.join(skipped)}" if skipped else " (it is empty)"
        raise DataError(
            f"{folder}: folder holds no data files ({', '.join(SUPPORTED_EXTENSIONS)}, text formats may be .gz)"
            f"{holds}. Sub-folders are not read: pass each as its own source."
        )
    kinds: dict[str, int] = {}
    for file in files:
        kind = "".join(file.suffixes[-2:] if file.suffix.lower() == ".gz" else file.suffixes[-1:]).lower()
        kinds[kind] = kinds.get(kind, 0) + 1
    read = (
        f"{len(files)} file{'s' if len(files) > 1 else ''} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"
    )
    if skipped:
        logger.warning(
            "%s: reading %s; skipped %s. Only the supported files directly in the folder are read: pass a sub-folder "
            "as its own source to read it too.",
            folder,
            read,
            " and ".join(skipped),
        )
    else:
        logger.info("%s: reading %s", folder, read)
    return files


def _unreadable_gzip(path: str, error: BaseException, lines: int) -> DataError:
    """A `.gz` file that is damaged or not gzip at all (gzip/zlib report it without the file's name)."""
    after = f" after {lines:,} line{'s' if lines != 1 else ''}" if lines else ""
    return DataError(
        f"{path}: cannot be read as a gzip file{after} ({error}). It is damaged (an interrupted download or copy) "
        "or not compressed with gzip: check it with `gzip -t FILE`, and pass an intact copy (or the uncompressed "
        "file, renamed without .gz)."
    )


# ---------------------------------------------------------------------------------------------------------- readers
def _open_binary(path: str, compressed: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _decode_line(raw: bytes, path: str, first: bool, where: "int | str") -> str:
    """One line of a text file as UTF-8 (the byte-order mark dropped from the file's first line). An undecodable
    byte is reported with the line (`where`: its 1-based number, or a description) and how to re-encode the file;
    the description is only formatted then, since this runs for every line of a corpus."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        place = f"{path}, line {where}" if isinstance(where, int) else where
        raise DataError(
            f"{place}: not valid UTF-8 ({error.reason} at byte {error.start} of the line). "
            "The file is in another encoding (often latin-1 or cp1252): re-encode it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > converted.txt`, and pass the converted file."
        ) from error
    return line[1:] if first and line.startswith("\ufeff") else line


def _iter_lines(path: str, compressed: bool) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, line)` with line endings kept, decoding UTF-8 one line at a time.

    Decoding per line lets an undecodable byte be reported with its file and 1-based line number.
    """
    number = 0
    with _open_binary(path, compressed) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                yield number, _decode_line(raw, path, number == 1, number)
        except (OSError, EOFError, zlib.error) as error:
            if not compressed:
                raise
            raise _unreadable_gzip(path, error, number) from error


def line_ranges(path: PathLike, count: int, min_bytes: int = 1 << 20) -> list[tuple[int, int]]:
    """Split an uncompressed line-based file into up to `count` byte ranges `[start, end)` that start at line starts.

    Each line belongs to the range holding its first byte, so the ranges read together give every line exactly
    once; a range is never smaller than `min_bytes` (a small file stays one range). Used to stream one large file
    as several shards (DataLoader workers and ranks read their own) and to prepare it in parallel.
    """
    size = Path(path).stat().st_size
    count = max(1, min(count, size // max(1, min_bytes)))
    if count == 1:
        return [(0, size)]
    bounds = [0]
    with open(path, "rb") as handle:
        for index in range(1, count):
            handle.seek(max(bounds[-1], size * index // count))
            if handle.tell() > 0:
                handle.seek(handle.tell() - 1)
                handle.readline()  # to the start of the next line (or stay, if the byte before was a newline)
            position = handle.tell()
            if bounds[-1] < position < size:
                bounds.append(position)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _iter_line_range(path: str, start: int, end: int) -> Iterator[tuple[str, str]]:
    """Yield `(where, line)` for the lines whose first byte lies in `[start, end)` of an uncompressed file."""
    with open(path, "rb") as handle:
        handle.seek(start)
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # a line that began before `start` belongs to the previous range
        position = handle.tell()
        while position < end:
            raw = handle.readline()
            if not raw:
                break
            where = f"{path}, line starting at byte {position}"
            yield where, _decode_line(raw, path, position == 0, where)
            position += len(raw)


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: invalid JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def _json_is_array(path: str, compressed: bool) -> bool:
    """A `.json` file is either one JSON array of objects or JSON Lines; peek at its first non-space character."""
    with _open_binary(path, compressed) as handle:
        try:
            while chunk := handle.read(4096):
                stripped = chunk.lstrip().lstrip(b"\xef\xbb\xbf").lstrip()
                if stripped:
                    return stripped.startswith(b"[")
        except (OSError, EOFError, zlib.error) as error:
            if not compressed:
                raise
            raise _unreadable_gzip(path, error, 0) from error
    return False


def _iter_json_array(path: str, compressed: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(where, record)` for the objects of a file holding one JSON array, parsed as a stream (`ijson`).

    DPR's training files are single arrays of several GB; only one record is held in memory at a time. A parse
    error names the record it falls in (1-based), so a broken row can be found without reading the file by eye.
    """
    import ijson

    with _open_binary(path, compressed) as handle:
        if handle.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark, which the parser does not skip
            handle.seek(0)
        index = 0
        records = ijson.items(handle, "item", use_float=True)
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except ijson.JSONError as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise DataError(
                    f"{path}, record {index + 1}: invalid JSON ({reason}); the records before it were read. Fix or "
                    "remove that record (a JSON array file must be one well-formed array of objects)."
                ) from error
            index += 1
            where = f"{path}, record {index}"
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _iter_records(spec: _FileSpec, stats: dict[str, int]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(where, record)` for every record of a file; `where` names the file and line/row for messages.

    `.txt` lines become `{"text": line}` (stripped, empty ones included so that the caller can count them).
    Blank lines in JSON Lines / CSV / TSV files are skipped and counted in `stats["blank"]`.
    """
    path, fmt, compressed = spec[0], spec[1], spec[2]
    if fmt == "text":
        for number, line in _iter_lines(path, compressed):
            yield f"{path}, line {number}", {"text": line.strip()}
    elif fmt == "jsonl" or (fmt == "json" and not _json_is_array(path, compressed)):
        for number, line in _iter_lines(path, compressed):
            if not line.strip():
                stats["blank"] = stats.get("blank", 0) + 1
                continue
            where = f"{path}, line {number}"
            yield where, _json_object(line, where)
    elif fmt == "json":
        yield from _iter_json_array(path, compressed)
    elif fmt in ("csv", "tsv"):
        yield from _iter_delimited(path, fmt, compressed, stats)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}, row {row}", record
    else:  # pragma: no cover - _file_format only produces the formats above
        raise DataError(f"{path}: unsupported format {fmt!r}")


def _csv_reader(path: str, fmt: str, compressed: bool) -> Any:
    """A `csv.reader` over the decoded lines: standard quoting for CSV, none at all for TSV."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    lines = (line for _, line in _iter_lines(path, compressed))
    if fmt == "csv":
        return csv.reader(lines)
    return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)


def _iter_delimited(path: str, fmt: str, compressed: bool, stats: dict[str, int]) -> Iterator[tuple[str, dict]]:
    """CSV uses standard quoting; TSV has no quoting at all (a `"` is an ordinary character), as in BEIR/STS files."""
    reader = _csv_reader(path, fmt, compressed)
    try:
        header = next(reader, None)
        if header is None:
            return
        row = 0
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                stats["blank"] = stats.get("blank", 0) + 1
                continue
            row += 1
            where = f"{path}, row {row} (line {reader.line_num})"
            if len(fields) != len(header):
                raise DataError(f"{where}: {len(fields)} fields, but the header has {len(header)}: {header}")
            yield where, dict(zip(header, fields, strict=True))
    except csv.Error as error:
        raise DataError(f"{path}, line {reader.line_num}: malformed {fmt.upper()} ({error})") from error


def _file_columns(spec: _FileSpec) -> list[str] | None:
    """The columns of a file, read eagerly so a missing column fails at load time; None for an empty file."""
    path, fmt, compressed = spec[0], spec[1], spec[2]
    if fmt == "text":
        return ["text"]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if fmt in ("csv", "tsv"):
        return next(_csv_reader(path, fmt, compressed), None)
    # JSON records need not share their keys: the columns are those of the first records together, so a first
    # record that lacks one is reported as that record's problem, not as the file's.
    columns: dict[str, None] = {}
    for count, (_, record) in enumerate(_iter_records(spec, {}), start=1):
        columns.update(dict.fromkeys(record))
        if count == _COLUMN_SAMPLE:
            break
    return list(columns) if columns else None


_COLUMN_SAMPLE = 100  # records of a JSON file read to learn its columns

#: Which option chooses a column, for messages about a missing one.
_COLUMN_FLAGS = {"text": "--text-column", "pairs": "--query-column, --positive-column or --negative-columns"}


def _check_columns(spec: _FileSpec, required: Sequence[str], what: str) -> None:
    columns = _file_columns(spec)
    if columns is None:
        logger.warning("%s is empty: it contributes no %s", spec[0], what)
        return
    missing = [c for c in required if c not in columns]
    if missing:
        flag = _COLUMN_FLAGS.get(what)
        hint = f" Name the column that holds the {what} with {flag}." if flag else ""
        raise DataError(
            f"{spec[0]}: column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not found; "
            f"the file has columns {columns}.{hint}"
        )


def _missing_in_record(where: str, record: Mapping[str, Any], column: str) -> DataError:
    return DataError(
        f"{where}: column {column!r} not found; this record has columns {list(record)}. Every record needs it: add "
        "it to this record or remove the record (if the file names that column otherwise, choose it with "
        "--text-column, or --query-column / --positive-column / --negative-columns for pairs)."
    )


# ------------------------------------------------------------------------------------------------- dataset builders
def _unwrap_generation_error(error: DatasetGenerationError) -> BaseException:
    """`Dataset.from_generator` wraps exceptions raised by the generator; surface our own `DataError` again."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, DataError):
            return cause
        cause = cause.__cause__
    return error


def _from_generator(
    generator: Callable[..., Iterator[dict[str, Any]]],
    gen_kwargs: dict[str, Any],
    features: Features,
    *,
    streaming: bool,
    cache_dir: str | None,
) -> Dataset | IterableDataset:
    """Build a Dataset (written to the `datasets` cache, memory-mapped) or a lazy IterableDataset from a generator.

    `gen_kwargs["files"]` is the only list argument, so an IterableDataset is sharded by file for DataLoader workers.
    """
    if streaming:
        return IterableDataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs)
    try:
        return Dataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs, cache_dir=cache_dir)
    except DatasetGenerationError as error:
        unwrapped = _unwrap_generation_error(error)
        if unwrapped is error:
            raise
        raise unwrapped from None
    except ValueError as error:
        if "corresponds to no data" not in str(error):
            raise
        # `datasets` cannot store a dataset of zero rows and says so in its own terms; name the files instead.
        files = ", ".join(spec[0] for spec in gen_kwargs.get("files", []))
        raise DataError(
            f"{files or 'the data'}: no examples; the file is empty, or every line or value in it is blank"
        ) from None


def _column_names(dataset: Dataset | IterableDataset) -> list[str]:
    """Column names of a dataset; for a streaming dataset without declared features, peek at the first row."""
    names = dataset.column_names
    if names is not None:
        return list(names)
    first = next(iter(dataset.take(1)), None)
    return list(first) if first is not None else []


def _concatenate(parts: list[Dataset | IterableDataset]) -> Dataset | IterableDataset:
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_hub(name: str, *, dataset_config: str | None, split: str, streaming: bool) -> Dataset | IterableDataset:
    logger.info("%r is not a local path: loading it from the Hugging Face Hub (split %r)", name, split)
    try:
        # Without the Hub (offline mode, no network) this fails at once, naming the dataset and the ways to get it.
        with remote_resource("dataset", name, repo_type="dataset"):
            return datasets.load_dataset(name, dataset_config, split=split, streaming=streaming)
    except UserError:
        raise
    except FileNotFoundError as error:
        raise DataFileNotFoundError(
            f"{name!r} is neither an existing local file or directory nor a dataset on the Hub: {error}"
        ) from error


class _RunningCount:
    """Counts skipped or altered items. While streaming (no end in sight) it logs the running total each time it
    reaches 1, 10, 100, ...; otherwise the caller logs the final total once with `report()`.

    `message` is a %-style format whose first placeholder receives the count and the others `args`.
    """

    def __init__(self, message: str, *args: Any, level: int = logging.INFO, live: bool = False) -> None:
        self.message = message
        self.args = args
        self.level = level
        self.live = live
        self.count = 0
        self._next_report = 1

    def add(self, amount: int = 1) -> None:
        self.count += amount
        if self.live and amount and self.count >= self._next_report:
            logger.log(self.level, self.message + " (running total while streaming)", self.count, *self.args)
            while self._next_report <= self.count:
                self._next_report *= 10

    def report(self) -> None:
        if self.count:
            logger.log(self.level, self.message, self.count, *self.args)


# ----------------------------------------------------------------------------------------------------------- corpus
def _generate_corpus(files: list[_FileSpec], text_column: str) -> Iterator[dict[str, str]]:
    """Yield `{"text": ...}` for every non-empty line/value of the files, logging per file how many were empty."""
    for spec in files:
        path, fmt = spec[0], spec[1]
        column = "text" if fmt == "text" else text_column
        stats: dict[str, int] = {}
        empty = 0
        for where, record in _iter_records(spec, stats) if len(spec) == 5 else _iter_range_records(spec, stats):
            if column not in record:
                raise _missing_in_record(where, record, column)
            value = record[column]
            if value is None:
                empty += 1
                continue
            if not isinstance(value, str):
                raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}, expected a string")
            value = value.strip()
            if not value:
                empty += 1
                continue
            yield {"text": value}
        if empty and fmt == "text":
            logger.info("skipped %d empty lines in %s", empty, path)
        elif empty:
            logger.info("skipped %d empty values of column %r in %s", empty, column, path)
        if stats.get("blank"):
            logger.info("skipped %d blank lines in %s", stats["blank"], path)


def _iter_range_records(spec: tuple, stats: dict[str, int]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`_iter_records` for a byte range of a `.txt` or JSON Lines file: `(path, format, compressed, size, mtime,
    start, end)`, as made by `shard_file_specs`."""
    path, fmt, start, end = spec[0], spec[1], spec[5], spec[6]
    for where, line in _iter_line_range(path, start, end):
        if fmt == "text":
            yield where, {"text": line.strip()}
        elif not line.strip():
            stats["blank"] = stats.get("blank", 0) + 1
        else:
            yield where, _json_object(line, where)


def splittable(spec: _FileSpec) -> bool:
    """Whether a file can be read in byte ranges: uncompressed `.txt` or JSON Lines (one record per line)."""
    return not spec[2] and (spec[1] == "text" or (spec[1] in ("jsonl", "json") and not _json_is_array(spec[0], False)))


def shard_file_specs(specs: Sequence[_FileSpec], shards: int, min_bytes: int = 1 << 20) -> list[tuple]:
    """Split files into at least `shards` pieces where they allow it: each splittable file into byte ranges in
    proportion to its size (`line_ranges`), others whole. The pieces, in order, read every record once."""
    total = sum(spec[3] for spec in specs) or 1
    pieces: list[tuple] = []
    for spec in specs:
        if shards <= len(specs) or not splittable(spec):
            pieces.append(spec)
            continue
        count = max(1, -(-shards * spec[3] // total))
        pieces.extend((*spec, start, end) for start, end in line_ranges(spec[0], count, min_bytes))
    return pieces


def _clean_hub_texts(dataset: Dataset | IterableDataset, name: str, streaming: bool) -> Dataset | IterableDataset:
    """Strip texts and drop empty ones, counting them; non-string values are an error."""
    dropped = _RunningCount("skipped %d empty texts in Hub dataset %r", name, live=streaming)

    def clean(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        kept = []
        for value in batch["text"]:
            if value is not None and not isinstance(value, str):
                raise DataError(f"Hub dataset {name!r}: text column holds a {type(value).__name__}, expected a string")
            value = (value or "").strip()
            if value:
                kept.append(value)
        dropped.add(len(batch["text"]) - len(kept))
        return {"text": kept}

    cleaned = dataset.map(clean, batched=True, remove_columns=["text"], features=CORPUS_FEATURES)
    if not streaming:
        dropped.report()
    return cleaned


def load_corpus(
    sources: Sources,
    *,
    text_column: str = "text",
    streaming: bool = False,
    split: str = "train",
    dataset_config: str | None = None,
    cache_dir: str | None = None,
    num_shards: int = 1,
) -> Dataset | IterableDataset:
    """Load raw text for masked auto-encoding pre-training as a dataset with the single column `text`.

    Args:
        sources: a file, a directory (all supported files directly in it, sorted by name), a Hugging Face Hub
            dataset name, or a sequence of these (concatenated in order). Local formats by extension: `.txt` (one
            example per line), `.jsonl`/`.json`, `.csv`, `.tsv` (no quoting), `.parquet`; text formats may be
            gzip-compressed (`.txt.gz`). A string that is not an existing path is a Hub dataset name unless it
            clearly is a path (data-file suffix, leading `/`, `.` or `~`, several `/`), which raises
            `DataFileNotFoundError`.
        text_column: the column holding the text in JSON/CSV/TSV/Parquet files and Hub datasets (ignored for
            `.txt`); it is renamed to `text`.
        streaming: return a lazy `IterableDataset` (for corpora larger than memory or disk cache) instead of a
            `Dataset`. Both give the same examples in the same order.
        split: the split to load from a Hub dataset.
        dataset_config: the configuration (subset) of a Hub dataset, e.g. `"wikitext-103-raw-v1"`.
        cache_dir: where `datasets` writes the non-streaming dataset built from local files (default: its cache).
        num_shards: with `streaming`, split local files into at least this many shards where they allow it (plain
            `.txt` and JSON Lines files into byte ranges aligned to line starts, `shard_file_specs`), so that
            DataLoader workers and ranks each read their own share (`IterableDataset.n_shards`). The examples and
            their order are the same for any value.

    Lines and values are stripped; empty ones are skipped and their number is logged per file ("skipped N empty
    lines in FILE"; while streaming the counts are logged as the stream is read). When a non-streaming dataset is
    served from the `datasets` cache, nothing is re-read and nothing is logged again.

    Raises:
        DataError: a line that is not valid UTF-8 (with file and line number), a missing `text_column` (with the
            file and the columns it has), a non-string text value, or malformed JSON/CSV.
        DataFileNotFoundError: a local-looking path that does not exist (also a `FileNotFoundError`).
    """
    parts: list[Dataset | IterableDataset] = []
    for kind, payload in _resolve_sources(sources):
        if kind == "files":
            for spec in payload:
                _check_columns(spec, [text_column] if spec[1] != "text" else [], "text")
            if streaming and num_shards > 1:
                payload = shard_file_specs(payload, num_shards)
            parts.append(
                _from_generator(
                    _generate_corpus,
                    {"files": payload, "text_column": text_column},
                    CORPUS_FEATURES,
                    streaming=streaming,
                    cache_dir=cache_dir,
                )
            )
            continue
        dataset = _load_hub(payload, dataset_config=dataset_config, split=split, streaming=streaming)
        columns = _column_names(dataset)
        if text_column not in columns:
            raise DataError(
                f"column {text_column!r} not found in Hub dataset {payload!r} (split {split!r}); "
                f"it has columns {columns}"
            )
        dataset = dataset.select_columns([text_column])
        if text_column != "text":
            dataset = dataset.rename_column(text_column, "text")
        parts.append(_clean_hub_texts(dataset, payload, streaming))
    corpus = _concatenate(parts)
    if not streaming:
        logger.info("loaded a corpus of %d texts", len(corpus))
    return corpus


# ------------------------------------------------------------------------------------------- vocabulary coverage
#: Above this share of [UNK] among a corpus' tokens a tokenizer is refused: the text is mostly unknown to it.
UNKNOWN_SHARE_LIMIT = 0.5
#: Above this share a warning says so (an English WordPiece vocabulary gives well under 1% on English text).
UNKNOWN_SHARE_WARNING = 0.05
_SAMPLE_CHARS = 2000  # of each text, enough to measure and below any model's length in tokens


def unknown_share(tokenizer: "PreTrainedTokenizerBase", texts: Sequence[str]) -> tuple[float, int]:
    """The share of the unknown token among the tokens of `texts` (special tokens not counted), and the number of
    tokens counted. (0.0, 0) for a tokenizer without an unknown token (byte-level BPE has none) or no text."""
    if tokenizer.unk_token_id is None or not texts:
        return 0.0, 0
    ids = tokenizer([text[:_SAMPLE_CHARS] for text in texts], add_special_tokens=False)["input_ids"]
    return unknown_share_of_ids(ids, tokenizer)


def unknown_share_of_ids(rows: Sequence[Sequence[int]], tokenizer: "PreTrainedTokenizerBase") -> tuple[float, int]:
    """`unknown_share` of token ids already made (a prepared or tokenized corpus): special tokens not counted."""
    unknown = tokenizer.unk_token_id
    if unknown is None:
        return 0.0, 0
    special = set(tokenizer.all_special_ids) - {unknown}
    total = found = 0
    for row in rows:
        for token in row:
            if token == unknown:
                found += 1
            elif token in special:
                continue
            total += 1
    return (found / total if total else 0.0), total


def check_unknown_share(
    tokenizer: "PreTrainedTokenizerBase",
    share: float,
    tokens: int,
    *,
    what: str,
    fix: str,
    allow_flag: str | None = None,
    allowed: bool = False,
) -> None:
    """The one vocabulary check of every path (prepare, train, export, evaluate): refuse a tokenizer that turns
    `what` mostly into its unknown token (`share` of `tokens` measured by `unknown_share`), warn above 5%.

    Raises:
        DataError: the share is above `UNKNOWN_SHARE_LIMIT` and not `allowed`, with the measured share and `fix`.
    """
    if not tokens:
        return
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    measured = (
        f"the tokenizer {name} ({len(tokenizer):,} tokens) turns {share:.0%} of {what} into its unknown token "
        f"{tokenizer.unk_token} (measured on {tokens:,} tokens)"
    )
    if share > UNKNOWN_SHARE_LIMIT and not allowed:
        also = f" Pass {allow_flag} to go ahead anyway." if allow_flag else ""
        raise DataError(
            f"{measured}: it does not fit this text (another model's tokenizer, or one too small or trained on "
            f"other text), and a model would learn or encode almost nothing. {fix}{also}"
        )
    if share > UNKNOWN_SHARE_WARNING:
        logger.warning("%s: is it the right tokenizer?", measured)


# --------------------------------------------------------------------------------------------------- tokenization
def _special_tokens_template(tokenizer: "PreTrainedTokenizerBase") -> tuple[list[int], list[int]]:
    """The ids a fast tokenizer puts before and after a single sequence (e.g. `[CLS]` and `[SEP]` for BERT).

    Transformers 5 fast tokenizers add special tokens in their Rust post-processor only, so the layout is read off
    one encoded probe: tokens with no sequence id are special.
    """
    probe = "retromae probe"
    with_specials = tokenizer(probe, add_special_tokens=True)
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    ids = list(with_specials["input_ids"])
    sequence_ids = with_specials.sequence_ids(0)
    content = [i for i, s in enumerate(sequence_ids) if s is not None]
    if not content:
        raise ValueError(f"{type(tokenizer).__name__} produced no content tokens for {probe!r}")
    first, last = content[0], content[-1]
    prefix, suffix = ids[:first], ids[last + 1 :]
    expected = tokenizer.num_special_tokens_to_add(pair=False)
    if ids[first : last + 1] != list(plain) or len(prefix) + len(suffix) != expected:
        raise ValueError(
            f"cannot tell how {type(tokenizer).__name__} adds special tokens around a sequence "
            f"(got {ids} with and {plain} without special tokens)"
        )
    return prefix, suffix


def _dense_word_ids(word_ids: Sequence[int | None]) -> list[int]:
    """Renumber word ids 0, 1, 2, ... in order of appearance (a word that produced no token leaves no gap)."""
    mapping: dict[int, int] = {}
    out = []
    for word in word_ids:
        if word is None:
            out.append(-1)
        else:
            out.append(mapping.setdefault(word, len(mapping)))
    return out


class _CorpusTokenizer:
    """Batched `map` function: texts -> (packed) `input_ids` and `word_ids` with special tokens added."""

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", max_length: int, packing: bool, live: bool) -> None:
        self.tokenizer = tokenizer
        self.packing = packing
        self.prefix, self.suffix = _special_tokens_template(tokenizer)
        self.block = max_length - len(self.prefix) - len(self.suffix)
        if self.block < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for text next to {len(self.prefix) + len(self.suffix)} "
                "special tokens"
            )
        self.rows = 0
        self.empty = _RunningCount("skipped %d texts that produced no tokens", live=live)
        if packing:
            self.altered = _RunningCount(
                "cut %d sentences longer than a block of %d tokens into block-sized pieces", self.block, live=live
            )
        else:
            self.altered = _RunningCount(
                "truncated %d texts to max_length=%d tokens", max_length, level=logging.WARNING, live=live
            )

    def _emit(self, out: dict[str, list[list[int]]], ids: list[int], words: list[int]) -> None:
        out["input_ids"].append(self.prefix + ids + self.suffix)
        out["word_ids"].append([-1] * len(self.prefix) + words + [-1] * len(self.suffix))

    def __call__(self, batch: Mapping[str, list[Any]]) -> dict[str, list[list[int]]]:
        texts = [text if isinstance(text, str) else "" for text in batch["text"]]
        self.rows += len(texts)
        # Long texts (a book on one line) are tokenized piece by piece below, so that memory stays bounded: the
        # tokenizer's encodings of a 50 MB line at once take gigabytes.
        short = [text if len(text) <= PIECE_CHARS else "" for text in texts]
        encoded = self.tokenizer(
            short, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
        )
        out: dict[str, list[list[int]]] = {"input_ids": [], "word_ids": []}
        block_ids: list[int] = []
        block_words: list[int] = []

        def flush() -> None:
            if block_ids:
                self._emit(out, block_ids.copy(), block_words.copy())
                block_ids.clear()
                block_words.clear()

        def append(ids: list[int], words: list[int]) -> None:
            # Words of a sentence are numbered 0..n-1 (possibly starting later for a cut piece); shift them past
            # the words already in the block so that ids stay distinct across sentences.
            offset = (max(block_words) + 1 if block_words else 0) - words[0]
            block_ids.extend(ids)
            block_words.extend(w + offset for w in words)

        def long_sentence(segments: Iterator[tuple[list[int], list[int]]]) -> None:
            # A sentence longer than a block: full-size pieces become blocks of their own, the remainder starts
            # the next block and later sentences may join it.
            self.altered.add()
            flush()
            for ids, words in segments:
                start = 0
                while start < len(ids):
                    room = self.block - len(block_ids)
                    append(list(ids[start : start + room]), words[start : start + room])
                    start += room
                    if len(block_ids) == self.block:
                        flush()

        for index, ids in enumerate(encoded["input_ids"]):
            if len(texts[index]) > PIECE_CHARS:
                segments = self._pieces(texts[index])
                if not self.packing:
                    first = next(segments, None)
                    if first is None:
                        self.empty.add()
                        continue
                    self.altered.add()
                    self._emit(out, first[0][: self.block], first[1][: self.block])
                    continue
                long_sentence(segments)
                continue
            if not ids:
                self.empty.add()
                continue
            words = _dense_word_ids(encoded.word_ids(index))
            if not self.packing:
                if len(ids) > self.block:
                    self.altered.add()
                    ids, words = ids[: self.block], words[: self.block]
                self._emit(out, list(ids), words)
                continue
            if len(ids) > self.block:
                long_sentence(iter([(list(ids), words)]))
                continue
            if len(block_ids) + len(ids) > self.block:
                flush()
            append(list(ids), words)
        flush()
        return out

    def _pieces(self, text: str) -> Iterator[tuple[list[int], list[int]]]:
        """(ids, word ids) of a long text, tokenized in pieces of at most `PIECE_CHARS` characters cut at spaces;
        word ids continue across pieces."""
        first_word = 0
        for piece in split_long_text(text):
            encoding = self.tokenizer(
                piece, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
            )
            ids = list(encoding["input_ids"])
            if not ids:
                continue
            words = [w + first_word for w in _dense_word_ids(encoding.word_ids())]
            first_word = max(words) + 1
            yield ids, words


#: Texts longer than this many characters are tokenized piece by piece (see `split_long_text`).
PIECE_CHARS = 100_000


def split_long_text(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """`text` in consecutive pieces of at most `size` characters, cut at a space where there is one in the second
    half of the piece (so words stay whole), otherwise after exactly `size` characters."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            if cut > start:
                end = cut
        yield text[start:end]
        start = end


def tokenize_corpus(
    dataset: Dataset | IterableDataset,
    tokenizer: "PreTrainedTokenizerBase",
    *,
    max_length: int,
    packing: bool = True,
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """Tokenize a `text` dataset into `input_ids` and `word_ids` for `RetroMAECollator`.

    Args:
        dataset: a `Dataset` or `IterableDataset` with a `text` column (e.g. from `load_corpus`).
        tokenizer: a *fast* tokenizer; its `word_ids()` give whole words for WordPiece, BPE and SentencePiece alike.
        max_length: the length of every output example, special tokens included.
        packing: as in the official RetroMAE preprocessing, concatenate consecutive lines into blocks of up to
            `max_length - <number of special tokens>` tokens without splitting a line that fits in a block; a line
            longer than a block is cut into block-sized pieces (the count is logged). Blocks are formed within each
            map batch of `batch_size` lines, so streaming and non-streaming give the same blocks. With
            `packing=False`, each line is one example, truncated to `max_length` (the count is logged).
        batch_size: number of lines per `map` batch.
        num_proc: worker processes for `Dataset.map` (ignored for an `IterableDataset`). With several processes
            each worker logs its own running counts (as while streaming) instead of one total at the end.

    Returns:
        A dataset of the same kind with columns `input_ids` (list of int, special tokens included) and `word_ids`
        (same length: the index of the whole word each token belongs to, counted from 0 within the example and
        distinct across the lines packed into it; -1 for special tokens). Texts that produce no tokens are skipped
        and counted.

    Raises:
        ValueError: a slow (Python) tokenizer, or a `max_length` with no room for text.
        DataError: the dataset has no `text` column.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenize_corpus needs a fast tokenizer (backed by the `tokenizers` library) for word_ids(); "
            f"{type(tokenizer).__name__} is a slow one. Load it with AutoTokenizer.from_pretrained(...), which "
            "returns the fast version when one exists."
        )
    streaming = isinstance(dataset, IterableDataset)
    columns = _column_names(dataset)
    if "text" not in columns:
        raise DataError(f"tokenize_corpus needs a 'text' column; the dataset has columns {columns}")
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and max_length > model_max:
        logger.warning("max_length=%d is longer than the tokenizer's model_max_length=%d", max_length, model_max)
    multiprocess = not streaming and num_proc is not None and num_proc > 1
    function = _CorpusTokenizer(tokenizer, max_length, packing, live=streaming or multiprocess)
    if streaming:
        return dataset.map(
            function, batched=True, batch_size=batch_size, remove_columns=columns, features=TOKENIZED_FEATURES
        )
    tokenized = dataset.map(
        function,
        batched=True,
        batch_size=batch_size,
        remove_columns=columns,
        features=TOKENIZED_FEATURES,
        num_proc=num_proc,
        desc="Tokenizing" + (" and packing" if packing else ""),
    )
    if function.rows:
        function.empty.report()
        function.altered.report()
        logger.info(
            "tokenized %d texts into %d examples of at most %d tokens", function.rows, len(tokenized), max_length
        )
    elif len(dataset) and not multiprocess:
        logger.info("tokenized corpus loaded from the datasets cache (counts were logged when it was built)")
    return tokenized


# ----------------------------------------------------------------------------------- DPR and Tevatron training rows
#: Which negatives of a DPR or Tevatron row become the pair's negatives (`load_pairs(negative_kind=...)`): DPR's
#: `hard_negative_ctxs` (BM25 passages without the answer), its `negative_ctxs` (random passages), or both.
#: Tevatron rows have one list, `negative_passages` (hard negatives), and no random ones.
NEGATIVE_KINDS = ("hard", "random", "both")


@dataclass(frozen=True)
class PassageRowLayout:
    """Where a retrieval training format keeps the query, the positive passages and each kind of negatives."""

    name: str
    query: str
    positives: str
    hard_negatives: str | None
    random_negatives: str | None


#: The formats recognised from a file's first record, by the key that holds its positive passages.
PASSAGE_ROW_LAYOUTS = (
    PassageRowLayout("DPR", "question", "positive_ctxs", "hard_negative_ctxs", "negative_ctxs"),
    PassageRowLayout("Tevatron", "query", "positive_passages", "negative_passages", None),
)


def passage_text(title: Any, text: Any) -> str:
    """A passage as one text, the way BEIR folders are read everywhere in this package: `title + " " + text`
    when the title is non-empty, else the text (sentence-transformers and mteb join BEIR titles the same way)."""
    title = str(title or "").strip()
    text = str(text or "").strip()
    return f"{title} {text}" if title and text else (title or text)


def passage_row_layout(record: Mapping[str, Any]) -> PassageRowLayout | None:
    """The DPR or Tevatron layout of a record (`positive_ctxs` or `positive_passages` among its keys), or None."""
    return next((layout for layout in PASSAGE_ROW_LAYOUTS if layout.positives in record), None)


def _file_layout(spec: _FileSpec) -> PassageRowLayout | None:
    """The DPR/Tevatron layout of a JSON file, detected from its first record; None for other files."""
    if spec[1] not in ("json", "jsonl"):
        return None
    first = next(iter(_iter_records(spec, {})), None)
    return passage_row_layout(first[1]) if first is not None else None


def _passages(record: Mapping[str, Any], key: str | None, where: str, required: bool) -> list[str]:
    """The passage texts of one list-valued key (`[{title, text, ...}, ...]`); a missing optional key is empty."""
    if key is None or (key not in record and not required):
        return []
    if key not in record:
        raise _missing_in_record(where, record, key)
    value = record[key]
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: {key!r} holds a {type(value).__name__}, expected a list of passages")
    texts = []
    for position, passage in enumerate(value):
        if not isinstance(passage, dict) or "text" not in passage:
            got = f"keys {list(passage)}" if isinstance(passage, dict) else f"a {type(passage).__name__}"
            raise DataError(
                f"{where}: {key}[{position}] is {got}; every passage needs a `text` (and optionally a `title`)"
            )
        text = passage_text(passage.get("title"), passage["text"])
        if text:
            texts.append(text)
    return texts


class _PassageRowBuilder:
    """Turns DPR or Tevatron rows into `{"query", "positive", "negatives"}` pairs.

    The positive is the row's first positive passage (DPR's trainer does the same unless `shuffle_positives` is
    set); the negatives are those of `negative_kind`, at most `max_negatives` of each kind (0: all), the first in
    file order. Rows without a positive are skipped and counted, as
    DPR's own trainer drops them; so are rows without negatives when `require_negatives` (training that samples
    hard negatives cannot use them).
    """

    def __init__(self, negative_kind: str, max_negatives: int, require_negatives: bool, skip_empty: bool) -> None:
        self.negative_kind = negative_kind
        self.max_negatives = max_negatives
        self.require_negatives = require_negatives
        self.skip_empty = skip_empty

    def negative_keys(self, layout: PassageRowLayout) -> list[str | None]:
        keys = {"hard": [layout.hard_negatives], "random": [layout.random_negatives]}
        return keys.get(self.negative_kind, [layout.hard_negatives, layout.random_negatives])

    def build(self, layout: PassageRowLayout, record: Mapping[str, Any], where: str) -> tuple[dict | None, str | None]:
        """Return the pair, or None and why the row was skipped (`"query"`, `"positive"`, `"negatives"`)."""
        query = _text_value(record, layout.query, where)
        if not query:
            if self.skip_empty:
                return None, "query"
            raise DataError(
                f"{where}: empty query (key {layout.query!r} of a {layout.name} row); pass skip_empty=True "
                "(recipe key of the source: skip_empty: true) to skip such rows with a count"
            )
        positives = _passages(record, layout.positives, where, required=True)
        if not positives:
            return None, "positive"
        negatives: list[str] = []
        for key in self.negative_keys(layout):
            texts = _passages(record, key, where, required=False)
            negatives.extend(texts[: self.max_negatives] if self.max_negatives else texts)
        if not negatives and self.require_negatives:
            return None, "negatives"
        return {"query": query, "positive": positives[0], "negatives": negatives}, None


def _check_negative_options(negative_kind: str, max_negatives: int) -> None:
    if negative_kind not in NEGATIVE_KINDS:
        raise DataError(
            f"negative_kind must be one of {', '.join(map(repr, NEGATIVE_KINDS))} (which negatives of DPR / "
            f"Tevatron rows to train on), got {negative_kind!r}"
        )
    if isinstance(max_negatives, bool) or not isinstance(max_negatives, int) or max_negatives < 0:
        raise DataError(f"max_negatives must be a whole number >= 0 (0 keeps all), got {max_negatives!r}")


def _check_layout(spec: _FileSpec, layout: PassageRowLayout, negative_kind: str) -> None:
    if negative_kind == "random" and layout.random_negatives is None:
        raise DataError(
            f"{spec[0]}: {layout.name} rows have no random negatives (only {layout.hard_negatives!r}, which are hard "
            "negatives); choose negative_kind 'hard' (or 'both') for this file"
        )
    logger.info(
        "%s: %s training rows (query %r, first of %r as the positive, %s negatives)",
        spec[0], layout.name, layout.query, layout.positives, negative_kind,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ pairs
def _text_value(record: Mapping[str, Any], column: str, where: str) -> str:
    if column not in record:
        raise _missing_in_record(where, record, column)
    value = record[column]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}, expected a string")
    return value.strip()


def _negatives(record: Mapping[str, Any], columns: Sequence[str], where: str) -> tuple[list[str], int]:
    """Collect negatives from several string columns and/or list-valued columns; return them and the empty count."""
    negatives: list[str] = []
    empty = 0
    for column in columns:
        if column not in record:
            raise _missing_in_record(where, record, column)
        value = record[column]
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                empty += 1
                continue
            if not isinstance(item, str):
                raise DataError(f"{where}: column {column!r} holds a {type(item).__name__}, expected strings")
            item = item.strip()
            if item:
                negatives.append(item)
            else:
                empty += 1
    return negatives, empty


class _PairBuilder:
    """Turns records into `{"query", "positive", "negatives"}` rows, checking required values."""

    def __init__(
        self, query_column: str, positive_column: str, negative_columns: Sequence[str], skip_empty: bool
    ) -> None:
        self.query_column = query_column
        self.positive_column = positive_column
        self.negative_columns = tuple(negative_columns)
        self.skip_empty = skip_empty

    def build(self, record: Mapping[str, Any], where: str) -> tuple[dict[str, Any] | None, int]:
        """Return the pair (None when skipped because of an empty query/positive) and the number of empty negatives."""
        query = _text_value(record, self.query_column, where)
        positive = _text_value(record, self.positive_column, where)
        negatives, empty_negatives = _negatives(record, self.negative_columns, where)
        for value, role, column in ((query, "query", self.query_column), (positive, "positive", self.positive_column)):
            if not value:
                if self.skip_empty:
                    return None, empty_negatives
                raise DataError(
                    f"{where}: empty {role} (column {column!r}); pass skip_empty=True to skip such rows with a count"
                )
        return {"query": query, "positive": positive, "negatives": negatives}, empty_negatives


def _generate_pairs(
    files: list[_FileSpec],
    query_column: str,
    positive_column: str,
    negative_columns: tuple[str, ...],
    skip_empty: bool,
    negative_kind: str = "hard",
    max_negatives: int = 0,
    require_negatives: bool = False,
) -> Iterator[dict[str, Any]]:
    builder = _PairBuilder(query_column, positive_column, negative_columns, skip_empty)
    passage_builder = _PassageRowBuilder(negative_kind, max_negatives, require_negatives, skip_empty)
    for spec in files:
        layout = _file_layout(spec)
        if layout is not None:
            yield from _generate_passage_pairs(spec, layout, passage_builder)
            continue
        stats: dict[str, int] = {}
        skipped = empty_negatives = 0
        for where, record in _iter_records(spec, stats):
            pair, empty = builder.build(record, where)
            empty_negatives += empty
            if pair is None:
                skipped += 1
            else:
                yield pair
        if skipped:
            logger.warning("skipped %d rows with an empty query or positive in %s", skipped, spec[0])
        if empty_negatives:
            logger.info("dropped %d empty negative values in %s", empty_negatives, spec[0])
        if stats.get("blank"):
            logger.info("skipped %d blank lines in %s", stats["blank"], spec[0])


def _generate_passage_pairs(
    spec: _FileSpec, layout: PassageRowLayout, builder: _PassageRowBuilder
) -> Iterator[dict[str, Any]]:
    """Pairs from one DPR or Tevatron file, with a progress bar (these files hold hundreds of thousands of rows)."""
    stats: dict[str, int] = {}
    skipped = dict.fromkeys(("query", "positive", "negatives"), 0)
    rows = tqdm(_iter_records(spec, stats), desc=f"Reading {Path(spec[0]).name}", unit=" rows", disable=None)
    for where, record in rows:
        if passage_row_layout(record) is not layout:
            found = passage_row_layout(record)
            raise DataError(
                f"{where}: a {found.name if found else 'non-DPR, non-Tevatron'} row in a file whose first row is "
                f"{layout.name} (key {layout.positives!r}); one file holds one format"
            )
        pair, reason = builder.build(layout, record, where)
        if pair is None:
            skipped[str(reason)] += 1
        else:
            yield pair
    if skipped["positive"]:
        logger.warning("skipped %d %s rows without a positive passage in %s", skipped["positive"], layout.name, spec[0])
    if skipped["negatives"]:
        logger.warning(
            "skipped %d %s rows without %s negatives in %s (training samples hard negatives: num_negatives > 0)",
            skipped["negatives"], layout.name, builder.negative_kind, spec[0],
        )  # fmt: skip
    if skipped["query"]:
        logger.warning("skipped %d %s rows with an empty query in %s", skipped["query"], layout.name, spec[0])
    if stats.get("blank"):
        logger.info("skipped %d blank lines in %s", stats["blank"], spec[0])


def _hub_passage_pairs(
    dataset: Dataset | IterableDataset,
    name: str,
    layout: PassageRowLayout,
    builder: _PassageRowBuilder,
    streaming: bool,
) -> Dataset | IterableDataset:
    """Pairs from a Hub dataset in DPR's or Tevatron's layout (Tevatron publishes its training sets this way)."""
    columns = _column_names(dataset)
    if builder.negative_kind == "random" and layout.random_negatives is None:
        raise DataError(
            f"Hub dataset {name!r}: {layout.name} rows have no random negatives (only {layout.hard_negatives!r}); "
            "choose negative_kind 'hard' (or 'both') for it"
        )
    skipped = {
        reason: _RunningCount(f"skipped %d {layout.name} rows {why} in Hub dataset %r", name, level=logging.WARNING,
                              live=streaming)
        for reason, why in (("query", "with an empty query"), ("positive", "without a positive passage"),
                            ("negatives", f"without {builder.negative_kind} negatives"))
    }  # fmt: skip

    def convert(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"query": [], "positive": [], "negatives": []}
        for offset, index in enumerate(indices):
            record = {column: batch[column][offset] for column in columns}
            pair, reason = builder.build(layout, record, f"Hub dataset {name!r}, row {index + 1}")
            if pair is None:
                skipped[str(reason)].add()
                continue
            for key, value in pair.items():
                out[key].append(value)
        return out

    logger.info("Hub dataset %r: %s training rows (%s negatives)", name, layout.name, builder.negative_kind)
    converted = dataset.map(convert, batched=True, with_indices=True, remove_columns=columns, features=PAIR_FEATURES)
    if not streaming:
        for count in skipped.values():
            count.report()
    return converted


def _hub_pairs(
    dataset: Dataset | IterableDataset, name: str, builder: _PairBuilder, streaming: bool
) -> Dataset | IterableDataset:
    columns = _column_names(dataset)
    required = [builder.query_column, builder.positive_column, *builder.negative_columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not found in Hub dataset "
            f"{name!r}; it has columns {columns}"
        )
    skipped = _RunningCount(
        "skipped %d rows with an empty query or positive in Hub dataset %r", name, level=logging.WARNING, live=streaming
    )
    empty_negatives = _RunningCount("dropped %d empty negative values in Hub dataset %r", name, live=streaming)

    def convert(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"query": [], "positive": [], "negatives": []}
        for offset, index in enumerate(indices):
            record = {column: batch[column][offset] for column in required}
            pair, empty = builder.build(record, f"Hub dataset {name!r}, row {index + 1}")
            empty_negatives.add(empty)
            if pair is None:
                skipped.add()
                continue
            for key, value in pair.items():
                out[key].append(value)
        return out

    converted = dataset.map(convert, batched=True, with_indices=True, remove_columns=columns, features=PAIR_FEATURES)
    if not streaming:
        skipped.report()
        empty_negatives.report()
    return converted


def load_pairs(
    sources: Sources,
    *,
    query_column: str = "query",
    positive_column: str = "positive",
    negative_columns: Sequence[str] | str | None = None,
    streaming: bool = False,
    split: str = "train",
    dataset_config: str | None = None,
    skip_empty: bool = False,
    cache_dir: str | None = None,
    negative_kind: str = "hard",
    max_negatives: int = 0,
    require_negatives: bool = False,
) -> Dataset | IterableDataset:
    """Load (query, positive, negatives) rows for contrastive training.

    JSON and JSON Lines files in DPR's layout (`{question, answers, positive_ctxs: [{title, text}, ...],
    negative_ctxs, hard_negative_ctxs}`, e.g. `biencoder-nq-train.json`, one JSON array) or Tevatron's (`{query_id,
    query, positive_passages: [{docid, title, text}], negative_passages}`) are recognised from their first record
    (Hub datasets from their columns) and read as such, whatever the column options say: the query, the first positive passage, and the negatives
    chosen by `negative_kind`; a passage is `title + " " + text` (`passage_text`). JSON arrays are parsed as a
    stream, so a file of several GB is never held in memory.

    Args:
        sources: files, directories or Hub dataset names, as for `load_corpus` (`.txt` files have no columns and
            are refused). TSV files have no quoting; CSV files use standard quoting.
        query_column: the column with the query (or anchor sentence).
        positive_column: the column with the positive passage.
        negative_columns: the column(s) with hard negatives: several string columns (`["hard_neg", "neg_1"]`), one
            list-valued column, or a mix; None for none. Empty or null negatives are dropped (and counted).
        streaming: return an `IterableDataset`.
        split: the split of a Hub dataset.
        dataset_config: the configuration (subset) of a Hub dataset.
        skip_empty: skip rows whose query or positive is empty and log their number, instead of raising.
        cache_dir: where `datasets` writes the non-streaming dataset built from local files.
        negative_kind: for DPR and Tevatron files, which negatives to keep: `"hard"` (the default; DPR's
            `hard_negative_ctxs`, Tevatron's `negative_passages`), `"random"` (DPR's `negative_ctxs`) or `"both"`.
        max_negatives: for DPR and Tevatron files, keep at most this many negatives of each kind per row, the first
            ones in file order; 0 (the default) keeps all.
        require_negatives: for DPR and Tevatron files, skip (and count) rows that have no negative of
            `negative_kind`, for training that samples hard negatives for every query.

    Returns:
        A dataset with columns `query` (str), `positive` (str) and `negatives` (list of str, possibly empty);
        values are stripped of surrounding whitespace.

    Raises:
        DataError: a missing column (naming it, the file and the columns it has), an empty query or positive
            (with the row), a non-string value, or undecodable/malformed input.
        DataFileNotFoundError: a local-looking path that does not exist.
    """
    if negative_columns is None:
        negatives: tuple[str, ...] = ()
    elif isinstance(negative_columns, str):
        negatives = (negative_columns,)
    else:
        negatives = tuple(negative_columns)
    _check_negative_options(negative_kind, max_negatives)
    builder = _PairBuilder(query_column, positive_column, negatives, skip_empty)
    parts: list[Dataset | IterableDataset] = []
    for kind, payload in _resolve_sources(sources):
        if kind == "files":
            for spec in payload:
                if spec[1] == "text":
                    raise DataError(f"{spec[0]}: a .txt file has no columns; pairs need CSV, TSV, JSON(L) or Parquet")
                layout = _file_layout(spec)
                if layout is not None:
                    _check_layout(spec, layout, negative_kind)
                else:
                    _check_columns(spec, [query_column, positive_column, *negatives], "pairs")
            gen_kwargs = {
                "files": payload,
                "query_column": query_column,
                "positive_column": positive_column,
                "negative_columns": negatives,
                "skip_empty": skip_empty,
                "negative_kind": negative_kind,
                "max_negatives": max_negatives,
                "require_negatives": require_negatives,
            }
            parts.append(
                _from_generator(_generate_pairs, gen_kwargs, PAIR_FEATURES, streaming=streaming, cache_dir=cache_dir)
            )
            continue
        dataset = _load_hub(payload, dataset_config=dataset_config, split=split, streaming=streaming)
        hub_columns = _column_names(dataset)
        layout = next((layout for layout in PASSAGE_ROW_LAYOUTS if layout.positives in hub_columns), None)
        if layout is not None:
            passage_builder = _PassageRowBuilder(negative_kind, max_negatives, require_negatives, skip_empty)
            parts.append(_hub_passage_pairs(dataset, payload, layout, passage_builder, streaming))
        else:
            parts.append(_hub_pairs(dataset, payload, builder, streaming))
    pairs = _concatenate(parts)
    if not streaming:
        logger.info("loaded %d training pairs", len(pairs))
    return pairs


# ------------------------------------------------------------------------------------------------------------- BEIR
def _read_qrels(path: Path) -> tuple[list[tuple[int, str, str]], int]:
    """Read a BEIR qrels TSV: `(line, query_id, doc_id)` for every judgement with score > 0, and how many had <= 0."""
    judgements: list[tuple[int, str, str]] = []
    not_positive = 0
    for number, line in _iter_lines(str(path), False):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3:
            raise DataError(f"{path}, line {number}: expected 3 tab-separated fields, got {len(fields)}")
        query_id, doc_id, score_text = (field.strip() for field in fields)
        try:
            score = float(score_text)
        except ValueError:
            if number == 1:
                continue  # the header line, `query-id  corpus-id  score`
            raise DataError(f"{path}, line {number}: score {score_text!r} is not a number") from None
        if score > 0:
            judgements.append((number, query_id, doc_id))
        else:
            not_positive += 1
    return judgements, not_positive


def _read_beir_texts(path: Path, wanted: set[str], with_title: bool) -> dict[str, str]:
    """Texts of the wanted ids in a BEIR `queries.jsonl`/`corpus.jsonl` (title + " " + text for documents)."""
    if not path.is_file():
        raise DataFileNotFoundError(f"{path}: no such file (expected in a BEIR folder)")
    found: dict[str, str] = {}
    lines = _iter_lines(str(path), False)
    for number, line in tqdm(lines, desc=f"Reading {path.name}", unit=" lines", mininterval=2.0, disable=None):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        record = _json_object(line, where)
        if "_id" not in record:
            raise _missing_in_record(where, record, "_id")
        key = str(record["_id"])
        if key not in wanted:
            continue
        text = passage_text(record.get("title") if with_title else "", record.get("text"))
        if not text:
            raise DataError(f"{where}: id {key!r} has an empty text")
        found[key] = text
    return found


def load_beir_training_pairs(folder: PathLike, split: str = "train", *, skip_unknown_ids: bool = False) -> Dataset:
    """Build (query, positive) training pairs from a BEIR-format folder.

    Reads `qrels/<split>.tsv` (a header line, then `query-id<TAB>corpus-id<TAB>score`; judgements with score > 0
    are kept, one pair per line), `queries.jsonl` and `corpus.jsonl` (only the documents that are judged are kept
    in memory, so large corpora are fine). The positive text is `title + " " + text` when the title is non-empty,
    else `text`.

    Args:
        folder: the BEIR dataset folder.
        split: the qrels split to read.
        skip_unknown_ids: skip judgements whose query or document id is not in the folder (logging how many),
            instead of raising.

    Returns:
        A `Dataset` with the columns of `load_pairs`: `query`, `positive` and `negatives` (always empty here).

    Raises:
        DataError: an id in the qrels that is unknown (naming the id and the files), a malformed qrels line, or an
            empty query/document text.
        DataFileNotFoundError: a missing file.
    """
    folder = Path(folder).expanduser()
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DataFileNotFoundError(f"{qrels_path}: no such file (no qrels for split {split!r} in {folder})")
    judgements, not_positive = _read_qrels(qrels_path)
    queries_path, corpus_path = folder / "queries.jsonl", folder / "corpus.jsonl"
    queries = _read_beir_texts(queries_path, {q for _, q, _ in judgements}, with_title=False)
    documents = _read_beir_texts(corpus_path, {d for _, _, d in judgements}, with_title=True)
    pairs: dict[str, list[Any]] = {"query": [], "positive": [], "negatives": []}
    unknown = 0
    for number, query_id, doc_id in judgements:
        problem = None
        if query_id not in queries:
            problem = f"query id {query_id!r} is not in {queries_path}"
        elif doc_id not in documents:
            problem = f"corpus id {doc_id!r} is not in {corpus_path}"
        if problem:
            if not skip_unknown_ids:
                raise DataError(f"{qrels_path}, line {number}: {problem}")
            unknown += 1
            continue
        pairs["query"].append(queries[query_id])
        pairs["positive"].append(documents[doc_id])
        pairs["negatives"].append([])
    if unknown:
        logger.warning("skipped %d judgements with unknown ids in %s", unknown, qrels_path)
    if not_positive:
        logger.info("skipped %d judgements with score <= 0 in %s", not_positive, qrels_path)
    logger.info("built %d (query, positive) pairs from %s", len(pairs["query"]), qrels_path)
    return Dataset.from_dict(pairs, features=PAIR_FEATURES)


# ------------------------------------------------------------------------------------------------ stream positions
class StreamPosition:
    """Where one process stands in a streamed corpus, so that `--resume` continues there instead of reading the
    stream again from its start.

    It watches the batches a DataLoader collates (`wrap`): at each one it notes the `IterableDataset.state_dict()`
    of the dataset being read. Loaders read ahead (accelerate's by one batch), so the position to save after a
    given number of consumed batches is the one noted at that batch, not the latest (`state_after`). Only a
    DataLoader without worker processes reads the stream in this process (workers read copies of it); with
    workers, and once a stream has been read to its end and started again, there is no position to save and
    resuming falls back to skipping the consumed batches.
    """

    def __init__(self, dataset: IterableDataset, keep: int = 64) -> None:
        self.dataset = dataset
        self.collated = 0
        self.keep = keep
        self.states: dict[int, dict[str, Any]] = {}
        self.restarted = False

    def wrap(self, collate: Callable[[list[Any]], Any], on_first: Callable[[], None] | None = None) -> Callable:
        def collate_and_note(examples: list[Any]) -> Any:
            self.collated += 1
            self.states[self.collated] = self.dataset.state_dict()
            self.states.pop(self.collated - self.keep, None)
            if self.collated == 1 and on_first is not None:
                on_first()
            return collate(examples)

        return collate_and_note

    def state_after(self, consumed: int) -> dict[str, Any] | None:
        """The stream's state once `consumed` batches (counted from this loader's start) have been used."""
        return None if self.restarted else self.states.get(consumed)
