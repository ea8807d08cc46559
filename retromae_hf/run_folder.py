"""Run folders: what `train` writes into `--output-dir`, who may replace it, and which checkpoint `--resume` takes.

A run folder belongs to one run. `prepare_output_dir` refuses a fresh run into a folder that holds an earlier one
(unless `--overwrite-output-dir`, which deletes only `RUN_ARTEFACTS`); the run record (`RUN_RECORD`: run id and
recipe), written by the main process alone and copied into every checkpoint, lets `resolve_resume` pick the newest
intact checkpoint of this run and recipe, and refuse anything else by name. Nothing here imports torch: the CLI can
check a folder before the training code is loaded.
"""

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import OutputExistsError, damaged_safetensors
from .outputs import check_inputs
from .recipe import FINAL_DIR, PYTHON_DOCSTRINGS, Recipe, RecipeError, recipe_differences

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"
#: Written into the run folder and every checkpoint: which run it belongs to, and the recipe it was trained with.
RUN_RECORD = "retromae_run.json"
#: What `train` creates in a run folder; `--overwrite-output-dir` deletes these and nothing else.
RUN_ARTEFACTS = (
    "checkpoint-*",
    FINAL_DIR,
    "training_log.jsonl",
    "evaluation",
    "evaluation-data",
    STAGING_DIR,
    RUN_RECORD,
)
#: transformers' `PREFIX_CHECKPOINT_DIR`: the Trainer's checkpoints are `checkpoint-<global step>`.
CHECKPOINT_PREFIX = "checkpoint"


# --------------------------------------------------------------------------------------------------- run folders
def run_artefacts(output_dir: str | os.PathLike) -> list[Path]:
    """What an earlier `train` left in `output_dir` (checkpoints, final/, the log, ...), sorted by name."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = {path for pattern in RUN_ARTEFACTS for path in folder.glob(pattern)}
    return sorted(found, key=lambda path: path.name)


def _data_paths(recipe: Recipe) -> list[str]:
    paths = []
    for source in [*recipe.corpus, *recipe.pairs]:
        path = source.get("path") if isinstance(source, dict) else source
        if isinstance(path, str | os.PathLike) and path != PYTHON_DOCSTRINGS:
            paths.append(str(path))
    return paths


def prepare_output_dir(recipe: Recipe, resume: str | bool | None, overwrite: bool, check_only: bool = False) -> None:
    """Make sure a run loses nothing: a fresh run into a folder that holds an earlier run is refused unless
    `overwrite`, which deletes only what `train` creates there (`RUN_ARTEFACTS`); other files stay. With
    `check_only`, nothing is deleted (`run_recipe` checks every stage before the first one starts).

    Raises:
        OutputExistsError: the folder holds an earlier run (and neither `resume` nor `overwrite` was given), is a
            file, is inside one of the run's inputs, or would delete an input when cleared.
    """
    folder = Path(recipe.output_dir)
    what = "output_dir (--output-dir)"
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{what} {folder} is a file, not a folder. Choose another --output-dir.")
    inputs = [recipe.model, recipe.tokenizer, *_data_paths(recipe)]
    check_inputs(folder, inputs, replacing=False, what=what)
    found = run_artefacts(folder)
    if found and not resume and not overwrite:
        names = ", ".join(path.name + ("/" if path.is_dir() else "") for path in found[:6])
        if not _checkpoints(folder) and not (folder / FINAL_DIR).is_dir():
            # Stopped before its first checkpoint was complete (killed mid-save): --resume has nothing to start
            # from, so do not offer it.
            raise OutputExistsError(
                f"{what} {folder} holds the start of a training run that stopped before its first checkpoint was "
                f"complete ({names}); there is nothing to resume, and nothing was changed. Start over with "
                "--overwrite-output-dir (deletes only those run files; other files are kept), or choose another "
                "--output-dir."
            )
        raise OutputExistsError(
            f"{what} {folder} already holds a training run ({names}); nothing was changed. To continue that run, "
            "add --resume. To start over, add --overwrite-output-dir (deletes checkpoint-*, final/, "
            "training_log.jsonl and evaluation*/ there; other files are kept), or choose another --output-dir."
        )
    # A run replaces final/ and rotates old checkpoints away; clearing the folder deletes every artefact. An input
    # inside one of them would be lost either way.
    local_inputs = [(item, Path(item).resolve()) for item in inputs if item and Path(item).exists()]
    for path in found:
        for item, source in local_inputs:
            if source.is_relative_to(path.resolve()):
                action = "--overwrite-output-dir would delete" if not resume else "this run replaces or deletes"
                raise OutputExistsError(
                    f"{action} {path}, which is or holds the input {item}: that would delete that input. Move it "
                    "out of the run folder first, or choose another --output-dir."
                )
    if resume or not found or check_only:
        return
    names = ", ".join(path.name + ("/" if path.is_dir() else "") for path in found[:6])
    logger.warning("--overwrite-output-dir: deleting the earlier run's %s in %s", names, folder)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def new_run_record(recipe: Recipe) -> dict[str, Any]:
    import uuid

    return {
        "run_id": uuid.uuid4().hex,
        "recipe_hash": recipe.fingerprint_hash(),
        "recipe": recipe.fingerprint(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_run_record(folder: Path) -> dict[str, Any] | None:
    path = folder / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


# --------------------------------------------------------------------------------------------------- resume
def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why a checkpoint folder cannot be resumed from (missing or unreadable files), or None when it is intact."""
    folder = Path(path)
    if not folder.is_dir():
        return "no such folder"
    missing = [name for name in ("trainer_state.json", "config.json") if not (folder / name).is_file()]
    weights = sorted(folder.glob("model*.safetensors"))
    if missing or not weights:
        return f"missing {', '.join(missing or ['model.safetensors'])}"
    damaged = damaged_safetensors(weights)
    if damaged is not None:
        return f"damaged: {type(damaged[1]).__name__}: {damaged[1]}"
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        for name in ("optimizer.pt", "scheduler.pt"):  # torch saves zip archives; a cut file has no index
            if (folder / name).is_file():
                import zipfile

                with zipfile.ZipFile(folder / name) as archive:
                    archive.namelist()
    except Exception as error:
        return f"damaged: {type(error).__name__}: {error}"
    return None


