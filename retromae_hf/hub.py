"""Model cards, push and pull: RetroMAE checkpoints and sentence-transformers exports on the Hugging Face Hub.

Two kinds of folder are published:

- a stage-1 (pre-training) checkpoint, written by `RetroMAEForPreTraining.save_pretrained`: `config.json` with
  `model_type: retromae` and an `auto_map`, `model.safetensors` (encoder and decoder), the two remote-code files
  and the tokenizer. Its card is `model_cards/retromae_base.md` (`library_name: transformers`,
  `pipeline_tag: feature-extraction`).
- a stage-2 sentence-transformers export (`modules.json`: BERT Transformer + CLS Pooling [+ Normalize]), written by
  `retromae_hf.export.export_sentence_transformer`. Its card is `model_cards/retromae_sentence_transformers.md`
  (`library_name: sentence-transformers`, `pipeline_tag: sentence-similarity`).

`push_to_hub` renders the card into a staging copy of the folder (the folder itself is never written to) and uploads
it with `huggingface_hub.HfApi`; `pull_from_hub` downloads a snapshot and loads it with the matching class.

The endpoint is `huggingface_hub.constants.ENDPOINT` (`HF_ENDPOINT`) unless `endpoint=` is given; the token is the
`token=` argument, else `HF_TOKEN`, else the token saved by `hf auth login`, as `huggingface_hub` resolves it. The
token is handed to `huggingface_hub` only: it is never logged, written into a card or a staged file, nor put in an
error message.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import shlex
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token, snapshot_download

from .errors import UserError

logger = logging.getLogger(__name__)

ArtefactKind = Literal["base", "sentence-transformers"]
CardKind = Literal["auto", "base", "sentence-transformers"]
PullKind = Literal["auto", "base", "pretraining", "sentence-transformers"]

#: Card template for each kind of folder, looked up by `template_path`.
TEMPLATES: dict[str, str] = {
    "base": "retromae_base.md",
    "sentence-transformers": "retromae_sentence_transformers.md",
}
#: Environment variable naming a folder of card templates that takes precedence over the shipped ones.
TEMPLATES_ENV = "RETROMAE_HF_MODEL_CARDS"
RECIPE_FILENAME = "recipe.yaml"
#: Where the evaluation summary is stored in the Hub repo, beside the weights.
SUMMARY_REPO_PATH = "evaluation/summary.json"
#: Files of a training output folder that are not part of the model (matched against the relative posix path).
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (
    ".git/*",
    ".cache/*",
    "*/__pycache__/*",
    "__pycache__/*",
    "*.pyc",
    "checkpoint-*/*",
    "runs/*",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "training_args.bin",
    "*.lock",
    ".retromae-output.json",  # which command wrote a local folder (outputs.OUTPUT_MARKER): local bookkeeping
    ".retromae.lock.json",
)
#: Recipe keys whose values are replaced by `[redacted]` in cards and staged recipes.
SECRET_KEY_RE = re.compile(r"token|secret|password|passwd|api[_-]?key|credential|auth", re.IGNORECASE)
REDACTED = "[redacted]"

_SIMILARITY_LABELS = {
    "dot": "dot product",
    "cosine": "cosine similarity",
    "euclidean": "negative Euclidean distance",
    "manhattan": "negative Manhattan distance",
}


class HubPushError(UserError, RuntimeError):
    """An upload to the Hub failed. The local folder is untouched; the message says what to run to retry.

    Attributes:
        repo_id: The target repository.
        revision: The target branch (`"main"` when none was given).
        step: The call that failed: `create_repo`, `create_branch` or `upload_folder`.
        retry_command: A shell command that repeats the push.
    """

    def __init__(self, message: str, *, repo_id: str, revision: str, step: str, retry_command: str):
        super().__init__(message)
        self.repo_id = repo_id
        self.revision = revision
        self.step = step
        self.retry_command = retry_command


# --------------------------------------------------------------------------------------------------- inputs


def detect_kind(folder: str | Path) -> ArtefactKind:
    """Say what a local folder holds: `"base"` (a RetroMAE checkpoint: `config.json` with `model_type: retromae`)
    or `"sentence-transformers"` (an export: `modules.json` over a plain transformers model).

    A RetroMAE checkpoint also carries `modules.json` (so sentence-transformers can load it with remote code); its
    `config.json` decides, so it is still `"base"`.

    Raises:
        ValueError: The folder is neither, with what was found and what was expected.
    """
    path = Path(folder)
    expected = (
        "expected config.json with model_type 'retromae' (RetroMAEForPreTraining.save_pretrained) or modules.json "
        "(a sentence-transformers export from retromae_hf.export.export_sentence_transformer)"
    )
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder: {expected}")
    config_path = path / "config.json"
    model_type = None
    if config_path.is_file():
        try:
            model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{config_path} is not a JSON object: {err}") from err
        if model_type == "retromae":
            return "base"
    if (path / "modules.json").is_file():
        return "sentence-transformers"
    if config_path.is_file():
        raise ValueError(f"{path} holds a model of type {model_type!r} ({config_path}), not RetroMAE: {expected}")
    raise ValueError(f"{path} is neither a RetroMAE checkpoint nor a sentence-transformers export: {expected}")


def load_summary(summary: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Read and check an evaluation `summary.json` (a path or an already loaded dict); `None` passes through.

    Raises:
        ValueError: The file is missing or not a summary (`EvaluationDataError`), or a result lacks `task`,
            `main_metric` or `main_score`.
    """
    if summary is None:
        return None
    source = "the summary dict"
    if isinstance(summary, Mapping):
        data = dict(summary)
    else:
        from .evaluation import load_summary as read_summary_file

        source = str(summary)
        data = read_summary_file(summary)  # names the file on a missing file, bad JSON or a non-summary
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a JSON object with a 'results' list (retromae_hf.evaluation format)")
    for index, result in enumerate(results):
        missing = [key for key in ("task", "main_metric", "main_score") if key not in (result or {})]
        if missing:
            raise ValueError(f"{source}: results[{index}] lacks {', '.join(missing)}")
        if not isinstance(result["main_score"], int | float) or isinstance(result["main_score"], bool):
            raise ValueError(f"{source}: results[{index}].main_score must be a number, got {result['main_score']!r}")
    return data


