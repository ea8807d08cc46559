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
  packing, dtype, columns, the source files with sizes and modification times, per-shard and total counts, and
  each shard's SHA-256 (hashed in memory as it is written; checked by `load_prepared` before a shard is opened).

Every shard is written under a temporary name and renamed into place when complete, with its counts beside it
in `.progress/`; an interrupted preparation run again with the same arguments keeps the finished shards and redoes
the others (the plan of pieces is fixed at the first start). A folder prepared, or half-prepared, from other input
files or settings, or from files that changed on disk since, is refused (`--overwrite` replaces a preparation,
never a folder holding anything else). The folder is locked for the run (`locks.RunLock`) and the worker processes
end with the main process (`die_with_parent`), so no worker writes into a folder nobody holds. A run that fails
removes its half-written shard, and everything when no shard was finished. `train --corpus DIR` recognises such a
folder (`find_prepared`, `load_prepared`) and starts at once on every rank, without tokenizing.

The corpus paths and the destination are checked (`check_request`) before the tokenizer or the corpus is read, and
a tokenizer that turns the start of the corpus mostly into [UNK] is refused before any work
(`check_vocabulary_on_sample`, `data.check_unknown_share`).

This module imports nothing from the model code.
"""

import contextlib
import ctypes
import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingInputError, OutputExistsError, UserError, is_disk_full
from .locks import LOCK_FILE, LOCK_INFO, RunLock, check_not_locked
from .outputs import check_inputs, check_writable, disk_full_error, human_size

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
#: What `prepare` writes into its folder; a folder holding anything else is not one that it made.
OWN_NAMES = frozenset({MANIFEST, SHARDS_DIR, PROGRESS_DIR, LOCK_FILE, LOCK_INFO})
#: Texts read from the start of the corpus to measure the tokenizer's [UNK] share before any work.
VOCABULARY_SAMPLE_TEXTS = 1000


#: Why a second `prepare` may not share a folder (the lock's refusal says it).
PREPARE_CLASH = "two preparations in one folder would write and resume the same shards"


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
def local_sources(sources: Sequence[str | os.PathLike]) -> list[tuple]:
    """The file specs (`data._FileSpec`) of a corpus that must be local: files, and the data files directly in
    folders (what was read and skipped of a folder is logged by `data`).

    Raises:
        DataError: a Hub name or another source that is not a local file or folder.
    """
    from .data import DataError, _resolve_sources

    specs = []
    for kind, payload in _resolve_sources(list(sources)):
        if kind != "files":
            raise DataError(
                f"{payload!r}: prepare reads local files and folders only. Download the Hub dataset first (e.g. "
                "datasets.load_dataset(...).to_json('corpus.jsonl')), or train on it with --streaming."
            )
        specs.extend(payload)
    return specs


def plan_pieces(sources: Sequence[str | os.PathLike], text_column: str, num_proc: int, shard_bytes: int) -> list[Piece]:
    """The pieces of a corpus: large splittable files in byte ranges of about `shard_bytes` (and enough pieces to
    keep `num_proc` workers busy), other files whole. Only local files and folders are accepted."""
    return _plan_from_specs(local_sources(sources), text_column, num_proc, shard_bytes)


def _plan_from_specs(specs: Sequence[tuple], text_column: str, num_proc: int, shard_bytes: int) -> list[Piece]:
    from .data import DataError, line_ranges, splittable

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


def _files_record(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Each input file as it is on disk now: path, size and modification time (what decides "changed")."""
    files = []
    for path in dict.fromkeys(paths):
        try:
            stat = Path(path).stat()
        except OSError:
            files.append({"path": path, "size": None, "mtime_ns": None})
            continue
        files.append({"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return files


def _when(mtime_ns: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9)) if mtime_ns else "?"


def changed_inputs(recorded: Sequence[dict[str, Any]]) -> list[str]:
    """The recorded input files that are no longer as they were (size or modification time), each described."""
    changes = []
    for before, now in zip(recorded, _files_record([f["path"] for f in recorded]), strict=True):
        if now["size"] is None:
            changes.append(f"{before['path']} is gone")
        elif now["size"] != before["size"]:
            changes.append(f"{before['path']} ({before['size']:,} bytes then, {now['size']:,} now)")
        elif now["mtime_ns"] != before["mtime_ns"]:
            changes.append(
                f"{before['path']} (modified {_when(now['mtime_ns'])}, after it was read at {_when(before['mtime_ns'])})"
            )
    return changes


def _input_differences(recorded: Sequence[dict[str, Any]], requested: Sequence[str]) -> list[str]:
    """Why the inputs recorded in a folder are not the ones requested now (other files, or changed on disk)."""
    before = [f["path"] for f in recorded]
    if before != list(requested):
        gone = [path for path in before if path not in requested]
        new = [path for path in requested if path not in before]
        parts = []
        if gone:
            parts.append(f"it was prepared from {_some(gone)}, not named now")
        if new:
            parts.append(f"{_some(new)} {'is' if len(new) == 1 else 'are'} new")
        if not parts:
            parts.append("the same files in another order")
        return [f"other input files ({'; '.join(parts)})"]
    changes = changed_inputs(recorded)
    if changes:
        return [f"input files changed on disk since they were read: {_some(changes)}"]
    return []


def _some(items: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


# ------------------------------------------------------------------------------------------------------ the folder
def folder_kind(folder: Path) -> str:
    """`"new"` (missing or empty), `"complete"`, `"unfinished"` (a preparation that stopped; resumable), or
    `"other"` (a file, or a folder holding anything `prepare` does not write)."""
    if not folder.exists() and not folder.is_symlink():
        return "new"
    if folder.is_symlink() or not folder.is_dir():
        return "other"
    names = {entry.name for entry in folder.iterdir()}
    if not names - {LOCK_FILE, LOCK_INFO}:
        return "new"
    if names - OWN_NAMES:
        return "other"
    if (folder / MANIFEST).is_file():
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "other"
        return "complete" if isinstance(manifest, dict) and manifest.get("format") == FORMAT else "other"
    return "unfinished" if (folder / PROGRESS_DIR / "plan.json").is_file() else "other"


def _not_ours(folder: Path) -> OutputExistsError:
    return OutputExistsError(
        f"--output-dir {folder} already exists and is not a folder that `retromae-hf prepare` made (it holds other "
        "files); nothing was changed. Choose a new or empty folder (--overwrite replaces only an earlier "
        "preparation)."
    )


def check_request(
    corpus: Sequence[str | os.PathLike], output_dir: str | os.PathLike, *, overwrite: bool = False
) -> None:
    """The checks that need neither the tokenizer nor the corpus' content, made before either loads (a mistake
    costs well under a second): every corpus path exists, the destination is not an input nor inside one, it is
    new, empty or a folder `prepare` made, and it can be written.

    Raises:
        MissingInputError, OutputExistsError, UserError: naming the path and the fix.
    """
    for item in corpus:  # (no `datasets` import here: it alone takes seconds)
        path = Path(item).expanduser()
        if not path.exists():
            raise MissingInputError(
                f"--corpus {item}: no such file or folder. prepare reads local files and folders only (a Hub "
                "dataset is downloaded first, or streamed by train --streaming); check the path."
            )
    folder = Path(output_dir).expanduser()
    check_not_locked(folder, what="--output-dir", clash=PREPARE_CLASH)  # a running prepare is named at once
    kind = folder_kind(folder)
    check_inputs(folder, corpus, replacing=overwrite and kind != "new", what="--output-dir")
    if kind == "other":
        raise _not_ours(folder)
    check_writable(folder, what="--output-dir")


def _clear(folder: Path) -> None:
    """Remove an earlier preparation's files (only the names prepare writes; the lock stays)."""
    for name in (MANIFEST, SHARDS_DIR, PROGRESS_DIR):
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ------------------------------------------------------------------------------------------------------ workers
_WORKER: dict[str, Any] = {}


def die_with_parent(parent: int) -> None:
    """End this worker process as soon as `parent` (the `prepare` that started it) ends, however it ends.

    A SIGKILL of the main process would otherwise leave its pool's workers running, writing shards into a folder
    that is no longer locked (the lock is the main process'). On Linux the kernel does it (`PR_SET_PDEATHSIG`, the
    worker receives SIGKILL when its parent dies); elsewhere a daemon thread checks the parent every second."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            failed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0
        except (OSError, AttributeError):
            failed = True
        if not failed:
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _init_worker(tokenizer: "PreTrainedTokenizerBase", settings: dict[str, Any], parent: int | None = None) -> None:
    if parent is not None:
        die_with_parent(parent)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker; processes are the parallelism
    # Texts longer than the model's length are expected here: packing cuts them into blocks (counted).
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    _WORKER["tokenizer"] = tokenizer
    _WORKER["settings"] = settings


def _piece_texts(piece: Piece, text_column: str):
    from .data import _generate_corpus

    spec = (piece.path, piece.fmt, piece.compressed, 0, 0)
    if piece.start is not None:
        spec = (*spec, piece.start, piece.end)
    for row in _generate_corpus([spec], text_column):
        yield row["text"]


def _write_shard(path: Path, columns: dict[str, list[list[int]]], dtypes: dict[str, str]) -> str:
    """Write blocks as one Arrow stream file (what `datasets.Dataset.from_file` memory-maps); returns the SHA-256 of
    its bytes, hashed in memory before they are written (no second read)."""
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
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=10_000)
    content = sink.getvalue()
    with open(path, "wb") as handle:
        handle.write(content)
    return hashlib.sha256(content).hexdigest()


def _prepare_piece(piece: Piece) -> dict[str, Any]:
    """Tokenize, pack and write one piece; returns its counts (also written to `.progress/`)."""
    tokenizer, settings = _WORKER["tokenizer"], _WORKER["settings"]
    started, cpu_started = time.perf_counter(), time.process_time()
    from .data import _CorpusTokenizer

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
    try:
        checksum = _write_shard(
            temporary, columns, {"input_ids": settings["dtype"], "word_ids": settings["word_dtype"]}
        )
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk gets its space back; nothing half-written stays
        raise
    unknown = tokenizer.unk_token_id
    stats = {
        "shard": piece.shard,
        "sha256": checksum,
        "texts": count,
        "blocks": len(columns["input_ids"]),
        "tokens": sum(len(row) for row in columns["input_ids"]),
        "unknown_tokens": sum(row.count(unknown) for row in columns["input_ids"]) if unknown is not None else 0,
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
    overwrite: bool = False,
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """Tokenize and pack a local corpus into Arrow shards in `output_dir`; returns the manifest.

    Args:
        tokenizer: a fast tokenizer (the one training will use; its identity goes into the manifest).
        corpus: files and folders as for `data.load_corpus` (local only; a folder's sub-folders are not read).
        output_dir: a new or empty folder, or one this function left unfinished with the same settings and inputs
            (it then resumes: finished shards are kept, the others redone). A finished folder with the same
            settings and unchanged inputs is reported as such and left as it is. The folder is locked for the
            run (`locks.RunLock`); the worker processes end with this process.
        max_length, packing, text_column: as for `data.tokenize_corpus` / `data.load_corpus`.
        num_proc: worker processes (default: every core this process may use).
        shard_bytes: about how much text goes into one shard.
        overwrite: replace an earlier preparation (finished or not) in `output_dir`; never a folder that holds
            anything else.
        allow_unknown: go ahead when the tokenizer turns most of the corpus into its unknown token.

    Raises:
        OutputExistsError: `output_dir` holds something else, or a preparation with other settings or inputs, or
            is (inside) an input.
        FolderLockedError: another process prepares into `output_dir`.
        DataError: unreadable input (file, line), a Hub name, an empty corpus, a tokenizer that does not fit.
        DiskFullError, UserError: the destination filled up or cannot be written (finished shards are kept).
    """
    from .data import DataError

    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"prepare needs a fast tokenizer (whole words come from word_ids()); got {type(tokenizer)}")
    check_request(corpus, output_dir, overwrite=overwrite)
    num_proc = num_proc or available_cores()
    folder = Path(output_dir).expanduser()
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
    with RunLock(folder, what="--output-dir", command="retromae-hf prepare", clash=PREPARE_CLASH):
        plan = _load_or_make_plan(folder, corpus, settings, num_proc, shard_bytes, overwrite, tokenizer, allow_unknown)
        if plan is None:  # already complete
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            logger.info("%s is already prepared with these settings and inputs: nothing to do", folder)
            return {**manifest, "seconds_this_session": 0, "tokens_this_session": 0, "shards_this_session": 0}
        try:
            return _run_plan(folder, plan, tokenizer, settings, num_proc, corpus)
        except BaseException as error:
            kept = _clean_after_failure(folder)
            report = _failure_report(error, folder, kept)
            if report is None:
                raise
            raise report from error


def _run_plan(
    folder: Path,
    plan: dict[str, Any],
    tokenizer: "PreTrainedTokenizerBase",
    settings: dict[str, Any],
    num_proc: int,
    corpus: Sequence[str | os.PathLike],
) -> dict[str, Any]:
    from .data import DataError

    pieces = [Piece(**piece) for piece in plan["pieces"]]
    done = {}
    for piece in pieces:
        progress = folder / PROGRESS_DIR / f"{piece.shard}.json"
        if progress.is_file() and (folder / SHARDS_DIR / piece.shard).is_file():
            done[piece.index] = json.loads(progress.read_text(encoding="utf-8"))
    _remove_temporary_shards(folder)  # left by a worker that was interrupted mid-write
    todo = [piece for piece in pieces if piece.index not in done]
    if done:
        logger.info("resuming: %d of %d shards are already prepared", len(done), len(pieces))
    worker_settings = {**settings, "output_dir": str(folder)}
    started = time.perf_counter()
    from tqdm.auto import tqdm

    total_bytes = sum(piece.text_bytes for piece in pieces)
    this_session: list[dict[str, Any]] = []
    with tqdm(total=total_bytes, initial=sum(s["text_bytes"] for s in done.values()), unit="B", unit_scale=True,
              desc="Preparing", disable=None) as bar:  # fmt: skip
        if num_proc <= 1 or len(todo) <= 1:
            _init_worker(tokenizer, worker_settings)
            for piece in todo:
                done[piece.index] = _prepare_piece(piece)
                this_session.append(done[piece.index])
                bar.update(piece.text_bytes)
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no inherited tokenizer thread pools or locks
            initargs = (tokenizer, worker_settings, os.getpid())  # the workers end with this process
            with context.Pool(min(num_proc, len(todo)), _init_worker, initargs) as pool:
                by_shard = {piece.shard: piece for piece in todo}
                for stats in pool.imap_unordered(_prepare_piece, todo):
                    done[by_shard[stats["shard"]].index] = stats
                    this_session.append(stats)
                    bar.update(stats["text_bytes"])
    seconds = time.perf_counter() - started
    shards = [done[piece.index] for piece in pieces]
    keys = (
        "texts", "blocks", "tokens", "unknown_tokens", "text_bytes", "shard_bytes", "texts_without_tokens",
        "cpu_seconds",
    )  # fmt: skip
    totals = {key: sum(s.get(key, 0) for s in shards) for key in keys}
    totals["cut_sentences" if settings["packing"] else "truncated_texts"] = sum(
        s.get("cut_sentences" if settings["packing"] else "truncated_texts", 0) for s in shards
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
        # A resumed run did only part of the work: its speed is that part's tokens over its own seconds.
        "seconds_this_session": round(seconds, 2),
        "shards_this_session": len(this_session),
        "tokens_this_session": sum(s["tokens"] for s in this_session),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(folder / MANIFEST, manifest)
    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)
    return manifest


def _remove_temporary_shards(folder: Path) -> None:
    for stray in (folder / SHARDS_DIR).glob(".shard-*.tmp-*"):
        stray.unlink(missing_ok=True)


def _clean_after_failure(folder: Path) -> int:
    """After a failed or interrupted run: remove half-written shards, and the whole preparation when no shard was
    finished (nothing worth resuming). Returns the number of finished shards kept for a resume."""
    with contextlib.suppress(OSError):
        _remove_temporary_shards(folder)
    finished = [path for path in (folder / PROGRESS_DIR).glob("shard-*.json")]
    if not finished:
        with contextlib.suppress(OSError):
            _clear(folder)
    return len(finished)


def _failure_report(error: BaseException, folder: Path, kept: int) -> UserError | None:
    """A full or unwritable destination, said in the user's terms (folder, what was kept, the fix); None for
    other errors, which keep their own message."""
    if isinstance(error, UserError) or not isinstance(error, OSError):
        return None
    if kept:
        outcome = (
            f"; the {kept} finished shard{'s' if kept > 1 else ''} "
            f"({human_size(sum(p.stat().st_size for p in (folder / SHARDS_DIR).glob('shard-*.arrow')))}) were kept: "
            "run the same command again to finish (or delete the folder to give their space back)"
        )
    else:
        outcome = "; nothing of this run was kept"
    if is_disk_full(error):
        return disk_full_error(error, folder, what="--output-dir", extra=outcome)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = f" ({error.filename})" if error.filename else ""
        return UserError(
            f"--output-dir {folder} cannot be written: {error.strerror or error}{where}{outcome}. Choose a folder "
            "you may write to (or fix its permissions / mount it read-write)."
        )
    return None


def _load_or_make_plan(
    folder: Path,
    corpus: Sequence[str | os.PathLike],
    settings: dict[str, Any],
    num_proc: int,
    shard_bytes: int,
    overwrite: bool,
    tokenizer: "PreTrainedTokenizerBase",
    allow_unknown: bool,
) -> dict[str, Any] | None:
    """The plan of pieces: made and saved at the first start, read back when resuming (only with the same
    settings and unchanged inputs). None when the folder is complete with the same settings and inputs. Called
    with the folder's lock held."""
    specs = local_sources(corpus)
    requested = [spec[0] for spec in specs]
    kind = folder_kind(folder)
    if kind == "other":
        raise _not_ours(folder)
    if kind != "new" and overwrite:
        logger.warning("--overwrite: removing the earlier preparation in %s", folder)
        _clear(folder)
        kind = "new"
    if kind == "complete":
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        differences = _differences(manifest, settings) + _input_differences(manifest.get("files", []), requested)
        if differences:
            raise OutputExistsError(
                f"--output-dir {folder} holds a corpus prepared with other settings or inputs "
                f"({'; '.join(differences)}); nothing was changed. Prepare into a new --output-dir, or pass "
                "--overwrite to replace that preparation."
            )
        return None
    if kind == "unfinished":
        plan = json.loads((folder / PROGRESS_DIR / "plan.json").read_text(encoding="utf-8"))
        differences = _differences(plan["settings"], settings) + _input_differences(plan["files"], requested)
        if differences:
            raise OutputExistsError(
                f"--output-dir {folder} holds an unfinished preparation with other settings or inputs "
                f"({'; '.join(differences)}): it resumes only with the same ones, so nothing was changed. Run the "
                "command that started it again to finish it, pass --overwrite to replace it, or choose a new "
                "--output-dir."
            )
        check_vocabulary_on_sample(tokenizer, specs, settings["text_column"], allow_unknown)
        return plan
    check_vocabulary_on_sample(tokenizer, specs, settings["text_column"], allow_unknown)
    pieces = _plan_from_specs(specs, settings["text_column"], num_proc, shard_bytes)
    (folder / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (folder / PROGRESS_DIR).mkdir(exist_ok=True)
    plan = {
        "settings": settings,
        "files": _files_record(requested),
        "pieces": [piece.__dict__ for piece in pieces],
    }
    _write_json(folder / PROGRESS_DIR / "plan.json", plan)
    return plan


def check_vocabulary_on_sample(
    tokenizer: "PreTrainedTokenizerBase", specs: Sequence[tuple], text_column: str, allow_unknown: bool
) -> None:
    """Refuse, before any work, a tokenizer that turns the start of the corpus mostly into [UNK]."""
    from .data import _generate_corpus, check_unknown_share, unknown_share

    texts = [
        row["text"] for row in itertools.islice(_generate_corpus(list(specs), text_column), VOCABULARY_SAMPLE_TEXTS)
    ]
    share, tokens = unknown_share(tokenizer, texts)
    check_unknown_share(
        tokenizer,
        share,
        tokens,
        what=f"the first {len(texts):,} texts of the corpus",
        fix="Prepare with the tokenizer of the model you will train (or one trained on this kind of text).",
        allow_flag="--allow-unknown",
        allowed=allow_unknown,
    )


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
    tokens_now = manifest.get("tokens_this_session", totals["tokens"])
    shards_now = manifest.get("shards_this_session", len(manifest["shards"]))
    if not seconds or not shards_now:
        rate = "nothing left to do"
    elif shards_now < len(manifest["shards"]):  # resumed: the speed of this run's own work
        rate = (
            f"{tokens_now / seconds:,.0f} tokens/s for the {shards_now} shards prepared now; "
            f"{len(manifest['shards']) - shards_now} were already prepared"
        )
    else:
        rate = f"{tokens_now / seconds:,.0f} tokens/s"
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
def file_sha256(path: Path, chunk: int = 8 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (about 1.3 GB/s on one core of the project's machine)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _damaged(folder: Path, path: Path, problem: str) -> str:
    return (
        f"--corpus {folder}: shard {path} {problem}, so nothing was trained. Prepare the corpus again into a new "
        f"folder (retromae-hf prepare ... --output-dir NEW_FOLDER, or --overwrite to replace {folder})."
    )


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
    changes = changed_inputs(manifest.get("files", []))
    if changes:
        logger.warning(
            "--corpus %s was prepared from files that changed since (%s): training uses the texts as they were "
            "when prepared. Prepare again (retromae-hf prepare ... --overwrite) to train on the current ones.",
            folder,
            _some(changes),
        )
    parts = []
    started = time.perf_counter()
    unchecked = 0
    for shard in manifest["shards"]:
        path = folder / SHARDS_DIR / shard["shard"]
        problem = None
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != shard["shard_bytes"]:
            problem = f"has {path.stat().st_size:,} bytes, the manifest records {shard['shard_bytes']:,}"
        elif "sha256" not in shard:
            unchecked += 1
        elif file_sha256(path) != shard["sha256"]:
            problem = "does not have the content the manifest records (its SHA-256 differs: the file was damaged)"
        if problem:
            raise PreparedCorpusError(_damaged(folder, path, problem))
        if shard["blocks"]:
            try:
                parts.append(Dataset.from_file(str(path)))
            except Exception as error:  # pyarrow's own words name no file
                raise PreparedCorpusError(_damaged(folder, path, f"cannot be read ({error})")) from error
    if unchecked:
        logger.warning("--corpus %s: %d shards have no checksum in the manifest (prepared by an older retromae-hf) "
                       "and were not checked", folder, unchecked)  # fmt: skip
    logger.info("checked %d shards of %s against their checksums in %.1f s", len(manifest["shards"]) - unchecked,
                folder, time.perf_counter() - started)  # fmt: skip
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
