"""Writing results without losing anyone's files: one rule for every command that writes a folder.

- A destination that exists and holds anything is refused, unless the caller asks to replace it (`overwrite`,
  the commands' `--overwrite` flags); an empty folder is used as if it were not there.
- A destination equal to or inside one of the command's inputs is refused (it would change the input), and so is
  replacing a destination that holds an input (it would delete it).
- The result is written into a staging folder beside the destination and renamed into place only once complete,
  so an interrupted command leaves either the old folder or the new one, never a half-written mix. A replaced
  folder is moved aside first and deleted only after the new one is in place.

`export`, `convert`, `demo`, `evaluate`, the final folder of `train` and the quickstart's data helpers all write
through `staged_output`; `train`'s run folder, which grows during training, has its own rule in `training.py`
built on `check_inputs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputExistsError

logger = logging.getLogger(__name__)

__all__ = ["check_inputs", "check_output", "staged_output"]

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
) -> Path:
    """Check that writing `destination` loses nothing (see the module docstring); returns it as a `Path`.

    Raises:
        OutputExistsError: the destination holds something and `overwrite` is false, or it clashes with an input.
    """
    path = Path(destination).expanduser()
    exists = path.exists() or path.is_symlink()
    occupied = exists and (not path.is_dir() or path.is_symlink() or any(path.iterdir()))
    check_inputs(path, inputs, replacing=occupied, what=what)
    if occupied and not overwrite:
        kind = "a folder that is not empty" if path.is_dir() else "a file"
        raise OutputExistsError(
            f"{what} {destination} already exists and is {kind}; nothing was written. Choose another "
            f"destination, or pass {overwrite_hint} to replace it (its current content is then deleted)."
        )
    return path


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
) -> Iterator[Path]:
    """Yield an empty staging folder beside `destination`; on success it is renamed to `destination`.

    Everything is checked before the caller writes anything (`check_output`). If the body raises, the staging
    folder is deleted and `destination` is left as it was.

    Example:
        with staged_output(out, overwrite=args.overwrite, inputs=[checkpoint]) as staging:
            model.save_pretrained(staging)
    """
    inputs = list(inputs)
    path = check_output(destination, overwrite=overwrite, inputs=inputs, what=what, overwrite_hint=overwrite_hint)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    _make_public(staging)
    try:
        yield staging
        # Checked again: something may have appeared at the destination while the result was being written.
        check_output(path, overwrite=overwrite, inputs=inputs, what=what, overwrite_hint=overwrite_hint)
        _move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
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
