"""Prepare a stage-1 corpus once, in parallel, outside the training job: `retromae-hf prepare`.

Text is tokenized and packed exactly as `data.tokenize_corpus` does (the same `_CorpusTokenizer`), by `num_proc`
worker processes, each taking a piece of the corpus (a file, or a byte range of a large `.txt` / JSON Lines file
that starts at a line start) and writing it as one Arrow shard. The folder then holds:

- `shards/shard-NNNNN.arrow`: Arrow stream files, one column `input_ids` (a list per block, special tokens
  included) in the narrowest unsigned type the vocabulary allows (`uint16` below 65,536 tokens, else `uint32`).
  Whole words are recovered from the tokens' spelling by the collator (`collator.SpellingWordBoundaries`), which
  for WordPiece vocabularies gives exactly the tokenizer's `word_ids()`; for other vocabularies (byte-level BPE,
  SentencePiece), where a sentence packed after another does not start with a word-start marker, `word_ids` are
  stored too (`int16`), so masks are identical to the `tokenize_corpus` path in every case.
- `prepared.json`: the manifest (written last; its presence means the folder is complete): tokenizer identity
  (name or path, class, size and a hash of vocabulary, special tokens, normalizer and pre-tokenizer), max length,
  packing, dtype, columns, the source files with sizes and modification times, per-shard and total counts.

Every shard is written under a temporary name and renamed into place when complete, with its counts beside it
in `.progress/`; an interrupted preparation run again with the same arguments keeps the finished shards and redoes
the others (the plan of pieces is fixed at the first start). `train --corpus DIR` recognises such a folder
(`find_prepared`, `load_prepared`) and starts at once on every rank, without tokenizing.

This module imports nothing from the model code.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import (
    DataError,
    _CorpusTokenizer,
    _generate_corpus,
    _resolve_sources,
    line_ranges,
    splittable,
)
from .errors import OutputExistsError, UserError

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MANIFEST = "prepared.json"
SHARDS_DIR = "shards"
PROGRESS_DIR = ".progress"
FORMAT = "retromae-hf prepared corpus"
FORMAT_VERSION = 1
#: Lines per tokenizer call; blocks are packed within such a batch, as `data.tokenize_corpus` does.
BATCH_LINES = 1000


class PreparedCorpusError(UserError, ValueError):
    """A prepared corpus folder does not fit the run (another tokenizer or length) or is incomplete."""


@dataclass(frozen=True)
class Piece:
    """One unit of work and one output shard: a whole file, or the byte range `[start, end)` of one."""

    index: int
    path: str
    fmt: str
    compressed: bool
    start: int | None = None
    end: int | None = None

    @property
    def text_bytes(self) -> int:
        return (self.end - self.start) if self.start is not None else Path(self.path).stat().st_size

    @property
    def shard(self) -> str:
        return f"shard-{self.index:05d}.arrow"


# ------------------------------------------------------------------------------------------------------ identity
def tokenizer_identity(tokenizer: "PreTrainedTokenizerBase") -> dict[str, Any]:
    """What decides the token ids of a text: a hash of the vocabulary, special tokens, normalizer and pre-tokenizer,
    with the name or path and class for messages. Two tokenizers with equal hashes give equal ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8"))
    digest.update(json.dumps(sorted(tokenizer.all_special_tokens)).encode("utf-8"))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        serialized = json.loads(backend.to_str())
        for key in ("normalizer", "pre_tokenizer", "post_processor"):
            digest.update(json.dumps(serialized.get(key), sort_keys=True).encode("utf-8"))
        digest.update(type(backend.model).__name__.encode())
    return {
        "name_or_path": str(tokenizer.name_or_path),
        "class": type(tokenizer).__name__,
        "size": len(tokenizer),
        "vocab_hash": digest.hexdigest()[:32],
    }


def token_dtype(vocab_size: int) -> str:
    """The narrowest unsigned Arrow/numpy type that holds every token id."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def needs_word_ids(tokenizer: "PreTrainedTokenizerBase") -> bool:
    """Whether whole words must be stored: only a WordPiece vocabulary (`##` continuations) spells every word
    start, so that `SpellingWordBoundaries` gives exactly `word_ids()`, also for sentences packed into a block."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = backend.model if backend is not None else None
    wordpiece = type(model).__name__ == "WordPiece" and getattr(model, "continuing_subword_prefix", None) == "##"
    return not wordpiece