def load_recipe(recipe: str | Path | Mapping[str, Any] | None, folder: str | Path | None = None) -> dict | None:
    """Read a training recipe (a YAML path or a dict); with `None`, `<folder>/recipe.yaml` when it exists.

    Raises:
        FileNotFoundError: An explicit recipe path does not exist.
        ValueError: The YAML is invalid or not a mapping.
    """
    if isinstance(recipe, Mapping):
        return dict(recipe)
    if recipe is None:
        if folder is None or not (Path(folder) / RECIPE_FILENAME).is_file():
            return None
        path = Path(folder) / RECIPE_FILENAME
    else:
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"training recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{path}: invalid YAML{where}: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def redact_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `recipe` where every value under a secret-looking key (token, password, api_key...) is hidden."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                key: (REDACTED if SECRET_KEY_RE.search(str(key)) and item is not None else walk(item))
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(recipe)


# --------------------------------------------------------------------------------------------------- card


@dataclass
class CardContext:
    """Everything a card template is rendered from, besides the YAML metadata (`ModelCardData`)."""

    kind: ArtefactKind
    repo_id: str
    model_name: str
    hub_url: str
    architecture: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    sentence_transformers: dict[str, Any] = field(default_factory=dict)
    recipe_rows: list[tuple[str, str]] = field(default_factory=list)
    recipe_yaml: str = ""
    eval_rows: list[dict[str, str]] = field(default_factory=list)
    metric_rows: list[dict[str, str]] = field(default_factory=list)
    eval_info: dict[str, str] = field(default_factory=dict)
    retromae_hf_version: str = ""

    def as_template_kwargs(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "repo_id": self.repo_id,
            "model_name": self.model_name,
            "hub_url": self.hub_url,
            "arch": self.architecture,
            "params": self.parameters,
            "st": self.sentence_transformers,
            "recipe_rows": self.recipe_rows,
            "recipe_yaml": self.recipe_yaml,
            "eval_rows": self.eval_rows,
            "metric_rows": self.metric_rows,
            "eval_info": self.eval_info,
            "retromae_hf_version": self.retromae_hf_version,
        }