def _checkpoints(folder: Path) -> list[Path]:
    """`checkpoint-N` folders, newest (highest N) first."""
    found = []
    for path in folder.glob(f"{CHECKPOINT_PREFIX}-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found, reverse=True)]


def _newest_intact(folder: Path, exclude: Path | None = None) -> Path | None:
    for path in _checkpoints(folder):
        if path != exclude and checkpoint_problem(path) is None:
            return path
    return None


def resolve_resume(resume: str | bool | None, output_dir: str, recipe: Recipe | None = None) -> str | None:
    """The checkpoint to resume from, checked before anything is built.

    `True` picks the newest intact checkpoint in `output_dir` that belongs to this run (the run record in the
    folder) and was trained with the same recipe; damaged ones are skipped with a warning. A path is checked as is.
    With `recipe`, a checkpoint whose recipe differs in a setting that changes what is computed is refused, naming
    each difference.

    Raises:
        RecipeError: no usable checkpoint, a damaged one (naming the newest intact one instead), or another recipe.
    """
    if not resume:
        return None
    folder = Path(output_dir)
    if resume is not True:
        path = Path(resume)
        problem = checkpoint_problem(path)
        if problem is not None:
            intact = _newest_intact(path.parent, exclude=path) if path.parent.is_dir() else None
            instead = (
                f" The newest intact checkpoint there is {intact}: resume from it with --resume {intact}."
                if intact
                else " There is no intact checkpoint beside it: start over with --overwrite-output-dir."
            )
            raise RecipeError(
                f"--resume {path}: this checkpoint is damaged and cannot be resumed from ({problem}).{instead}"
            )
        if recipe is not None:
            _check_same_recipe(path, recipe)
        return str(path)

    candidates = _checkpoints(folder) if folder.is_dir() else []
    if not candidates:
        if run_artefacts(folder):
            raise RecipeError(
                f"--resume: the run in {output_dir} stopped before its first checkpoint was complete, so there is "
                "nothing to resume. Start it over: replace --resume with --overwrite-output-dir (deletes only that "
                "run's files)."
            )
        raise RecipeError(
            f"--resume: no checkpoint-* folder in {output_dir}, so there is nothing to resume. Drop --resume."
        )
    run = _read_run_record(folder)
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is not None:
            logger.warning("not resuming from %s: %s", path, problem)
            skipped.append(f"{path.name} ({problem})")
            continue
        record = _read_run_record(path)
        if run is not None and (record is None or record.get("run_id") != run.get("run_id")):
            logger.warning("not resuming from %s: it belongs to an earlier run in %s", path, folder)
            skipped.append(f"{path.name} (from an earlier run)")
            continue
        if recipe is not None:
            _check_same_recipe(path, recipe)
        if skipped:
            logger.warning("resuming from %s, the newest usable checkpoint (skipped: %s)", path, "; ".join(skipped))
        return str(path)
    raise RecipeError(
        f"--resume: no usable checkpoint in {output_dir}: {'; '.join(skipped)}. Start over with "
        "--overwrite-output-dir, or pass a checkpoint folder explicitly (--resume PATH)."
    )


def _check_not_finished(checkpoint: Path, output_dir: Path) -> None:
    """Resuming a run that reached its last step would train one step past it; say it is done instead."""
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    step, last = state.get("global_step", 0), state.get("max_steps", 0)
    if last > 0 and step >= last:
        final = output_dir / FINAL_DIR
        model = f"its model is {final}" if final.is_dir() else f"{checkpoint} holds its model"
        raise RecipeError(
            f"--resume: the run in {output_dir} already finished ({step} of {last} steps); {model}. To train "
            f"further, start a new run from that model (--model {final if final.is_dir() else checkpoint})."
        )


def _check_same_recipe(checkpoint: Path, recipe: Recipe) -> None:
    record = _read_run_record(checkpoint)
    if record is None or not isinstance(record.get("recipe"), dict):
        logger.warning(
            "%s has no run record (written by an older retromae-hf): its recipe cannot be checked", checkpoint
        )
        return
    differences = recipe_differences(record["recipe"], recipe.fingerprint())
    if differences:
        raise RecipeError(
            f"--resume: {checkpoint} was trained with another recipe ({'; '.join(differences)}; checkpoint -> now). "
            "Resuming would mix two runs. Resume with the checkpoint's settings, or start a new run "
            "(--overwrite-output-dir, or another --output-dir)."
        )


def shared_run_record(run_path: Path, recipe: Recipe, resumed: bool, args: Any) -> dict[str, Any]:
    """The run record (run id, recipe): read or created and written by the main process alone, then sent to the
    others, so that every rank, every checkpoint and the run folder name one run and `--resume` finds them."""
    record = None
    if args.process_index == 0:
        record = _read_run_record(run_path) if resumed else None
        if record is None:
            record = new_run_record(recipe)
            run_path.mkdir(parents=True, exist_ok=True)
            path = run_path / RUN_RECORD
            staged = path.with_name(f".{RUN_RECORD}.tmp")
            staged.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
            os.replace(staged, path)
    if args.world_size > 1:
        import torch.distributed as dist

        box = [record]
        dist.broadcast_object_list(box, src=0)
        record = box[0]
    return record


