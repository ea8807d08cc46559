"""Mistakes a user can make, and how they are reported: one exception family, one message format, network checks.

Every error a user can cause (a wrong path, a bad value, a damaged file, a resource that needs the network) is a
`UserError`: its message is one paragraph that says what is wrong, where (the file, flag or key), and how to fix
it. The command line prints that paragraph and exits with code 2; a Python traceback is shown only with `--debug`.
The package's older, more specific exceptions (`RecipeError`, `DataError`, `CheckpointError`,
`EvaluationDataError`, `HubPushError`) are members of the family and keep their `ValueError` / `RuntimeError`
bases, so existing `except` clauses still work.

Errors raised by other libraries for things the user controls (an unreachable Hub, a 401, a file that is not
safetensors) are translated into the family by `as_user_error`, at the boundary where the package calls them
when the resource is known (`remote_resource`), and as a last resort by the command line.

This module imports nothing heavy: the command line loads it before anything else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

__all__ = [
    "DiskFullError",
    "MissingInputError",
    "NetworkError",
    "OutputExistsError",
    "UserError",
    "as_user_error",
    "check_weight_files",
    "damaged_safetensors",
    "hub_unreachable_reason",
    "is_disk_full",
    "is_network_error",
    "looks_like_local_path",
    "remote_resource",
]


class UserError(Exception):
    """A mistake the user can fix. The message says what is wrong, where, and how to fix it."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or folder named by the user does not exist."""


class OutputExistsError(UserError, FileExistsError):
    """A command would replace or write into something it did not create, or into one of its own inputs."""


class DiskFullError(UserError, OSError):
    """The disk filled up while writing: names the folder, what was being written and what to free."""


#: How a full disk shows up: errno ENOSPC/EDQUOT, or the system's words for them in a message.
_DISK_FULL_PHRASES = ("no space left on device", "disk quota exceeded")
#: torch's zip writer (`inline_container.cc`) reports a full disk only in its own words, one of these.
_TORCH_WRITER = "inline_container.cc"
_TORCH_WRITE_FAILURES = ("pytorchstreamwriter failed writing", "file write failed", "unexpected pos")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says a write failed because the disk (or the quota) is full."""
    import errno

    for item in _chain(error):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(item).lower()
        if any(phrase in text for phrase in _DISK_FULL_PHRASES):
            return True
        if _TORCH_WRITER in text and any(phrase in text for phrase in _TORCH_WRITE_FAILURES):
            return True
    return False


class NetworkError(UserError, ConnectionError):
    """A resource must come from the Hugging Face Hub, which cannot be reached (offline mode or no network)."""


# --------------------------------------------------------------------------------------------------- local paths
def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only be meant as a local path, never as a Hub id (`name` or `owner/name`).

    True for anything starting with `/`, `.` or `~`, holding a backslash, a drive letter or more than one `/`, or
    whose first component is an existing local folder (`runs/final` when `runs/` exists).
    """
    if name.startswith(("/", ".", "~", "\\")) or "\\" in name or name.count("/") > 1:
        return True
    if len(name) > 1 and name[1] == ":":
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


# --------------------------------------------------------------------------------------------------- the network
def _offline_flag() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