def template_path(kind: ArtefactKind) -> Path:
    """The card template for `kind`: `$RETROMAE_HF_MODEL_CARDS`, then `model_cards/` inside the installed package,
    then `model_cards/` at the top of a source checkout.

    Raises:
        FileNotFoundError: No candidate folder holds the template (lists the folders searched).
    """
    name = TEMPLATES[kind]
    here = Path(__file__).resolve().parent
    candidates = [here / "model_cards", here.parent / "model_cards"]
    if os.environ.get(TEMPLATES_ENV):
        candidates.insert(0, Path(os.environ[TEMPLATES_ENV]))
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(folder) for folder in candidates)
    raise FileNotFoundError(f"model card template {name} not found in {searched}")


def summary_to_eval_results(summary: Mapping[str, Any]) -> list[EvalResult]:
    """One `huggingface_hub.EvalResult` per (task, metric) of an evaluation summary, main metric first.

    Follows the MTEB convention for `model-index`: the task type is the MTEB task type (`Retrieval`, `STS`...), the
    dataset type its Hub id (a local data path is replaced by the dataset's name, so no local path is published),
    and scores keep the summary's 0-1 scale. Non-finite scores (NaN) are left out.
    """
    results: list[EvalResult] = []
    for result in summary.get("results", []):
        dataset = result.get("dataset") or {}
        metrics: dict[str, Any] = {result["main_metric"]: result["main_score"]}
        for name, value in (result.get("metrics") or {}).items():
            metrics.setdefault(name, value)
        for metric, value in metrics.items():
            if not _is_number(value):
                logger.warning(
                    "leaving %s %s = %r out of model-index: not a finite number", result["task"], metric, value
                )
                continue
            results.append(
                EvalResult(
                    task_type=str(result.get("task_type") or "Retrieval"),
                    task_name=str(result["task"]),
                    dataset_type=_dataset_id(result),
                    dataset_name=str(dataset.get("name") or f"MTEB {result['task']}"),
                    dataset_config=dataset.get("config"),
                    dataset_split=dataset.get("split"),
                    dataset_revision=dataset.get("revision"),
                    metric_type=str(metric),
                    metric_value=float(value),
                )
            )
    return results


def render_model_card(
    folder: str | Path,
    summary: str | Path | Mapping[str, Any] | None = None,
    recipe: str | Path | Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    *,
    card_kind: CardKind = "auto",
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    license: str | None = "apache-2.0",
    language: str | list[str] | None = "en",
) -> ModelCard:
    """Render the model card of a RetroMAE checkpoint or sentence-transformers export, without writing anything.

    Args:
        folder: The checkpoint or export folder.
        summary: Evaluation summary (`summary.json` path or dict) for the tables and `model-index`.
        recipe: Training recipe (YAML path or dict); defaults to `<folder>/recipe.yaml` when present.
        repo_id: The Hub id the card is written for (used in snippets); defaults to the folder's name.
        card_kind: `"auto"` picks the template from the folder's kind.
        base_model: Hub id(s) this model starts from; defaults to what the recipe names (`base_model`,
            `model_name_or_path`, `init_from`...) when it is a Hub id.
        datasets: Hub id(s) of the training data; defaults to what the recipe names when they are Hub ids.
        license: License id for the metadata.
        language: Language code(s) for the metadata.

    Returns:
        A `huggingface_hub.ModelCard`; `str(card)` is the README, `card.data` its metadata.
    """
    path = Path(folder).expanduser().resolve()
    kind = detect_kind(path)
    if card_kind != "auto":
        if card_kind not in TEMPLATES:
            raise ValueError(f"card_kind must be 'auto', 'base' or 'sentence-transformers', got {card_kind!r}")
        if card_kind != kind:
            logger.warning("%s looks like a %s folder but a %s card was asked for", path, kind, card_kind)
        kind = card_kind
    summary_data = load_summary(summary)
    recipe_data = load_recipe(recipe, path)
    safe_recipe = redact_recipe(recipe_data) if recipe_data is not None else None
    repo = repo_id or path.name
    model_name = repo.split("/")[-1]
    if base_model is None and safe_recipe:
        base_model = _recipe_base_model(safe_recipe)
    if datasets is None and safe_recipe:
        datasets = _recipe_datasets(safe_recipe) or None

    eval_results = summary_to_eval_results(summary_data) if summary_data else []
    tags = ["retromae", "dense-retrieval", "sentence-embeddings"]
    if kind == "base":
        tags += ["feature-extraction", "pretraining", "custom_code"]
    else:
        tags += ["sentence-transformers", "sentence-similarity", "feature-extraction"]
    if summary_data:
        tags.append("mteb")
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers" if kind == "base" else "sentence-transformers",
        pipeline_tag="feature-extraction" if kind == "base" else "sentence-similarity",
        tags=tags,
        base_model=base_model,
        datasets=datasets,
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )
    context = CardContext(
        kind=kind,
        repo_id=repo,
        model_name=model_name,
        hub_url=constants.ENDPOINT.rstrip("/"),
        architecture=_architecture(path),
        parameters=_parameter_counts(path),
        sentence_transformers=_sentence_transformers_info(path) if (path / "modules.json").is_file() else {},
        recipe_rows=_recipe_rows(safe_recipe) if safe_recipe else [],
        recipe_yaml=yaml.safe_dump(safe_recipe, sort_keys=False).strip() if safe_recipe else "",
        retromae_hf_version=_package_version(),
    )
    if summary_data:
        context.eval_rows, context.metric_rows, context.eval_info = _evaluation_tables(summary_data)
    card = ModelCard.from_template(card_data, template_path=str(template_path(kind)), **context.as_template_kwargs())
    logger.debug("rendered a %s card for %s (%d eval results)", kind, repo, len(eval_results))
    return card


