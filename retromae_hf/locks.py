"""One run per folder: an operating-system lock that `train` (and `prepare`) holds on its output folder for the
run's whole life.

Two `train` commands started into the same `--output-dir` would otherwise both pass the "folder already holds a
run" check and interleave their checkpoints and logs. `RunLock` takes an exclusive `filelock` lock on
`<folder>/.retromae.lock` without waiting: a second run refuses at once, naming the process that holds the folder
(its pid, host and start time, kept in the sidecar `.retromae.lock.json`).

The lock is the kernel's (`flock`), so a killed run (kill -9, a crash, a lost machine) releases it with its
process; both files are removed when a run ends, so the folder keeps only what the run wrote. The sidecar a
killed run leaves behind is recognised as stale (that process no longer runs on this host) and the new
run takes the folder over with a warning. Under `torchrun` only the main process (global rank 0) locks: the other
ranks of the same run must not refuse the folder their own run holds.

This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_FILE",
    "LOCK_INFO",
    "FolderLockedError",
    "RunLock",
    "check_not_locked",
    "is_main_process",
    "pid_alive",
]

LOCK_FILE = ".retromae.lock"
LOCK_INFO = ".retromae.lock.json"


class FolderLockedError(UserError, RuntimeError):
    """Another live process holds the run folder."""


def is_main_process() -> bool:
    """Whether this process is the main one of its (possibly distributed) run: global rank 0, or no launcher."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


def _read_info(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _same_file(lock, path: Path) -> bool:
    """Whether the locked descriptor is still the file at `path` (not one a releasing holder just removed)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if fd is None:
        return True  # a lock without a descriptor (soft fallback): nothing to compare
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (it left no details)"
    command = info.get("command") or "a retromae-hf command"
    return f"process {info.get('pid', '?')} on {info.get('host', '?')} ({command}, started {info.get('started', '?')})"


#: Why a second run may not share a run folder (what `RunLock` says by default).
RUN_CLASH = "two runs in one folder would mix their checkpoints and logs"


def _locked_message(what: str, folder: Path, info: dict | None, clash: str = RUN_CLASH) -> str:
    return (
        f"{what} {folder} is in use by {_describe(info)}: {clash}, so nothing was changed. Wait for that run to "
        "finish (or stop it), or choose another --output-dir."
    )


def check_not_locked(folder: str | os.PathLike, what: str = "output folder", clash: str = RUN_CLASH) -> None:
    """Refuse at once a folder whose lock a live process holds, naming it (pid, host, start), before anything else
    is checked or loaded; creates and changes nothing. `RunLock` takes the lock itself later (this is a probe: the
    folder may be taken between the two, which `RunLock` then refuses the same way).

    Raises:
        FolderLockedError: another process holds the folder's lock.
    """
    path = Path(folder)
    lock_path = path / LOCK_FILE
    if not is_main_process() or not lock_path.is_file():
        return
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise FolderLockedError(_locked_message(what, path, _read_info(path / LOCK_INFO), clash)) from None
    except OSError:
        return  # cannot even open it (a read-only folder): RunLock reports what is wrong
    lock.release()


class RunLock:
    """Exclusive, non-blocking lock on a run folder, held from `acquire` (or `with`) until `release`.

    Example:
        with RunLock(output_dir, what="output_dir (--output-dir)"):
            ...  # check the folder, train, save

    Creates the folder if needed; if it created it and the run leaves nothing else there, the folder is removed
    again on release, so a refused or failed run leaves no trace.

    Raises:
        FolderLockedError: another live process holds the folder (named, with how to proceed).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        what: str = "output folder",
        command: str = "retromae-hf train",
        clash: str = RUN_CLASH,
    ):
        self.folder = Path(folder)
        self.what = what
        self.command = command
        self.clash = clash
        self._lock = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> RunLock:
        if self._lock is not None or not is_main_process():
            return self
        from filelock import FileLock, Timeout

        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        info_path = self.folder / LOCK_INFO
        lock_path = self.folder / LOCK_FILE
        for _ in range(10):
            lock = FileLock(str(lock_path), timeout=0, thread_local=False)
            try:
                lock.acquire()
            except Timeout:
                raise FolderLockedError(_locked_message(self.what, self.folder, _read_info(info_path), self.clash)) from None
            if _same_file(lock, lock_path):
                break
            lock.release()  # the holder removed the file between our open and our lock: lock the current one
        else:
            raise FolderLockedError(f"{self.what} {self.folder}: could not lock {lock_path}; try again.")
        stale = _read_info(info_path)
        if stale is not None:
            # We hold the kernel lock, so whoever wrote this is gone (or a process of another host on a shared
            # file system that no longer holds it): say whose folder is being taken over.
            alive = stale.get("host") == socket.gethostname() and pid_alive(int(stale.get("pid", 0) or 0))
            reason = "no longer holds it" if alive else "no longer runs"
            logger.warning("%s %s: taking over the lock left by %s, which %s", self.what, self.folder,
                           _describe(stale), reason)  # fmt: skip
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
        }
        info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        info_path = self.folder / LOCK_INFO
        with contextlib.suppress(OSError):
            info_path.unlink(missing_ok=True)
        # The lock file goes too, so the folder holds only what the run wrote. Removed while still locked: a
        # process that opened it meanwhile finds, once it holds the lock, that it is no longer the file at that
        # path (`_same_file`) and locks the new one.
        with contextlib.suppress(OSError):
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        lock.release()
        if self._created and self.folder.is_dir() and not any(self.folder.iterdir()):
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # a run that made the folder and wrote nothing leaves no trace

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
