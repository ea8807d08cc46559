"""Writing results without losing anyone's files: one rule for every command that writes a folder.

- A destination that exists and holds anything is refused, unless the caller asks to replace it (`overwrite`,
  the commands' `--overwrite` flags); an empty folder is used as if it were not there. A command that names
  itself (`command="export"`) may replace only an earlier output of the same command, recognised by the marker
  file `.retromae-output.json` it writes into every result: never a file, a training run, a checkpoint, or a
  folder holding anything else. That is the rule of `train --overwrite-output-dir` too (it deletes only what
  `train` made).
- A destination equal to or inside one of the command's inputs is refused (it would change the input), and so is
  replacing a destination that holds an input (it would delete it).
- The result is written into a staging folder beside the destination and renamed into place only once complete,
  so an interrupted command leaves either the old folder or the new one, never a half-written mix. A replaced
  folder is moved aside first and deleted only after the new one is in place. Staging folders are named after
  the process that writes them (`.NAME.staging-PID@HOST-...`); those of a process that no longer runs (killed
  mid-write) are removed, with a warning, by the next write to the same destination.
- A full disk while writing is reported as `DiskFullError` (which folder, how much had been written, how much is
  free) and the partial result is removed; the destination keeps what it held.

`export`, `convert`, `demo`, `evaluate`, the final folder of `train` and the quickstart's data helpers all write
through `staged_output`; `train`'s run folder, which grows during training, has its own rule in `training.py`
built on `check_inputs`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import DiskFullError, OutputExistsError, UserError, is_disk_full

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_MARKER",
    "check_inputs",
    "check_output",
    "check_writable",
    "disk_full_error",
    "folder_size",
    "human_size",
    "remove_stale_staging",
    "staged_output",
]

#: Written into every folder a command makes through `staged_output(command=...)`: `{"command": "export", ...}`.
#: `--overwrite` replaces only a folder holding this marker with the same command.
OUTPUT_MARKER = ".retromae-output.json"

PathLike = str | os.PathLike


def _local(path: PathLike | None) -> Path | None:
    """The resolved local path of an input, or None for Hub ids and other names that are not on this machine."""
    if path is None or not isinstance(path, str | os.PathLike):
        return None
    candidate = Path(path).expanduser()
    return candidate.resolve() if candidate.exists() else None


def check_inputs(destination: PathLike, inputs: Iterable[PathLike | None], *, replacing: bool, what: str) -> None:
    """Refuse a destination that is, or lies inside, an input; with `replacing`, also one that holds an input.

    Raises:
        OutputExistsError: naming the destination, the input and what to do instead.
    """
    target = Path(destination).expanduser().resolve()
    for item in inputs:
        source = _local(item)
        if source is None:
            continue
        if target == source or target.is_relative_to(source):
            relation = "is the input" if target == source else "is inside the input"
            raise OutputExistsError(
                f"{what} {destination} {relation} {item}: writing there would change the input. "
                "Choose a folder outside it."
            )
        if replacing and source.is_relative_to(target):
            raise OutputExistsError(
                f"{what} {destination} holds the input {item}: replacing it would delete that input. "
                "Choose another folder, or move the input out first."
            )


def check_output(
    destination: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
    what: str = "output folder",
    overwrite_hint: str = "--overwrite",
    command: str | None = None,
) -> Path:
    """Check that writing `destination` loses nothing (see the module docstring); returns it as a `Path`.

    With `command`, `overwrite` replaces only a folder marked as an earlier output of that command.

    Raises:
        OutputExistsError: the destination holds something and `overwrite` is false (or it is not an earlier
            output of `command`), or it clashes with an input.
    """
    path = Path(destination).expanduser()
    exists = path.exists() or path.is_symlink()
    occupied = exists and (not path.is_dir() or path.is_symlink() or any(path.iterdir()))
    check_inputs(path, inputs, replacing=occupied, what=what)
    problem = _not_replaceable(path, command) if occupied and command else None
    if occupied and not overwrite:
        kind = "a folder that is not empty" if path.is_dir() else "a file"
        if problem:
            raise OutputExistsError(
                f"{what} {destination} already exists and is {kind}; nothing was written. Choose another "
                f"destination ({overwrite_hint} replaces only an earlier output of `retromae-hf {command}`, and "
                f"{destination} {problem})."
            )
        raise OutputExistsError(
            f"{what} {destination} already exists and is {kind}; nothing was written. Choose another "
            f"destination, or pass {overwrite_hint} to replace it (its current content is then deleted)."
        )
    if problem:  # --overwrite was given, but for something this command did not write
        raise OutputExistsError(
            f"{what} {destination} {problem}. {overwrite_hint} replaces only an earlier output of "
            f"`retromae-hf {command}` (a folder holding {OUTPUT_MARKER} that it wrote), so nothing was changed. "
            "Choose another destination, or move or delete that one yourself if it may go."
        )
    check_writable(path, what=what)
    return path


def _not_replaceable(path: Path, command: str) -> str | None:
    """Why `path` is not an earlier output of `command` (so `--overwrite` must not delete it), or None."""
    if path.is_symlink():
        return "is a symbolic link"
    if not path.is_dir():
        return "is a file, not an earlier output folder"
    marker = path / OUTPUT_MARKER
    if marker.is_file():
        try:
            written_by = json.loads(marker.read_text(encoding="utf-8")).get("command")
        except (OSError, ValueError, AttributeError):
            written_by = None
        if written_by == command:
            return None
        if written_by:
            return f"was written by `retromae-hf {written_by}`, not by `retromae-hf {command}`"
    from .run_folder import CHECKPOINT_PREFIX, RUN_RECORD  # what `train` writes (imported here: it imports us)

    if (path / RUN_RECORD).is_file() or any(path.glob(f"{CHECKPOINT_PREFIX}-*")):
        return "holds a training run (checkpoints, run record)"
    if (path / "config.json").is_file() or any(path.glob("*.safetensors")):
        return "holds a model (config.json or weights)"
    return "holds files that this command did not write (it has no marker " + OUTPUT_MARKER + ")"


def _nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (where a folder about to be made would be written)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(destination: PathLike, what: str = "output folder") -> None:
    """Refuse a destination that cannot be written (read-only file system, no permission), before any work.

    Probes with a real file in the destination, or in its nearest existing parent, so that it also holds for
    root and for read-only mounts, where permission bits say nothing.

    Raises:
        UserError: naming the destination, the folder that cannot be written and the system's reason.
    """
    path = Path(destination).expanduser()
    probe_in = _nearest_existing(path if path.is_dir() else path.parent)
    try:
        handle, name = tempfile.mkstemp(prefix=".retromae-write-test-", dir=probe_in)
        os.close(handle)
        os.unlink(name)
    except OSError as error:
        reason = error.strerror or str(error)
        if is_disk_full(error):
            raise disk_full_error(error, path, what=what, written=0) from error
        raise UserError(
            f"{what} {destination} cannot be written: {probe_in} is not writable ({reason}). Choose a folder you "
            "may write to (or fix its permissions / mount it read-write); nothing was read or written."
        ) from error


def folder_size(path: PathLike) -> int:
    """Bytes in the files under `path` (0 where it is missing)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def human_size(size: float) -> str:
    """`5.0 KB`, `1.2 GB`: a byte count for messages (decimal units, as disks are sold)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def disk_full_error(
    error: BaseException, destination: PathLike, *, what: str = "output folder", written: int | None = None, extra: str = ""
) -> DiskFullError:
    """The user-facing report of a full disk: where, how much had been written, how much is free, what to do."""
    path = Path(destination)
    try:
        free = f"{human_size(shutil.disk_usage(_nearest_existing(path)).free)} free now"
    except OSError:
        free = "free space unknown"
    amount = f" after {human_size(written)} had been written" if written else ""
    return DiskFullError(
        f"no space left on the device of {what} {destination}: the write failed{amount} ({free}). The partial "
        f"result was removed{extra}. Free space there (old runs, checkpoints, caches such as ~/.cache/huggingface) "
        "or choose a destination on another disk, then run the command again."
    )


_STAGING_NAME = re.compile(r"\.staging-(?P<pid>\d+)@(?P<host>.+)-[^-]+$")


def remove_stale_staging(destination: PathLike) -> list[Path]:
    """Remove the staging and set-aside folders that an interrupted write to `destination` left beside it.

    A staging folder names its process (`.NAME.staging-PID@HOST-...`); it is stale when that process no longer
    runs on this host. Folders of the older unnamed form and `.NAME.replaced-*` leftovers count as stale too.
    Returns what was removed (each reported with a warning).
    """
    from .locks import pid_alive

    path = Path(destination).expanduser()
    if not path.parent.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for candidate in sorted(path.parent.glob(f".{glob.escape(path.name)}.staging-*")) + sorted(
        path.parent.glob(f".{glob.escape(path.name)}.replaced-*")
    ):
        if not candidate.is_dir() or candidate.is_symlink():
            continue
        match = _STAGING_NAME.search(candidate.name)
        if match and (match["host"] != host or pid_alive(int(match["pid"]))):
            continue  # another machine's, or a write still in progress
        logger.warning("removing %s, left by an interrupted write to %s (%s)", candidate, path,
                       human_size(folder_size(candidate)))  # fmt: skip
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _make_public(path: Path) -> None:
    # mkdtemp creates 0700 folders; the renamed result should get the permissions any new folder would get.
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        path.chmod(0o777 & ~umask)


@contextlib.contextmanager
def staged_output(
    destination: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
    what: str = "output folder",
    overwrite_hint: str = "--overwrite",
    command: str | None = None,
) -> Iterator[Path]:
    """Yield an empty staging folder beside `destination`; on success it is renamed to `destination`.

    Everything is checked before the caller writes anything (`check_output`). If the body raises, the staging
    folder is deleted and `destination` is left as it was.

    Example:
        with staged_output(out, overwrite=args.overwrite, inputs=[checkpoint]) as staging:
            model.save_pretrained(staging)
    """
    inputs = list(inputs)
    options = {"overwrite": overwrite, "inputs": inputs, "what": what, "overwrite_hint": overwrite_hint}
    path = check_output(destination, command=command, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    prefix = f".{path.name}.staging-{os.getpid()}@{socket.gethostname()}-"
    try:
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(error, path, what=what, written=0) from error
        raise
    _make_public(staging)
    try:
        yield staging
        if command:
            marker = {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (staging / OUTPUT_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        # Checked again: something may have appeared at the destination while the result was being written.
        check_output(path, command=command, **options)
        _move_into_place(staging, path)
    except BaseException as error:
        written = folder_size(staging)
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, DiskFullError) and is_disk_full(error):
            raise disk_full_error(error, path, what=what, written=written) from error
        raise


def _move_into_place(staging: Path, path: Path) -> None:
    if not (path.exists() or path.is_symlink()):
        os.replace(staging, path)
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        os.replace(staging, path)  # POSIX rename may replace an empty folder
        return
    # Replacing (the caller allowed it): move the old one aside, put the new one in place, then delete the old.
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.replaced-", dir=path.parent)) / path.name
    os.replace(path, aside)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(aside, path)
        raise
    finally:
        if aside.parent.exists() and path.exists():
            shutil.rmtree(aside.parent, ignore_errors=True)
    logger.info("replaced %s", path)