# --------------------------------------------------------------------------------------------------- push / pull


def push_to_hub(
    checkpoint_or_export: str | Path,
    repo_id: str,
    *,
    summary: str | Path | Mapping[str, Any] | None = None,
    recipe: str | Path | Mapping[str, Any] | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    card_kind: CardKind = "auto",
    endpoint: str | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    license: str | None = "apache-2.0",
    language: str | list[str] | None = "en",
    ignore_patterns: Iterable[str] | None = None,
) -> str:
    """Upload a RetroMAE checkpoint or sentence-transformers export with a generated model card.

    The folder is copied (as symlinks where possible) into a temporary staging folder, the card is written there as
    `README.md` (replacing any README of the folder), the summary as `evaluation/summary.json` and the recipe as
    `recipe.yaml`; then `create_repo(exist_ok=True)`, `create_branch` for a new `revision`, and `upload_folder`.
    Files that did not change since the last push are skipped by the Hub client.

    Args:
        checkpoint_or_export: The folder to publish.
        repo_id: Target repository, `namespace/name`.
        summary: Evaluation summary for the card and `model-index`.
        recipe: Training recipe; defaults to `<folder>/recipe.yaml`.
        private: Create the repo private (ignored when it exists); `False` leaves the namespace default.
        revision: Branch to push to, created from `main` when missing; `None` pushes to `main`.
        create_pr: Open a pull request against `main` instead of pushing to it (cannot name another `revision`).
        commit_message: Defaults to a message naming the kind of upload.
        token: Hub token; defaults to `HF_TOKEN` or the saved login. Never logged.
        card_kind: `"auto"`, `"base"` or `"sentence-transformers"`.
        endpoint: Hub URL; defaults to `HF_ENDPOINT` / `huggingface_hub.constants.ENDPOINT`.
        base_model, datasets, license, language: Card metadata, see `render_model_card`.
        ignore_patterns: Extra glob patterns (relative posix paths) to leave out, besides `DEFAULT_IGNORE_PATTERNS`.

    Returns:
        The commit URL: a `huggingface_hub.CommitInfo`, a `str` that also carries `.oid` and `.pr_url`.

    Raises:
        ValueError: The folder is not a RetroMAE checkpoint nor an export, or the revision options conflict.
        HubPushError: A Hub call failed; the folder is untouched and the message holds a retry command.
    """
    _check_repo_id(repo_id)
    folder = Path(checkpoint_or_export).expanduser().resolve()
    kind = detect_kind(folder)
    branch = _check_revision(revision, create_pr)
    summary_data = load_summary(summary)
    recipe_data = load_recipe(recipe, folder)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    # Resolved only to keep it out of messages; `HfApi` resolves it again the same way.
    secret = token or get_token()
    card = render_model_card(
        folder,
        summary_data,
        recipe_data,
        repo_id,
        card_kind=card_kind,
        base_model=base_model,
        datasets=datasets,
        license=license,
        language=language,
    )
    target = revision or "main"
    label = "RetroMAE pre-trained checkpoint" if kind == "base" else "RetroMAE sentence-transformers model"
    message = commit_message or f"Upload {label} with retromae-hf {_package_version()}".strip()
    retry = _retry_command(folder, repo_id, summary, recipe, private, revision, create_pr, endpoint)
    api = HfApi(endpoint=endpoint, token=token, library_name="retromae-hf", library_version=_package_version())

    with tempfile.TemporaryDirectory(prefix="retromae-hf-push-") as tmp:
        staging = Path(tmp) / folder.name
        patterns = (*DEFAULT_IGNORE_PATTERNS, *(ignore_patterns or ()))
        _stage(folder, staging, patterns, recipe_data)
        if summary_data is not None:
            (staging / SUMMARY_REPO_PATH).parent.mkdir(parents=True, exist_ok=True)
            (staging / SUMMARY_REPO_PATH).write_text(json.dumps(summary_data, indent=2) + "\n", encoding="utf-8")
        _replace_file(staging / "README.md", _redact(str(card), secret))
        logger.info("pushing %s (%s) to %s/%s, revision %s", folder, kind, endpoint, repo_id, target)
        step = "create_repo"
        try:
            api.create_repo(repo_id, private=True if private else None, exist_ok=True)
            if branch is not None:
                step = "create_branch"
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            step = "upload_folder"
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=revision,
                create_pr=create_pr,
                commit_message=message,
            )
        except Exception as err:
            detail = _redact(f"{type(err).__name__}: {err}", secret)
            raise HubPushError(
                f"Pushing {folder} to {endpoint}/{repo_id} (revision {target!r}) failed during {step}: {detail}\n"
                + _push_hint(err, secret)
                + f"Nothing in {folder} was changed. Retrying is safe: files already on the Hub are skipped.\n"
                f"Retry with:\n  {retry}",
                repo_id=repo_id,
                revision=target,
                step=step,
                retry_command=retry,
            ) from None
    if getattr(info, "pr_url", None):
        logger.info("opened pull request %s", info.pr_url)
    logger.info("pushed %s to %s", folder, info)
    return info