@functools.cache
def _probe_endpoint(endpoint: str) -> str | None:
    """Try one TCP connection to the Hub; the reason it failed, or None. Cached: one probe per process."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None  # through a proxy a direct connection proves nothing: let the libraries try
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=float(os.environ.get("RETROMAE_HF_PROBE_TIMEOUT", 3))):
            return None
    except OSError as error:
        return f"cannot reach {endpoint} ({error.strerror or error})"


def hub_unreachable_reason(endpoint: str | None = None) -> str | None:
    """Why the Hugging Face Hub cannot be used right now (offline mode, or a failed connection), or None.

    Libraries retry a failed connection for up to a minute before giving up; one quick probe lets a command fail
    (or fall back to the local cache) at once instead. When the probe fails, offline mode is switched on for the
    rest of the process, so that files already in the local cache are still found without further retries.
    """
    if _offline_flag():
        return _went_offline or "offline mode is on (HF_HUB_OFFLINE=1)"
    from huggingface_hub import constants

    reason = _probe_endpoint(endpoint or constants.ENDPOINT)
    if reason is not None:
        _go_offline(reason)
    return reason


#: Why this process switched offline mode on itself (a failed probe), so that messages do not blame a
#: HF_HUB_OFFLINE=1 the user never set.
_went_offline: str | None = None


def offline_fix() -> str:
    """How to get the network back: "connect to the network", plus unsetting HF_HUB_OFFLINE only if the user set it."""
    user_set = _offline_flag() and _went_offline is None
    return "connect to the network" + (" (and unset HF_HUB_OFFLINE)" if user_set else "")


def _go_offline(reason: str | None = None) -> None:
    import sys

    from huggingface_hub import constants

    global _went_offline
    _went_offline = _went_offline or reason or "the Hugging Face Hub could not be reached"

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:  # datasets copies the flag when it is imported
        datasets_config.HF_HUB_OFFLINE = True


_NETWORK_ERROR_NAMES = {
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "NetworkError",
    "RemoteDisconnected",
}
_NETWORK_PHRASES = ("couldn't connect", "could not connect", "offline mode", "connection error", "cannot reach")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_network_error(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says the network or the Hub could not be reached."""
    for item in _chain(error):
        if isinstance(item, NetworkError | ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(item).__mro__):
            return True
        if isinstance(item, OSError) and any(phrase in str(item).lower() for phrase in _NETWORK_PHRASES):
            return True
    return False