# ------------------------------------------------------------------------------------------------------ planning
def plan_pieces(sources: Sequence[str | os.PathLike], text_column: str, num_proc: int, shard_bytes: int) -> list[Piece]:
    """The pieces of a corpus: large splittable files in byte ranges of about `shard_bytes` (and enough pieces to
    keep `num_proc` workers busy), other files whole. Only local files and folders are accepted."""
    specs = []
    for kind, payload in _resolve_sources(list(sources)):
        if kind != "files":
            raise DataError(
                f"{payload!r}: prepare reads local files and folders only. Download the Hub dataset first (e.g. "
                "datasets.load_dataset(...).to_json('corpus.jsonl')), or train on it with --streaming."
            )
        specs.extend(payload)
    total = sum(spec[3] for spec in specs) or 1
    # Several pieces per worker keep every core busy until the end; never pieces below 1 MiB.
    wanted = max(num_proc * 4, -(-total // shard_bytes))
    pieces: list[Piece] = []
    for spec in specs:
        path, fmt, compressed = spec[0], spec[1], spec[2]
        if fmt != "text" and text_column is None:
            raise DataError(f"{path}: needs a text column")
        if splittable(spec):
            count = max(1, min(-(-wanted * spec[3] // total), -(-spec[3] // (1 << 20))))
            for start, end in line_ranges(path, count):
                pieces.append(Piece(len(pieces), path, fmt, compressed, start, end))
        else:
            pieces.append(Piece(len(pieces), path, fmt, compressed))
    return pieces


def _files_record(pieces: Sequence[Piece]) -> list[dict[str, Any]]:
    files = []
    for path in dict.fromkeys(piece.path for piece in pieces):
        stat = Path(path).stat()
        files.append({"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return files


# ------------------------------------------------------------------------------------------------------ workers
_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer: "PreTrainedTokenizerBase", settings: dict[str, Any]) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker; processes are the parallelism
    # Texts longer than the model's length are expected here: packing cuts them into blocks (counted).
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    _WORKER["tokenizer"] = tokenizer
    _WORKER["settings"] = settings


def _piece_texts(piece: Piece, text_column: str):
    spec = (piece.path, piece.fmt, piece.compressed, 0, 0)
    if piece.start is not None:
        spec = (*spec, piece.start, piece.end)
    for row in _generate_corpus([spec], text_column):
        yield row["text"]


def _write_shard(path: Path, columns: dict[str, list[list[int]]], dtypes: dict[str, str]) -> None:
    """Write blocks as one Arrow stream file (what `datasets.Dataset.from_file` memory-maps)."""
    import numpy as np
    import pyarrow as pa

    arrays, fields = [], []
    for name, rows in columns.items():
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((token for row in rows for token in row), dtype=np.int64, count=int(offsets[-1]))
        values = flat.astype(dtypes[name])
        if len(values) and not np.array_equal(values, flat):
            raise ValueError(f"{name}: values out of the range of {dtypes[name]}")
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)))
        fields.append(pa.field(name, pa.list_(pa.from_numpy_dtype(np.dtype(dtypes[name])))))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=10_000)


def _prepare_piece(piece: Piece) -> dict[str, Any]:
    """Tokenize, pack and write one piece; returns its counts (also written to `.progress/`)."""
    tokenizer, settings = _WORKER["tokenizer"], _WORKER["settings"]
    started, cpu_started = time.perf_counter(), time.process_time()
    function = _CorpusTokenizer(tokenizer, settings["max_length"], settings["packing"], live=False)
    keep_words = "word_ids" in settings["columns"]
    columns: dict[str, list[list[int]]] = {name: [] for name in settings["columns"]}
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out = function({"text": texts})
            columns["input_ids"].extend(out["input_ids"])
            if keep_words:
                columns["word_ids"].extend(out["word_ids"])
            texts.clear()

    count = 0
    for text in _piece_texts(piece, settings["text_column"]):
        texts.append(text)
        count += 1
        if len(texts) == BATCH_LINES:
            flush()
    flush()
    folder = Path(settings["output_dir"])
    final = folder / SHARDS_DIR / piece.shard
    temporary = final.with_name(f".{piece.shard}.tmp-{os.getpid()}")
    _write_shard(temporary, columns, {"input_ids": settings["dtype"], "word_ids": settings["word_dtype"]})
    os.replace(temporary, final)
    stats = {
        "shard": piece.shard,
        "texts": count,
        "blocks": len(columns["input_ids"]),
        "tokens": sum(len(row) for row in columns["input_ids"]),
        "texts_without_tokens": function.empty.count,
        ("cut_sentences" if settings["packing"] else "truncated_texts"): function.altered.count,
        "text_bytes": piece.text_bytes,
        "shard_bytes": final.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - cpu_started, 3),  # this worker's own CPU time: the unit of scaling
    }
    _write_json(folder / PROGRESS_DIR / f"{piece.shard}.json", stats)
    return stats


def _write_json(path: Path, content: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(content, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------------------ prepare
def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def prepare_corpus(
    tokenizer: "PreTrainedTokenizerBase",
    corpus: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    max_length: int,
    packing: bool = True,
    text_column: str = "text",
    num_proc: int | None = None,
    shard_bytes: int = 128 << 20,
) -> dict[str, Any]:
    """Tokenize and pack a local corpus into Arrow shards in `output_dir`; returns the manifest.

    Args:
        tokenizer: a fast tokenizer (the one training will use; its identity goes into the manifest).
        corpus: files and folders as for `data.load_corpus` (local only).
        output_dir: a new or empty folder, or one this function left unfinished (it then resumes: finished shards
            are kept, the others redone). A finished folder is reported as such and left as it is.
        max_length, packing, text_column: as for `data.tokenize_corpus` / `data.load_corpus`.
        num_proc: worker processes (default: every core this process may use).
        shard_bytes: about how much text goes into one shard.

    Raises:
        OutputExistsError: `output_dir` holds something else, or a preparation with other settings.
        DataError: unreadable input (file, line), a Hub name, an empty corpus.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"prepare needs a fast tokenizer (whole words come from word_ids()); got {type(tokenizer)}")
    num_proc = num_proc or available_cores()
    folder = Path(output_dir)
    identity = tokenizer_identity(tokenizer)
    columns = ["input_ids"] + (["word_ids"] if needs_word_ids(tokenizer) else [])
    settings = {
        "tokenizer": identity,
        "max_length": max_length,
        "packing": packing,
        "text_column": text_column,
        "dtype": token_dtype(len(tokenizer)),
        "columns": columns,
        # Word indices (-1 for special tokens) are below the block length.
        "word_dtype": "int16" if max_length < 2**15 else "int32",
    }
    plan = _load_or_make_plan(folder, corpus, settings, num_proc, shard_bytes)
    if plan is None:  # already complete
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        logger.info("%s is already prepared with these settings: nothing to do", folder)
        return {**manifest, "seconds_this_session": 0}
    pieces = [Piece(**piece) for piece in plan["pieces"]]
    done = {}
    for piece in pieces:
        progress = folder / PROGRESS_DIR / f"{piece.shard}.json"
        if progress.is_file() and (folder / SHARDS_DIR / piece.shard).is_file():
            done[piece.index] = json.loads(progress.read_text(encoding="utf-8"))
    for stray in (folder / SHARDS_DIR).glob(".shard-*.tmp-*"):
        stray.unlink()  # left by a worker that was interrupted mid-write
    todo = [piece for piece in pieces if piece.index not in done]
    if done:
        logger.info("resuming: %d of %d shards are already prepared", len(done), len(pieces))
    worker_settings = {**settings, "output_dir": str(folder)}
    started = time.perf_counter()
    from tqdm.auto import tqdm

    total_bytes = sum(piece.text_bytes for piece in pieces)
    with tqdm(total=total_bytes, initial=sum(s["text_bytes"] for s in done.values()), unit="B", unit_scale=True,
              desc="Preparing", disable=None) as bar:  # fmt: skip
        if num_proc <= 1 or len(todo) <= 1:
            _init_worker(tokenizer, worker_settings)
            for piece in todo:
                done[piece.index] = _prepare_piece(piece)
                bar.update(piece.text_bytes)
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no inherited tokenizer thread pools or locks
            with context.Pool(min(num_proc, len(todo)), _init_worker, (tokenizer, worker_settings)) as pool:
                by_shard = {piece.shard: piece for piece in todo}
                for stats in pool.imap_unordered(_prepare_piece, todo):
                    done[by_shard[stats["shard"]].index] = stats
                    bar.update(stats["text_bytes"])
    seconds = time.perf_counter() - started
    shards = [done[piece.index] for piece in pieces]
    keys = ("texts", "blocks", "tokens", "text_bytes", "shard_bytes", "texts_without_tokens", "cpu_seconds")
    totals = {key: sum(s.get(key, 0) for s in shards) for key in keys}
    totals["cut_sentences" if packing else "truncated_texts"] = sum(
        s.get("cut_sentences" if packing else "truncated_texts", 0) for s in shards
    )
    if totals["blocks"] == 0:
        raise DataError(f"{', '.join(map(str, corpus))}: no text to prepare (every line is empty)")
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **settings,
        "files": plan["files"],
        "shards": shards,
        "totals": totals,
        "num_proc": num_proc,
        "seconds_this_session": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(folder / MANIFEST, manifest)
    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)
    return manifest


def _load_or_make_plan(
    folder: Path, corpus: Sequence[str | os.PathLike], settings: dict[str, Any], num_proc: int, shard_bytes: int
) -> dict[str, Any] | None:
    """The plan of pieces: made and saved at the first start, read back when resuming. None when complete."""
    plan_path = folder / PROGRESS_DIR / "plan.json"
    if (folder / MANIFEST).is_file():
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        differences = _differences(manifest, settings)
        if differences:
            raise OutputExistsError(
                f"--output-dir {folder} holds a corpus prepared with other settings ({'; '.join(differences)}); "
                "nothing was changed. Choose another --output-dir, or delete that folder first."
            )
        return None
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        differences = _differences(plan["settings"], settings)
        current = _files_record([Piece(**piece) for piece in plan["pieces"]])
        if current != plan["files"]:
            differences.append("the corpus files changed since the preparation started")
        if differences:
            raise OutputExistsError(
                f"--output-dir {folder} holds an unfinished preparation with other settings or inputs "
                f"({'; '.join(differences)}). Run prepare with the same arguments to finish it, or choose another "
                "--output-dir (or delete that folder)."
            )
        return plan
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputExistsError(
            f"--output-dir {folder} already exists and is not a folder that prepare made; nothing was changed. "
            "Choose a new or empty folder."
        )
    pieces = plan_pieces(corpus, settings["text_column"], num_proc, shard_bytes)
    (folder / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (folder / PROGRESS_DIR).mkdir(exist_ok=True)
    plan = {
        "settings": settings,
        "files": _files_record(pieces),
        "pieces": [piece.__dict__ for piece in pieces],
    }
    _write_json(plan_path, plan)
    return plan


_COMPARED = ("max_length", "packing", "text_column", "dtype", "columns")


def _differences(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    found = []
    if recorded.get("tokenizer", {}).get("vocab_hash") != settings["tokenizer"]["vocab_hash"]:
        found.append(
            f"tokenizer {recorded.get('tokenizer', {}).get('name_or_path')!r}, now "
            f"{settings['tokenizer']['name_or_path']!r}"
        )
    for key in _COMPARED:
        if recorded.get(key) != settings[key]:
            found.append(f"{key} {recorded.get(key)!r}, now {settings[key]!r}")
    return found


def summary_line(manifest: dict[str, Any], folder: str | os.PathLike) -> str:
    """One paragraph for the command line: what was prepared, how big, how fast."""
    totals = manifest["totals"]
    ratio = totals["shard_bytes"] / max(1, totals["text_bytes"])
    seconds = manifest.get("seconds_this_session") or 0
    rate = f"{totals['tokens'] / seconds:,.0f} tokens/s" if seconds else "nothing left to do"
    dropped = totals.get("texts_without_tokens", 0)
    altered = totals.get("cut_sentences", totals.get("truncated_texts", 0))
    what = "cut into block-sized pieces" if manifest["packing"] else "truncated to max_length"
    return (
        f"prepared {folder}: {totals['texts']:,} texts -> {totals['blocks']:,} blocks of <= {manifest['max_length']}"
        f" tokens, {totals['tokens']:,} tokens ({manifest['dtype']}, columns {', '.join(manifest['columns'])}); "
        f"dropped {dropped:,} texts without tokens, {altered:,} texts {what}; {len(manifest['shards'])} shards, "
        f"{totals['shard_bytes'] / 1e6:,.1f} MB for {totals['text_bytes'] / 1e6:,.1f} MB of text ({ratio:.2f}x); "
        f"{seconds:,.1f} s with {manifest['num_proc']} processes ({rate})"
    )


# ------------------------------------------------------------------------------------------------------ reading
def find_prepared(corpus: Sequence[Any]) -> Path | None:
    """The prepared folder a stage-1 corpus names (one local folder holding `prepared.json`), else None.

    Raises:
        PreparedCorpusError: a prepared folder mixed with other sources, or an unfinished preparation.
    """
    folders = [Path(c) for c in corpus if isinstance(c, str | os.PathLike) and Path(c).is_dir()]
    prepared = [folder for folder in folders if (folder / MANIFEST).is_file()]
    unfinished = [folder for folder in folders if (folder / PROGRESS_DIR / "plan.json").is_file()]
    if unfinished and not prepared:
        raise PreparedCorpusError(
            f"--corpus {unfinished[0]}: this preparation did not finish (no {MANIFEST}). Run the same "
            "`retromae-hf prepare` command again: it keeps the finished shards and does the rest."
        )
    if not prepared:
        return None
    if len(corpus) > 1:
        raise PreparedCorpusError(
            f"--corpus names the prepared folder {prepared[0]} beside other sources: a prepared corpus is used "
            "alone. Prepare all the texts into one folder (retromae-hf prepare --corpus A B ...)."
        )
    return prepared[0]


def load_prepared(
    folder: str | os.PathLike, tokenizer: "PreTrainedTokenizerBase", *, max_length: int, packing: bool
) -> "Dataset":
    """The prepared blocks as one memory-mapped `datasets.Dataset` (`input_ids`, maybe `word_ids`): no tokenizing.

    Raises:
        PreparedCorpusError: the folder was prepared with another tokenizer, max length or packing (each named,
            with the command that fixes it), or a shard is missing.
    """
    from datasets import Dataset, concatenate_datasets

    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise PreparedCorpusError(f"{folder / MANIFEST}: not a {FORMAT} of version {FORMAT_VERSION}")
    identity = tokenizer_identity(tokenizer)
    problems = []
    recorded = manifest["tokenizer"]
    if recorded["vocab_hash"] != identity["vocab_hash"]:
        problems.append(
            f"it was tokenized with {recorded['name_or_path']!r} ({recorded['class']}, {recorded['size']} tokens), "
            f"this run uses {identity['name_or_path']!r} ({identity['class']}, {identity['size']} tokens), whose "
            "token ids differ"
        )
    if manifest["max_length"] != max_length:
        problems.append(f"it holds blocks of max_length {manifest['max_length']}, this run uses {max_length}")
    if manifest["packing"] != packing:
        problems.append(f"it was prepared with packing {manifest['packing']}, this run uses {packing}")
    if problems:
        raise PreparedCorpusError(
            f"--corpus {folder} is a prepared corpus that does not fit this run: {'; '.join(problems)}. Train with "
            f"its settings (--tokenizer {recorded['name_or_path']} --max-length {manifest['max_length']}"
            f"{'' if manifest['packing'] else ' --no-packing'}), or prepare the corpus again for this run "
            f"(retromae-hf prepare --tokenizer {identity['name_or_path']} --max-length {max_length} --corpus ... "
            "--output-dir NEW_FOLDER)."
        )
    parts = []
    for shard in manifest["shards"]:
        path = folder / SHARDS_DIR / shard["shard"]
        if not path.is_file() or path.stat().st_size != shard["shard_bytes"]:
            problem = "is missing" if not path.is_file() else "does not have the size the manifest records"
            raise PreparedCorpusError(
                f"--corpus {folder}: shard {path.name} {problem}; prepare the corpus again into a new folder"
            )
        if shard["blocks"]:
            parts.append(Dataset.from_file(str(path)))
    dataset = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    logger.info(
        "prepared corpus %s: %d blocks, %d tokens in %d shards (no tokenizing)",
        folder,
        len(dataset),
        manifest["totals"]["tokens"],
        len(parts),
    )
    return dataset


__all__ = [
    "MANIFEST",
    "PreparedCorpusError",
    "find_prepared",
    "load_prepared",
    "prepare_corpus",
    "summary_line",
    "tokenizer_identity",
]