def pull_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    kind: PullKind = "auto",
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Any:
    """Download a repo snapshot and load it with the matching class.

    Args:
        repo_id: The repository.
        revision: Branch, tag or commit sha (pin a sha for reproducible loads).
        token: Hub token; defaults to `HF_TOKEN` or the saved login.
        kind: `"auto"` (sentence-transformers export → `SentenceTransformer`, RetroMAE checkpoint → `RetroMAEModel`),
            `"base"` (`RetroMAEModel` through `AutoModel`), `"pretraining"` (`RetroMAEForPreTraining` through
            `AutoModelForPreTraining`), or `"sentence-transformers"` (a `SentenceTransformer`; for a RetroMAE
            checkpoint, its encoder with [CLS] pooling).
        cache_dir: Hub cache folder; defaults to `HF_HUB_CACHE`.
        endpoint: Hub URL; defaults to `HF_ENDPOINT`.

    Returns:
        A `SentenceTransformer`, `RetroMAEModel` or `RetroMAEForPreTraining`. RetroMAE classes come from this
        package (no remote code is run).

    Raises:
        ValueError: `kind` does not fit what the repo holds.
    """
    if kind not in ("auto", "base", "pretraining", "sentence-transformers"):
        raise ValueError(f"kind must be 'auto', 'base', 'pretraining' or 'sentence-transformers', got {kind!r}")
    from .errors import remote_resource

    with remote_resource("repository", repo_id, endpoint=endpoint, local_ok=False):  # pull takes no folder
        local_dir = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                token=token,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
                endpoint=endpoint,
            )
        )
    found = detect_kind(local_dir)
    logger.info("downloaded %s@%s (%s) to %s", repo_id, revision or "main", found, local_dir)
    if found == "sentence-transformers":
        if kind in ("base", "pretraining"):
            raise ValueError(
                f"{repo_id} holds a sentence-transformers export, not a RetroMAE checkpoint: load it with "
                "kind='auto' or kind='sentence-transformers'"
            )
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(local_dir))
    import retromae_hf  # noqa: F401 - registers RetroMAEConfig and its models with the Auto classes

    if kind == "sentence-transformers":
        # The checkpoint's encoder with [CLS] pooling, through the registered (local) RetroMAE classes.
        from .export import load_sentence_transformer

        return load_sentence_transformer(local_dir)
    from transformers import AutoModel, AutoModelForPreTraining

    auto_class = AutoModelForPreTraining if kind == "pretraining" else AutoModel
    # The package's own classes: the repo's copy of the modeling code is not executed.
    return auto_class.from_pretrained(str(local_dir), trust_remote_code=False)