def http_status(error: BaseException) -> int | None:
    for item in _chain(error):
        response = getattr(item, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _is_missing_on_hub(error: BaseException) -> bool:
    for item in _chain(error):
        names = {cls.__name__ for cls in type(item).__mro__}
        if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"}:
            return True
        text = str(item)
        if isinstance(item, OSError) and (
            "is not a local folder and is not a valid model identifier" in text or "Repo id must be" in text
        ):
            return True
    return False


def hub_access_hint(name: str, flag: str | None = None, repo_type: str = "model", local_ok: bool = True) -> str:
    """How to provide `name` without the network: a local folder, or a download where there is network.

    `local_ok=False` for commands that take no local folder (`pull`): then only the network helps."""
    if not local_ok:
        return (
            f"{offline_fix().capitalize()} and run the command again. A model already on disk needs no pull: pass "
            "its folder to export, evaluate or train."
        )
    option = f" ({flag} path/to/folder)" if flag else ""
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
    return (
        f"Pass a local folder instead{option}, download it where there is network with "
        f"`hf download {name}{kind} --local-dir <folder>` and pass that folder, or {offline_fix()}."
    )


@contextlib.contextmanager
def remote_resource(
    what: str,
    name: str,
    flag: str | None = None,
    repo_type: str = "model",
    endpoint: str | None = None,
    local_ok: bool = True,
) -> Iterator[None]:
    """Around loading `name`, which is a local path or a Hub id; turns the ways that fails into `UserError`s.

    - a name that can only be a local path (see `looks_like_local_path`) and does not exist fails at once;
    - a Hub id with the Hub unreachable (offline mode, or a quick probe fails) is looked up in the local cache
      only, and a miss names the resource and how to provide it, instead of a minute of retries and a traceback;
    - a Hub id that does not exist on the Hub says so.

    `what` names the role ("tokenizer", "model", "dataset"), `flag` the option that sets it, `endpoint` the Hub
    (default: `HF_ENDPOINT`).
    """
    where = f"{what} {name!r}" + (f" ({flag})" if flag else "")
    if not Path(name).expanduser().exists():
        if looks_like_local_path(name):
            raise MissingInputError(f"{where}: no such file or folder. Check the path.")
        reason = hub_unreachable_reason(endpoint)
    else:
        reason = None
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        if Path(name).expanduser().exists():
            raise
        if is_network_error(error) or (reason is not None and isinstance(error, OSError)):
            why = reason or "the Hugging Face Hub could not be reached"
            raise NetworkError(
                f"{where} is not a local folder, and it is not in the local Hugging Face cache: {why}. "
                + hub_access_hint(name, flag, repo_type, local_ok=local_ok)
            ) from error
        if http_status(error) in (401, 403):
            raise UserError(
                f"{where}: the Hugging Face Hub refused access (HTTP {http_status(error)}). If it is a private or "
                "gated repository, set HF_TOKEN or run `hf auth login` with an account that may read it."
            ) from error
        if _is_missing_on_hub(error):
            raise MissingInputError(
                f"{where} is neither a local file or folder nor a repository on the Hugging Face Hub. "
                "Check the spelling, or pass the path of a local folder."
            ) from error
        raise


# --------------------------------------------------------------------------------------------------- local files
def check_weight_files(folder: str | os.PathLike, what: str) -> None:
    """Read the header of every safetensors file of a local model folder (no weights are read): a file cut short
    while being copied, downloaded or saved is named now, instead of a bare "incomplete metadata" later.

    Raises:
        UserError: naming `what` (e.g. "model 'x' (--model)"), the file and how to get an intact one.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        return
    damaged = damaged_safetensors(sorted(path.glob("*.safetensors")))
    if damaged is not None:
        file, error = damaged
        raise UserError(
            f"{what}: {file} is damaged or incomplete ({' '.join(str(error).split())}). It was probably cut "
            "short while being copied, downloaded or saved: copy or download it again, or use an earlier "
            "checkpoint."
        ) from error


def damaged_safetensors(files: Iterable[Path]) -> tuple[Path, Exception] | None:
    """The first of `files` whose safetensors header cannot be read (cut short, another format), with the error;
    None when every header reads. Only headers are read, no weights."""
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as error:  # SafetensorError, OSError: the same to the user
            return file, error
    return None


# --------------------------------------------------------------------------------------------------- translation
def as_user_error(error: BaseException) -> UserError | None:
    """The `UserError` that `error` stands for, or None when it looks like a bug rather than a user's mistake.

    Used by the command line as a last resort; the package's own code raises `UserError`s where it knows more.
    """
    if isinstance(error, UserError):
        return error
    names = {cls.__name__ for cls in type(error).__mro__}
    if is_disk_full(error):
        return DiskFullError(
            f"no space left on the device ({' '.join(str(error).split())[:300]}). Free space where the command "
            "writes (old runs, checkpoints, caches such as ~/.cache/huggingface), or choose a destination on "
            "another disk, then run it again."
        )
    if "SafetensorError" in names:
        return UserError(f"not a valid safetensors file: {error}. The file is damaged or of another format.")
    if isinstance(error, MemoryError) or "OutOfMemoryError" in names:
        return UserError(
            f"out of memory ({error}). Lower the batch size (--set training.per_device_train_batch_size=...), "
            "the sequence lengths, or the model size."
        )
    if is_network_error(error):
        return NetworkError(
            f"the Hugging Face Hub could not be reached: {error}. Use local files and folders, or {offline_fix()}."
        )
    status = http_status(error)
    if status in (401, 403):
        return UserError(
            f"the Hugging Face Hub refused the request (HTTP {status}): set HF_TOKEN to a token with the needed "
            "rights, or run `hf auth login`."
        )
    if "YAMLError" in names:
        return UserError(f"not valid YAML: {error}")
    if isinstance(error, FileNotFoundError | FileExistsError | IsADirectoryError | NotADirectoryError):
        return UserError(str(error) or type(error).__name__)
    if isinstance(error, PermissionError):
        return UserError(f"permission denied: {error}. Choose a location you may write to.")
    if isinstance(error, ValueError | OSError):
        # Argument checks of this package and of the libraries it drives (transformers, datasets, mteb).
        return UserError(str(error) or type(error).__name__)
    return None
