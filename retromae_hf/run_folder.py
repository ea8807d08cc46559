"""Run folders: what `train` writes into `--output-dir`, who may replace it, and which checkpoint `--resume` takes.

A run folder belongs to one run. `prepare_output_dir` refuses a fresh run into a folder that holds an earlier one
(unless `--overwrite-output-dir`, which deletes only `RUN_ARTEFACTS`, and only in a folder holding a run record:
a user's folder is never cleared, whatever its files are called); the run record (`RUN_RECORD`: run id and
recipe), written by the main process alone and copied into every checkpoint, lets `resolve_resume` pick the newest
intact checkpoint of this run and recipe, and refuse anything else by name. Nothing here imports torch: the CLI can
check a folder before the training code is loaded.
"""

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import MissingInputError, OutputExistsError, damaged_safetensors, looks_like_local_path
from .locks import LOCK_FILE, LOCK_INFO, check_not_locked
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
    return _data_paths_of([*recipe.corpus, *recipe.pairs])


#: Names that can only be local data files (`data.SUPPORTED_EXTENSIONS`, optionally gzipped); kept here so that the
#: check runs before `datasets` is imported (tests/test_user_errors.py compares the two).
DATA_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".gz")


def check_local_inputs(recipe: Recipe, made_earlier: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse a missing local input (model, tokenizer, corpus or pairs path) by name, before torch, tokenizers or
    data are loaded: a mistyped path costs a fraction of a second instead of the imports. Names that may be Hub ids
    (`bert-base-uncased`, `org/name`) are left to the loaders, which know the Hub; `made_earlier` are the final
    folders of the stages run before this one (a `model: previous` that does not exist yet).

    Raises:
        MissingInputError: naming the path and its flag.
    """
    made = {str(Path(path)) for path in made_earlier}
    named = [("model", recipe.model, "--model"), ("tokenizer", recipe.tokenizer, "--tokenizer")]
    for role, name, flag in named:
        if not name or name in ("scratch", "train") or str(Path(name)) in made:
            continue
        if not Path(name).expanduser().exists() and looks_like_local_path(name):
            raise MissingInputError(f"{role} {name!r} ({flag}): no such file or folder. Check the path.")
    sources = [(path, "--corpus") for path in _data_paths_of(recipe.corpus)]
    sources += [(path, "--pairs") for path in _data_paths_of(recipe.pairs)]
    for path, flag in sources:
        if Path(path).expanduser().exists():
            continue
        if looks_like_local_path(path) or Path(path).suffix.lower() in DATA_FILE_SUFFIXES:
            raise MissingInputError(f"{path}: no such file or folder ({flag}). Check the path.")


def _data_paths_of(sources: list[Any]) -> list[str]:
    paths = []
    for source in sources:
        path = source.get("path") if isinstance(source, dict) else source
        if isinstance(path, str | os.PathLike) and path != PYTHON_DOCSTRINGS:
            paths.append(str(path))
    return paths


def prepare_output_dir(recipe: Recipe, resume: str | bool | None, overwrite: bool, check_only: bool = False) -> None:
    """Make sure a run loses nothing: a fresh run into a folder that holds an earlier run is refused unless
    `overwrite`, which deletes only what `train` creates there (`RUN_ARTEFACTS`); other files stay. A folder without
    a run record is never cleared: with `overwrite` and anything in it, or with a file `train` would replace, it is
    refused (`_refuse_a_folder_train_did_not_make`). With
    `check_only`, nothing is deleted (`run_recipe` checks every stage before the first one starts).

    Raises:
        OutputExistsError: the folder holds an earlier run (and neither `resume` nor `overwrite` was given), is a
            file, is inside one of the run's inputs, or would delete an input when cleared.
    """
    folder = Path(recipe.output_dir)
    what = "output_dir (--output-dir)"
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{what} {folder} is a file, not a folder. Choose another --output-dir.")
    if check_only:
        # A folder another run holds is named as such (its process) before anything else is said about it.
        check_not_locked(folder, what=what)
    inputs = [recipe.model, recipe.tokenizer, *_data_paths(recipe)]
    check_inputs(folder, inputs, replacing=False, what=what)
    found = run_artefacts(folder)
    if not resume and not (folder / RUN_RECORD).is_file():
        _refuse_a_folder_train_did_not_make(folder, found, overwrite, what)
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


def _refuse_a_folder_train_did_not_make(folder: Path, found: list[Path], overwrite: bool, what: str) -> None:
    """A folder without a run record was not made by `train`: its files are the user's, even where their names are
    those `train` writes (`final/`, `evaluation/`). A fresh run may add to it only where it replaces nothing, and
    `--overwrite-output-dir` deletes nothing in it.

    Raises:
        OutputExistsError: with `overwrite` and anything in the folder, or without it where a name would clash.
    """
    held = {LOCK_FILE, LOCK_INFO}  # a run's own lock, taken before this check is repeated under it
    present = sorted(path for path in folder.iterdir() if path.name not in held) if folder.is_dir() else []
    if not present or not (overwrite or found):
        return

    def listed(paths: list[Path]) -> str:
        more = f" and {len(paths) - 6} more" if len(paths) > 6 else ""
        return ", ".join(path.name + ("/" if path.is_dir() else "") for path in paths[:6]) + more

    if overwrite:
        raise OutputExistsError(
            f"{what} {folder} holds files that retromae-hf train did not write ({listed(present)}): it has no run "
            f"record ({RUN_RECORD}), so it is not a training run, and --overwrite-output-dir replaces only a run "
            "folder that train made. Nothing was changed. Choose another --output-dir (a new or empty folder)."
        )
    raise OutputExistsError(
        f"{what} {folder} holds {listed(found)}, which a run would write, but it has no run record ({RUN_RECORD}): "
        "these are not a training run's files, and a run there would replace them. Nothing was changed. Choose "
        "another --output-dir (a new or empty folder), or move those out of it."
    )


def refuse_run_folder_as_model(path: str | os.PathLike, flag: str) -> None:
    """A run folder passed where a model is read (`export RUN`, `evaluate RUN`): its model is in `final/` (or a
    checkpoint), not at its top. Refused naming the folder to pass instead; anything else is left to the loaders.

    Raises:
        MissingInputError: `path` is a run folder without a model of its own.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir() or (folder / "config.json").is_file() or (folder / "modules.json").is_file():
        return
    checkpoints = _checkpoints(folder)
    if not ((folder / RUN_RECORD).is_file() or (folder / FINAL_DIR).is_dir() or checkpoints):
        return
    final = folder / FINAL_DIR
    if final.is_dir():
        instead = f"pass its finished model, {final}"
    elif checkpoints:
        instead = f"the run has not finished: pass its newest checkpoint, {checkpoints[0]}, or finish the run first"
    else:
        instead = "the run has no model yet (no final/, no checkpoint-*): let it finish, or start it over, first"
    raise MissingInputError(f"{path} ({flag}) is a training run folder, not a model: {instead}.")


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
            if not path.exists():
                intact = intact or (_newest_intact(folder) if folder.is_dir() else None)
                instead = (
                    f" The newest intact checkpoint is {intact}: resume from it with --resume {intact}."
                    if intact
                    else f" Check the path, or drop the path (--resume alone takes the newest checkpoint in {folder})."
                )
                raise RecipeError(f"--resume {path}: no such checkpoint folder (it is missing).{instead}")
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