# --------------------------------------------------------------------------------------------------- helpers


def _check_revision(revision: str | None, create_pr: bool) -> str | None:
    """Validate the target revision before any network call; return the branch to create, if any."""
    if revision is None or revision == "main":
        return None
    if create_pr:
        raise ValueError(
            f"create_pr=True opens a pull request against 'main'; it cannot be combined with revision={revision!r}"
        )
    if re.fullmatch(r"[0-9a-fA-F]{40}", revision):
        raise ValueError(f"revision {revision!r} is a commit sha: pushes go to a branch name")
    if revision.startswith("refs/pr/"):
        return None  # an existing pull request: pushed to as is
    if revision.startswith("refs/"):
        raise ValueError(f"revision {revision!r}: name a branch (e.g. 'dev') or an open pull request 'refs/pr/N'")
    return revision


def _stage(folder: Path, staging: Path, ignore_patterns: Iterable[str], recipe: Mapping[str, Any] | None) -> None:
    """Mirror `folder` into `staging` with symlinks (copies where links are refused); never writes into `folder`."""
    patterns = tuple(ignore_patterns)
    staging.mkdir(parents=True)
    count = 0
    for source in sorted(folder.rglob("*")):
        if not source.is_file():
            continue
        relative = source.relative_to(folder).as_posix()
        if any(fnmatch.fnmatch(relative, pattern) for pattern in patterns):
            logger.debug("not uploading %s (ignored)", relative)
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copy2(source, target)
        count += 1
    if recipe is not None:
        redacted = redact_recipe(recipe)
        if redacted != recipe or not (folder / RECIPE_FILENAME).is_file():
            _replace_file(staging / RECIPE_FILENAME, yaml.safe_dump(redacted, sort_keys=False))
    logger.debug("staged %d files of %s in %s", count, folder, staging)


def _replace_file(path: Path, text: str) -> None:
    """Write `text` to `path` in the staging folder, first unlinking a symlink so its target is never written."""
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text, encoding="utf-8")


def _check_repo_id(repo_id: str) -> None:
    """Refuse a repository id the Hub would never accept, before anything is read or sent (the Hub's own answer
    to it reads like a credentials problem).

    Raises:
        UserError: naming the id, what is wrong with it and the form it must have.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(
            f"repository id {repo_id!r} is not a valid Hugging Face repository id ({' '.join(str(error).split())}). "
            "Give 'name' or 'namespace/name' (letters, digits, '-', '_' and '.', at most 96 characters), e.g. "
            "my-org/retromae-base."
        ) from None


def _push_hint(error: BaseException, secret: str | None) -> str:
    """What to do about the usual causes of a failed push: no token, a token without write rights, no network."""
    from .errors import http_status, is_network_error

    status = http_status(error)
    if status == 401 or (status is None and secret is None and not is_network_error(error)):
        return (
            "The Hub did not accept the credentials"
            + (" (no token was found)" if secret is None else "")
            + ": set HF_TOKEN to a token with write access, or run `hf auth login`.\n"
        )
    if status == 403:
        return "The token may not write to this repository: use a token with write access to its namespace.\n"
    if is_network_error(error):
        return "The Hub could not be reached: check the network (and that HF_HUB_OFFLINE is not set).\n"
    return ""


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "hf_***") if secret else text


def _retry_command(
    folder: Path,
    repo_id: str,
    summary: Any,
    recipe: Any,
    private: bool,
    revision: str | None,
    create_pr: bool,
    endpoint: str,
) -> str:
    parts = ["retromae-hf", "push", str(folder), repo_id]
    if isinstance(summary, str | Path):
        parts += ["--summary", str(summary)]
    if isinstance(recipe, str | Path):
        parts += ["--recipe", str(recipe)]
    if revision:
        parts += ["--revision", revision]
    if private:
        parts.append("--private")
    if create_pr:
        parts.append("--create-pr")
    command = shlex.join(parts)
    if endpoint != constants._HF_DEFAULT_ENDPOINT:
        command = f"HF_ENDPOINT={shlex.quote(endpoint)} {command}"
    return command


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value: Any) -> str:
    """A value as one Markdown table cell."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _recipe_rows(recipe: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(_cell(key), _cell(value)) for key, value in _flatten(recipe)]


def _looks_like_hub_id(value: Any) -> bool:
    if not isinstance(value, str) or not value or value.startswith((".", "/", "~")) or "\\" in value:
        return False
    if Path(value).exists():
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", value) is not None


_BASE_MODEL_KEYS = ("base_model", "model_name_or_path", "init_from", "pretrained_model_name_or_path", "from_pretrained")
_DATASET_KEYS = ("dataset", "datasets", "dataset_name", "train_dataset", "train_datasets", "corpus", "corpora")


def _recipe_base_model(recipe: Mapping[str, Any]) -> str | None:
    for key, value in _flatten(recipe):
        if key.split(".")[-1] in _BASE_MODEL_KEYS and _looks_like_hub_id(value):
            return value
    return None


def _recipe_datasets(recipe: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key, value in _flatten(recipe):
        if key.split(".")[-1] not in _DATASET_KEYS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if _looks_like_hub_id(item) and "/" in item and item not in found:
                found.append(item)
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _architecture(folder: Path) -> dict[str, Any]:
    config = _read_json(folder / "config.json")
    # A RetroMAE checkpoint keeps the encoder's config under `encoder` (0.1 checkpoints and exports: at the top).
    encoder = config.get("encoder") if isinstance(config.get("encoder"), dict) else config
    found = {key: encoder.get(key, "?") for key in ENCODER_KEYS}
    found.update({key: config.get(key, "?") for key in ("model_type", *DECODER_KEYS)})
    found["encoder_type"] = ENCODER_NAMES.get(encoder.get("model_type"), encoder.get("model_type") or "BERT")
    if found["encoder_type"] == "retromae":  # a 0.1 checkpoint: its encoder was BERT
        found["encoder_type"] = "BERT"
    found["max_length"] = _max_input_length(folder, encoder)
    return found


#: Encoders whose position ids start after the padding row (`pad_token_id + 1` rows precede the first position).
_PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert")


def _max_input_length(folder: Path, encoder: Mapping[str, Any]) -> Any:
    """The longest input in tokens: what the checkpoint's own sentence-transformers metadata records (the model's
    `max_sequence_length()`), else the position table less RoBERTa's and XLM-R's padding offset (512 of 514)."""
    recorded = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    positions = encoder.get("max_position_embeddings")
    if not isinstance(positions, int):
        return "?"
    if encoder.get("model_type") in _PADDING_OFFSET_TYPES:
        return positions - int(encoder.get("pad_token_id") or 1) - 1
    return positions


ENCODER_NAMES = {"bert": "BERT", "roberta": "RoBERTa", "xlm-roberta": "XLM-RoBERTa", "modernbert": "ModernBERT"}
ENCODER_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)
DECODER_KEYS = ("num_decoder_layers", "query_stream", "decoder_positions")


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header, without loading the weights."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: implausible safetensors header length {length}")
        header = json.loads(handle.read(length))
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


def _format_count(count: int) -> str:
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e3:
        return f"{count / 1e3:.1f}K"
    return str(count)


def _parameter_counts(folder: Path) -> dict[str, str]:
    total = encoder = 0
    files = sorted(folder.glob("*.safetensors"))
    try:
        shapes = {name: shape for path in files for name, shape in _safetensors_shapes(path).items()}
        # A checkpoint holds the encoder's masked-LM model under `lm.` (its base model under `lm.bert.`,
        # `lm.roberta.`, `lm.model.`, ...: the child holding the embeddings) beside the decoder; a 0.1 checkpoint
        # and an export hold the encoder at the top level (beside `cls.*` and `decoder.*` for the former).
        bases = {name.split(".")[1] for name in shapes if name.startswith("lm.") and ".embeddings." in name}
        for name, shape in shapes.items():
            size = math.prod(shape)
            total += size
            if name.startswith(tuple(f"lm.{base}." for base in bases)) or (
                not name.startswith(("lm.", "decoder.", "cls."))
            ):
                encoder += size
    except (OSError, ValueError, KeyError, struct.error) as err:
        logger.warning("could not count parameters of %s: %s", folder, err)
        return {}
    if not files:
        return {}
    return {"total": _format_count(total), "encoder": _format_count(encoder)}


def _sentence_transformers_info(folder: Path) -> dict[str, Any]:
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    config = _read_json(folder / "config_sentence_transformers.json")
    similarity = config.get("similarity_fn_name") or "cosine"
    module_types = [str(module.get("type", "")) for module in modules]
    pooling: dict[str, Any] = {}
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            pooling = _read_json(folder / str(module.get("path", "")) / "config.json")
    normalize = any(kind.endswith("Normalize") for kind in module_types)
    bert_config = _read_json(folder / "sentence_bert_config.json")
    model_config = _read_json(folder / "config.json")
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    max_len = bert_config.get("max_seq_length") or tokenizer_config.get("model_max_length")
    if not isinstance(max_len, int) or max_len > 100_000:
        max_len = model_config.get("max_position_embeddings", 512)
    pooling_mode = pooling.get("pooling_mode")
    if pooling_mode is None:
        pooling_mode = next((key[len("pooling_mode_") :] for key, on in pooling.items() if on is True), "cls")
    return {
        "similarity": similarity,
        "similarity_label": _SIMILARITY_LABELS.get(similarity, similarity),
        "normalize": normalize,
        "pooling_mode": pooling_mode.replace("_token", ""),
        "dimension": pooling.get("embedding_dimension") or pooling.get("word_embedding_dimension"),
        "max_seq_length": max_len,
        "modules": " → ".join(kind.rsplit(".", 1)[-1] for kind in module_types),
        "prompts": {name: text for name, text in (config.get("prompts") or {}).items() if text},
    }


def _dataset_id(result: Mapping[str, Any]) -> str:
    """The dataset's Hub id, or its name (then the task's) when the summary recorded a local path."""
    dataset = result.get("dataset") or {}
    path_or_id = dataset.get("path_or_hub_id")
    if _looks_like_hub_id(path_or_id):
        return str(path_or_id)
    return str(dataset.get("name") or result["task"])


def _score(value: Any) -> str:
    return f"{float(value):.4f}" if _is_number(value) else "n/a"


def _split_label(dataset: Mapping[str, Any]) -> str:
    """The split, with how a local classification task was scored (train -> test, or k-fold cross-validation)."""
    split = str(dataset.get("split") or "")
    protocol = dataset.get("protocol")
    return f"{split} ({protocol})" if protocol else split


def _evaluation_tables(summary: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, str]]:
    rows, metric_rows = [], []
    for result in summary.get("results", []):
        dataset = result.get("dataset") or {}
        rows.append(
            {
                "task": _cell(result["task"]),
                "type": _cell(result.get("task_type") or ""),
                "dataset": _cell(_dataset_id(result)),
                "split": _cell(_split_label(dataset)),
                "metric": _cell(result["main_metric"]),
                "score": _score(result["main_score"]),
            }
        )
        for name, value in (result.get("metrics") or {}).items():
            metric_rows.append({"task": _cell(result["task"]), "metric": _cell(name), "value": _score(value)})
    settings = summary.get("settings") or {}
    info = {
        "mteb_version": _cell(summary.get("mteb_version") or "unknown"),
        "created": _cell(summary.get("created") or "unknown"),
        "model": _cell(summary.get("model") or ""),
        "settings": ", ".join(f"`{_cell(key)}={_cell(value)}`" for key, value in _flatten(settings)),
    }
    return rows, metric_rows, info


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("retromae-hf")
    except PackageNotFoundError:
        from . import __version__

        return __version__


__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "TEMPLATES",
    "CardContext",
    "HubPushError",
    "detect_kind",
    "load_recipe",
    "load_summary",
    "pull_from_hub",
    "push_to_hub",
    "redact_recipe",
    "render_model_card",
    "summary_to_eval_results",
    "template_path",
]
