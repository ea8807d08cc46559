"""Training recipes: the `Recipe` dataclass, reading YAML files, command-line overrides, type checks.

A recipe (YAML, see `retromae_hf/recipes/`) holds everything one training stage needs; `retromae-hf train`
overrides single keys with flags (`--max-length 128`) or `--set` for nested keys (`--set
training.learning_rate=5e-5`). Keys under `training` are `transformers.TrainingArguments` fields.

Every value is converted to its field's type here, in one place, before anything is built: YAML reads `5e-5`
(no dot) as a string, and `--set` values arrive as text, so `"5e-5"` becomes the float a `learning_rate` needs,
and a value that cannot be converted is refused naming the key. `TrainingArguments` itself is imported only when
a recipe is built, so the command line's `--help` stays fast.
"""

import copy
import dataclasses
import enum
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

RECIPES_DIR = Path(__file__).parent / "recipes"
FINAL_DIR = "final"  # a run's finished model, <output_dir>/final (a later stage's `model: previous`)
PYTHON_DOCSTRINGS = "python-docstrings"  # offline text that ships with Python (see quickstart.py)

#: TrainingArguments values retromae-hf sets when a recipe does not; every other field keeps transformers' default.
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "remove_unused_columns": False,  # the collators read raw columns (text, input_ids, word_ids, ...)
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 3,
    "dataloader_drop_last": True,  # equal per-device batches for the cross-device negatives
}
TRAINING_ARGUMENTS_DOCS = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"

#: Keys that may differ between a checkpoint's recipe and the recipe resuming from it: where things are written,
#: how often, and how data is fed, none of which changes what is computed.
RESUME_INDEPENDENT_KEYS = frozenset(
    {
        "output_dir",
        "evaluation",
        "allow_small_vocabulary",
        "torch_threads",
        "training.output_dir",
        "training.logging_dir",
        "training.logging_steps",
        "training.logging_strategy",
        "training.logging_first_step",
        "training.save_steps",
        "training.save_strategy",
        "training.save_total_limit",
        "training.report_to",
        "training.run_name",
        "training.disable_tqdm",
        "training.dataloader_num_workers",
        "training.dataloader_pin_memory",
        "training.dataloader_persistent_workers",
        "training.dataloader_prefetch_factor",
    }
)


class RecipeError(UserError, ValueError):
    """A recipe that cannot run: unknown key, wrong type, missing file or column. Names what is wrong."""


def _help(text: str, choices: tuple[Any, ...] | None = None, flag: bool = True, **kwargs) -> Any:
    metadata = {"help": text, "flag": flag}
    if choices:
        metadata["choices"] = choices
    return field(metadata=metadata, **kwargs)


@dataclass
class Recipe:
    """Everything one training stage needs. Every field can be set in the YAML file or overridden on the command
    line (`--max-length 128`, or `--set training.learning_rate=5e-5` for nested keys)."""

    stage: int = _help(
        "1 = RetroMAE on a generic corpus; 2 = RetroMAE + contrastive on pairs", choices=(1, 2), flag=False, default=1
    )
    model: str = _help(
        "initial weights: a RetroMAE checkpoint, a masked-LM checkpoint of any supported architecture (BERT, "
        "RoBERTa, XLM-R, ModernBERT, ...; Hub name or folder; the decoder is freshly initialised), or 'scratch'",
        default="bert-base-uncased",
    )
    tokenizer: str | None = _help(
        "tokenizer name or folder (default: the model's); with model 'scratch', 'train' trains a WordPiece "
        "tokenizer on the corpus",
        default=None,
    )
    tokenizer_train_samples: int = _help(
        "with tokenizer 'train': train it on at most this many corpus texts, read as a stream (0: all of them)",
        default=1_000_000,
    )
    model_config: dict[str, Any] = _help(
        "RetroMAEConfig fields: overrides such as query_stream or decoder_positions; for 'scratch' also the "
        "encoder's shape, as `encoder: {model_type: modernbert, hidden_size: ...}` (or BERT fields at the top level)",
        flag=False,
        default_factory=dict,
    )
    corpus: list[Any] = _help(
        "stage-1 texts: files (txt/jsonl/csv/tsv/parquet), folders, Hub dataset names, or mappings "
        "{path, config, split, text_column}; 'python-docstrings' for Python's own docstrings",
        default_factory=list,
    )
    allow_small_vocabulary: bool = _help(
        "accept a tokenizer with fewer than 100 tokens or a tenth of the model's vocabulary (normally the sign of "
        "a wrong tokenizer)",
        default=False,
    )
    text_column: str = _help("column holding the text in tabular corpora", default="text")
    packing: bool = _help("pack consecutive lines into blocks of max_length (official preprocessing)", default=True)
    streaming: bool = _help("stream corpora and pairs instead of loading them into memory", default=False)
    max_length: int = _help("longest RetroMAE sequence in tokens, special tokens included", default=512)
    encoder_mask_ratio: float = _help("share of tokens the encoder predicts", default=0.3)
    decoder_mask_ratio: float = _help("share of context each decoder row hides", default=0.5)
    pairs: list[Any] = _help(
        "stage-2 (query, positive, negatives) data: files, BEIR folders (qrels/train.tsv), Hub names, mappings "
        "{path, config, split}, or 'python-docstrings'",
        default_factory=list,
    )
    query_column: str = _help("query column of the pair data", default="query")
    positive_column: str = _help("positive-passage column of the pair data", default="positive")
    negative_columns: list[str] = _help(
        "hard-negative column(s); one list-valued column or several", default_factory=list
    )
    num_negatives: int = _help("hard negatives per query in a batch (0: in-batch negatives only)", default=1)
    negative_kind: str = _help(
        "which negatives of DPR / Tevatron pair files to train on: DPR's hard_negative_ctxs and Tevatron's "
        "negative_passages (hard), DPR's negative_ctxs (random), or both",
        choices=("hard", "random", "both"),
        default="hard",
    )
    max_negatives: int = _help(
        "DPR / Tevatron pair files: keep at most this many negatives of each kind per row, the first in file order "
        "(0: all)",
        default=0,
    )
    query_max_length: int = _help("query truncation length", default=64)
    passage_max_length: int = _help("passage truncation length for the contrastive loss", default=256)
    retromae_weight: float = _help("weight of the RetroMAE loss (0 disables it)", default=1.0)
    contrastive_weight: float = _help("weight of the InfoNCE loss in stage 2 (0 disables it)", default=1.0)
    bag_of_words_weight: float = _help("weight of the DupMAE bag-of-words loss (0 = off)", default=0.0)
    temperature: float = _help("InfoNCE temperature (dot: ~1.0, cosine: ~0.05)", default=1.0)
    similarity: str = _help("InfoNCE similarity", choices=("dot", "cosine"), default="dot")
    gather_across_devices: bool = _help("use the other devices' passages as negatives", default=True)
    output_dir: str = _help("run folder: checkpoints, training_log.jsonl, and final/", default="runs/retromae")
    torch_threads: int | None = _help(
        "threads torch uses for the model and for collating batches in the main process (default: torch's, one "
        "per core); 1 is much faster for tiny models and on a machine shared with other jobs",
        default=None,
    )
    training: dict[str, Any] = _help("transformers.TrainingArguments fields", flag=False, default_factory=dict)
    evaluation: list[str] = _help(
        "tasks for `retromae-hf evaluate` after training (local paths or MTEB names)", default_factory=list
    )

    def validate(self) -> None:
        """Check values against each other and their ranges (types were checked by `build_recipe`)."""
        for name, spec in RECIPE_FIELDS.items():
            choices = spec.metadata.get("choices")
            if choices and getattr(self, name) not in choices:
                raise RecipeError(
                    f"{_key(name)} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}"
                )
        for name in ("encoder_mask_ratio", "decoder_mask_ratio"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise RecipeError(f"{_key(name)} must be between 0 and 1 (both excluded), got {value}")
        for name in ("max_length", "query_max_length", "passage_max_length"):
            value = getattr(self, name)
            if value < 3:
                raise RecipeError(f"{_key(name)} must be at least 3 ([CLS], a token, [SEP]), got {value}")
        if self.tokenizer_train_samples < 0:
            raise RecipeError(f"{_key('tokenizer_train_samples')} must be >= 0 (0: all texts)")
        if self.num_negatives < 0:
            raise RecipeError(f"{_key('num_negatives')} must be >= 0, got {self.num_negatives}")
        if self.max_negatives < 0:
            raise RecipeError(f"{_key('max_negatives')} must be >= 0 (0: all), got {self.max_negatives}")
        if min(self.retromae_weight, self.contrastive_weight, self.bag_of_words_weight) < 0:
            raise RecipeError("loss weights (retromae_weight, contrastive_weight, bag_of_words_weight) must be >= 0")
        for name in ("corpus", "pairs"):
            for item in getattr(self, name):
                usable = (isinstance(item, str) and item.strip()) or (isinstance(item, dict) and item.get("path"))
                if not usable:
                    raise RecipeError(
                        f"{_key(name)}: each source is a file, folder or Hub name, or a mapping with `path`; got "
                        f"{item!r}"
                    )
        if self.stage == 1 and not self.corpus:
            raise RecipeError("stage 1 needs `corpus` (--corpus: files, folders or Hub dataset names)")
        if self.stage == 2 and not self.pairs:
            raise RecipeError("stage 2 needs `pairs` (--pairs: query/positive[/negatives] data)")
        if self.stage == 1 and self.retromae_weight == 0:
            raise RecipeError("stage 1 trains the RetroMAE loss: retromae_weight must be > 0")
        if self.stage == 2 and self.retromae_weight == 0 and self.contrastive_weight == 0:
            raise RecipeError("stage 2 needs retromae_weight > 0 or contrastive_weight > 0")
        if self.model == "scratch" and self.tokenizer is None:
            raise RecipeError("model 'scratch' needs a tokenizer (--tokenizer: a name or folder, or 'train')")
        if self.tokenizer == "train" and self.model != "scratch":
            raise RecipeError(
                f"tokenizer 'train' makes a new vocabulary, which only a model trained from scratch can use; "
                f"model is {self.model!r}. Drop --tokenizer to use the model's own tokenizer."
            )
        for name in ("encoder_mask_ratio", "decoder_mask_ratio", "retromae_weight", "contrastive_weight",
                     "bag_of_words_weight", "temperature"):  # fmt: skip
            if not math.isfinite(getattr(self, name)):
                raise RecipeError(f"{_key(name)} must be a finite number, got {getattr(self, name)}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise RecipeError(
                f"{_key('torch_threads')} must be >= 1 (or unset for torch's default), got {self.torch_threads}"
            )
        if self.temperature <= 0:
            raise RecipeError(f"{_key('temperature')} must be > 0, got {self.temperature}")
        check_training_values(self.training)
        if not isinstance(self.model_config, dict):
            raise RecipeError(f"model_config must be a mapping of RetroMAEConfig fields, got {self.model_config!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that decide what a run computes: compared when resuming (see `recipe_differences`)."""
        flat = dict(_flatten(self.to_dict()))
        return {key: value for key, value in flat.items() if key not in RESUME_INDEPENDENT_KEYS}

    def fingerprint_hash(self) -> str:
        text = json.dumps(self.fingerprint(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


RECIPE_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
_HINTS = typing.get_type_hints(Recipe)


def _key(name: str) -> str:
    """A recipe key with its flag, for messages: `max_length (--max-length)`."""
    spec = RECIPE_FIELDS.get(name)
    if spec is not None and spec.metadata.get("flag", True) and name not in ("model_config", "training"):
        return f"{name} (--{name.replace('_', '-')})"
    return name


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict) and key in ("training", "model_config"):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _field_default(key: str) -> Any:
    """The dataclass default of a top-level recipe key, or a sentinel where it has none (nested keys included)."""
    spec = RECIPE_FIELDS.get(key)
    if spec is None:
        return _NO_DEFAULT
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return _NO_DEFAULT


_NO_DEFAULT = object()


def recipe_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs between two fingerprints.

    A key that `before` lacks and `after` holds at its default is no difference: the run was recorded by a version
    of the package that did not have that setting yet, and a new setting's default keeps what older versions did.
    """
    keys = sorted(set(before) | set(after))
    missing = object()
    lines = []
    for key in keys:
        old, new = before.get(key, missing), after.get(key, missing)
        if old is missing and new is not missing and new == _field_default(key):
            continue
        if json.dumps(old, default=str, sort_keys=True) != json.dumps(new, default=str, sort_keys=True):
            show = lambda value: "(not set)" if value is missing else repr(value)  # noqa: E731
            lines.append(f"{key}: {show(old)} -> {show(new)}")
    return lines


def available_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def read_recipe_file(name_or_path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The raw YAML mapping of a shipped recipe (by name) or of a file."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = RECIPES_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise RecipeError(
                f"no recipe file {name_or_path!r} (--recipe): give the path of a YAML file or one of the shipped "
                f"recipes: {', '.join(available_recipes())}"
            )
        path = shipped
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
        if isinstance(raw, dict):
            raw = _keep_written_text(raw, yaml.load(text, Loader=yaml.BaseLoader) or {})
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot be read as a text file ({error})") from error
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    return raw, path


def _wants_text(annotation: Any) -> bool:
    """Whether a recipe field holds text: `str`, `str | None`, `list[str]`."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        return any(_wants_text(arg) for arg in typing.get_args(annotation))
    return False


#: Recipe keys whose values are text (names, paths, columns), and the data-source lists whose items are.
_TEXT_KEYS = frozenset(name for name, hint in _HINTS.items() if _wants_text(hint))
_SOURCE_KEYS = frozenset({"corpus", "pairs"})


def _is_retyped(value: Any) -> bool:
    """A scalar that YAML turned from text into something else (`no` -> False, `2023` -> 2023, a date)."""
    import datetime

    return isinstance(value, bool | int | float | datetime.date)


def _as_written(value: Any, written: Any) -> Any:
    """`value` with each scalar YAML retyped replaced by its text as written (`written`, read without types)."""
    if _is_retyped(value) and isinstance(written, str):
        return written
    if isinstance(value, list) and isinstance(written, list) and len(value) == len(written):
        return [_as_written(item, text) for item, text in zip(value, written, strict=True)]
    if isinstance(value, dict) and isinstance(written, dict):
        return {key: _as_written(item, written.get(str(key))) for key, item in value.items()}
    return value


class WrittenScalar(str):
    """A YAML scalar that YAML 1.1 retyped (`no` -> False, `~` -> None, `2023-01-01` -> a date), kept with its text.

    `coerce` decides by the field's declared type: a field that takes text (a `str` or an enum of strings, such as
    `TrainingArguments.save_strategy`) gets the text as written (`no`), any other field YAML's value (`False`).
    """

    value: Any

    def __new__(cls, text: str, value: Any) -> "WrittenScalar":
        scalar = super().__new__(cls, text)
        scalar.value = value
        return scalar

    def __reduce__(self) -> tuple[Any, ...]:  # copy.deepcopy and pickle: text and value together
        return (WrittenScalar, (str(self), self.value))


def _with_written_scalar(value: Any, written: Any) -> Any:
    """`value` wrapped as a `WrittenScalar` holding its text (`written`) where YAML 1.1 read a word as a boolean, a
    null or a date (`no`, `~`, `2023-01-01`); numbers stay numbers (a text field converts them itself)."""
    import datetime

    if isinstance(value, bool | datetime.date | None) and isinstance(written, str):
        return WrittenScalar(written, value)
    return value


def _training_as_written(training: Any, written: Any) -> Any:
    """The `training` mapping with each retyped value a `WrittenScalar` (one level: nested mappings such as
    `accelerator_config` are the field's own to read)."""
    if not isinstance(training, dict) or not isinstance(written, dict):
        return training
    return {key: _with_written_scalar(item, written.get(str(key))) for key, item in training.items()}


def _keep_written_text(raw: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """Text fields as the user wrote them: YAML 1.1 reads `tokenizer: no` as False, `text_column: 123` as a number
    and `config: 2023-01` as a date, but these keys want the text itself (and so do the options of data sources).
    Under `training`, each retyped value keeps its text too (`WrittenScalar`): `save_strategy: no` is the string
    transformers spells, which its field's type (a str enum) asks for. Other keys keep YAML's types, which
    `build_recipe` converts and checks."""
    if not isinstance(written, dict):
        return raw
    kept = dict(raw)
    for key, value in raw.items():
        if key in _TEXT_KEYS or key in _SOURCE_KEYS:
            kept[key] = _as_written(value, written.get(key))
        elif key == "training":
            kept[key] = _training_as_written(value, written.get(key))
        elif key == "stages" and isinstance(value, list) and isinstance(written.get(key), list):
            texts = written[key]
            kept[key] = [
                _keep_written_text(stage, text) if isinstance(stage, dict) and i < len(texts) else stage
                for i, (stage, text) in enumerate(zip(value, texts + [None] * (len(value) - len(texts)), strict=True))
            ]
    return kept


def recipe_stages(raw: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """A recipe file holds one stage, or `stages:` (a list run in order, each inheriting the shared keys)."""
    if "stages" not in raw:
        return [raw]
    shared = {key: value for key, value in raw.items() if key != "stages"}
    stages = raw["stages"]
    if not isinstance(stages, list) or not stages or not all(isinstance(stage, dict) for stage in stages):
        raise RecipeError(f"{source}: `stages` must be a non-empty list of mappings")
    return [_deep_merge(copy.deepcopy(shared), stage) for stage in stages]


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.learning_rate=1e-4` -> (['training', 'learning_rate'], 0.0001); values are read as YAML."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise RecipeError(f"--set expects KEY=VALUE (e.g. --set training.learning_rate=5e-5), got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {text}: the value is not valid YAML ({error})") from error
    keys = key.strip().split(".")
    written = yaml.load(value, Loader=yaml.BaseLoader)
    if len(keys) == 1 and (keys[0] in _TEXT_KEYS or keys[0] in _SOURCE_KEYS):
        parsed = _as_written(parsed, written)  # --set tokenizer=no: the text
    elif keys == ["training"]:
        parsed = _training_as_written(parsed, written)
    elif len(keys) == 1 or (len(keys) == 2 and keys[0] == "training"):
        # --set training.save_strategy=no: the field's type decides between the text and YAML's value
        parsed = _with_written_scalar(parsed, written)
    return keys, parsed


# --------------------------------------------------------------------------------------------------- type conversion
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class _Unconvertible(Exception):
    pass


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    if origin is not None:
        return getattr(origin, "__name__", str(annotation))
    return getattr(annotation, "__name__", str(annotation))


def coerce(value: Any, annotation: Any) -> Any:
    """`value` converted to `annotation` (int, float, bool, str, enums, unions, lists, dicts, Optional), or raise.

    Text that spells a number or a boolean becomes one where the type asks for it (`"5e-5"` -> 5e-05, `"true"` ->
    True); an int becomes a float where a float is wanted; anything else must already have the right type.
    """
    if isinstance(value, WrittenScalar):
        value = str(value) if _takes_text(annotation) and not _takes_as_is(value.value, annotation) else value.value
    if annotation is Any or annotation is object:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _Unconvertible
        members = [arg for arg in args if arg is not type(None)]
        for member in members:  # already right: keep as is (a str stays a str in `float | str`)
            if _is_instance(value, member):
                return value
        for member in members:
            try:
                return coerce(value, member)
            except _Unconvertible:
                continue
        raise _Unconvertible
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Unconvertible
    if origin in (list, tuple, set, typing.Sequence) or annotation in (list, tuple):
        if value is None:  # `--set corpus=~`: YAML's null is no list (and no path)
            raise _Unconvertible
        item_type = args[0] if args else Any
        items = value if isinstance(value, list | tuple) else [value]
        return [coerce(item, item_type) for item in items]
    if origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
        raise _Unconvertible
    if value is None:
        raise _Unconvertible
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value).value if not isinstance(value, annotation) else value
        except ValueError:
            raise _Unconvertible from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Unconvertible
    if annotation is int:
        if isinstance(value, bool):
            raise _Unconvertible
        if isinstance(value, int):
            return value
        number = _number(value)
        if number is not None and float(number).is_integer():
            return int(number)
        raise _Unconvertible
    if annotation is float:
        if isinstance(value, bool):
            raise _Unconvertible
        if isinstance(value, int | float):
            return float(value)
        number = _number(value)
        if number is not None:
            return float(number)
        raise _Unconvertible
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. a model or column name YAML read as a number
        raise _Unconvertible
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Unconvertible
    return value


def _takes_text(annotation: Any) -> bool:
    """Whether a field of this declared type holds text: `str`, an enum of strings, a Literal of strings, or a
    union with one of them."""
    if annotation is str:
        return True
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return all(isinstance(member.value, str) for member in annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_takes_text(arg) for arg in typing.get_args(annotation))
    return False


def _takes_as_is(value: Any, annotation: Any) -> bool:
    """Whether a field of this declared type takes YAML's value itself (`None` where it is optional, `False` where
    a bool is one of its types)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_as_is(value, arg) for arg in typing.get_args(annotation))
    if value is None:
        return annotation is type(None)
    return annotation is not str and _is_instance(value, annotation)


def _number(value: Any) -> float | None:
    if isinstance(value, float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _is_instance(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if typing.get_origin(annotation) is not None or not isinstance(annotation, type):
        origin = typing.get_origin(annotation)
        return isinstance(origin, type) and isinstance(value, origin)
    if isinstance(value, bool) and annotation in (int, float):
        return False
    if annotation is float and isinstance(value, int):
        return False
    return isinstance(value, annotation)


def _convert(value: Any, annotation: Any, key: str, where: str) -> Any:
    try:
        return coerce(value, annotation)
    except _Unconvertible:
        raise RecipeError(f"{where}: {key} must be {_type_name(annotation)}, got {value!r}") from None


@typing.no_type_check
def _training_argument_types() -> dict[str, Any]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}


def check_training_keys(training: dict[str, Any], where: str | typing.Callable[[str], str]) -> dict[str, Any]:
    """The `training` mapping with every value converted to its `TrainingArguments` field's type.

    Raises:
        RecipeError: an unknown key (with the closest known one), or a value of the wrong type.
    """
    source = where if callable(where) else (lambda key: where)
    if not isinstance(training, dict):
        raise RecipeError(
            f"{source('training')}: training must be a mapping of TrainingArguments fields, got {training!r}"
        )
    types_by_name = _training_argument_types()
    unknown = [key for key in training if key not in types_by_name]
    if unknown:
        raise RecipeError(
            f"{source('training.' + unknown[0])}: unknown TrainingArguments field(s): "
            + ", ".join(_with_suggestion(f"training.{key}") for key in unknown)
            + f". The fields are listed at {TRAINING_ARGUMENTS_DOCS}"
        )
    return {
        key: _convert(value, types_by_name[key], f"training.{key}", source(f"training.{key}"))
        for key, value in training.items()
    }


#: Ranges of the TrainingArguments values transformers accepts silently or refuses only once the model is loaded:
#: (key, lowest allowed, whether the lowest is allowed, what it means). Checked before anything is read.
_TRAINING_RANGES: tuple[tuple[str, float, bool, str], ...] = (
    ("per_device_train_batch_size", 1, True, "examples per device and step"),
    ("per_device_eval_batch_size", 1, True, "examples per device and evaluation step"),
    ("gradient_accumulation_steps", 1, True, "batches per optimizer step"),
    ("num_train_epochs", 0, False, "passes over the data"),
    ("learning_rate", 0, True, "the optimizer's step size"),
    ("weight_decay", 0, True, "the optimizer's weight decay"),
    ("max_grad_norm", 0, True, "gradient clipping norm (0: none)"),
    ("adam_epsilon", 0, False, "Adam's epsilon"),
    ("warmup_steps", 0, True, "warm-up steps (or a share of the steps when below 1)"),
    ("warmup_ratio", 0, True, "share of the steps used to warm up"),
    ("logging_steps", 0, False, "steps between log records"),
    ("save_steps", 0, False, "steps between checkpoints"),
    ("eval_steps", 0, False, "steps between evaluations"),
    ("save_total_limit", 1, True, "checkpoints kept"),
    ("seed", 0, True, "the random seed"),
    ("dataloader_num_workers", 0, True, "DataLoader worker processes"),
)


def _training_key(key: str) -> str:
    flag = ", --max-steps" if key == "max_steps" else ""
    return f"training.{key} (--set training.{key}=VALUE{flag})"


def _numeric(value: Any) -> int | float | None:
    """`value` when it is a number (not a boolean), else None: values of another type are `TrainingArguments`'
    to refuse."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def check_training_values(training: dict[str, Any]) -> None:
    """Refuse `TrainingArguments` values that would fail late or silently do something else.

    `max_steps` must be a positive number of steps or -1 (transformers' "train `num_train_epochs` epochs"): any
    other negative value used to train full epochs without a word. Sizes must be positive, rates finite and not
    negative (a NaN learning rate trains nothing).

    Raises:
        RecipeError: naming the key, the value, the allowed range and how to set it.
    """
    if not isinstance(training, dict):
        return
    steps = _numeric(training.get("max_steps"))
    if steps is not None and steps != -1 and steps < 1:
        raise RecipeError(
            f"{_training_key('max_steps')} must be a positive number of optimizer steps, or -1 to train "
            f"num_train_epochs epochs; got {steps}"
        )
    for key, lowest, inclusive, meaning in _TRAINING_RANGES:
        value = _numeric(training.get(key))
        if value is None:
            continue
        if not math.isfinite(value):
            raise RecipeError(f"{_training_key(key)} ({meaning}) must be a finite number, got {value}")
        if value < lowest or (value == lowest and not inclusive):
            bound = f">= {lowest}" if inclusive else f"> {lowest}"
            raise RecipeError(f"{_training_key(key)} ({meaning}) must be {bound}, got {value}")
    ratio = _numeric(training.get("warmup_ratio"))
    if ratio is not None and ratio > 1:
        raise RecipeError(f"{_training_key('warmup_ratio')} must be between 0 and 1, got {ratio}")
    for key in ("adam_beta1", "adam_beta2"):
        value = _numeric(training.get(key))
        if value is not None and not 0 <= value < 1:
            raise RecipeError(f"{_training_key(key)} must be in [0, 1), got {value}")


def build_recipe(raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "recipe") -> Recipe:
    """Merge command-line overrides (dotted keys) into a raw recipe mapping and check every key and type.

    Values are converted to their field's type (see `coerce`); `training.*` keys are checked against
    `TrainingArguments`. Nothing is loaded or built here, so a bad value fails before any work starts.

    Raises:
        RecipeError: naming the key, its source (the recipe file or the command line) and the expected type.
    """
    merged = copy.deepcopy(raw)
    overridden: set[str] = set()
    for dotted, value in (overrides or {}).items():
        keys = dotted.split(".")
        node = merged
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise RecipeError(f"cannot set {dotted}: {key} is not a mapping")
        node[keys[-1]] = value
        overridden.add(dotted)

    def where(key: str) -> str:
        return "command line" if key in overridden or key.split(".")[0] in overridden else source

    unknown = sorted(set(merged) - set(RECIPE_FIELDS))
    if unknown:
        origin = "command line" if all(key in overridden for key in unknown) else source
        raise RecipeError(f"{origin}: unknown recipe key(s): {', '.join(_with_suggestion(key) for key in unknown)}")
    for key, value in list(merged.items()):
        if key == "training":
            merged[key] = check_training_keys(value, where)
        else:
            merged[key] = _convert(value, _HINTS[key], key, where(key))
    recipe = Recipe(**merged)
    # Which keys the user set (recipe file or command line), unlike defaults: a length the user asked for is
    # checked against the model, a default one adapted to it (`training.effective_lengths`).
    recipe.explicit_keys = frozenset(merged)
    try:
        recipe.validate()
    except RecipeError as error:
        raise RecipeError(f"{_blamed(str(error), overridden, source)}: {error}") from None
    return recipe


def _blamed(message: str, overridden: set[str], source: str) -> str:
    """Where a value a check refused came from: the command line when the message names a key set there (a flag or
    --set), else the recipe file."""
    import re

    for key in overridden:
        if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message):
            return "command line"
    return source


def plan_stages(
    name_or_path: str | os.PathLike | None,
    overrides: dict[str, Any] | None = None,
    stage: int | None = None,
    resume: str | bool | None = None,
) -> list[Recipe]:
    """The checked recipe of every stage a `train` command will run, in order (or only `stage`).

    A stage whose `model` is `previous` starts from the final folder of the recipe's preceding stage; with several
    stages, `output_dir` from the command line gets one sub-folder per stage. Every value of every selected stage
    is converted and checked here, before torch, data or models are loaded, so a mistake in stage 2 does not
    surface after stage 1 has trained.

    Raises:
        RecipeError: naming the key, stage or file at fault.
    """
    overrides = dict(overrides or {})
    if name_or_path is None:
        raw, source = {"stage": stage or 1}, Path("command line")
    else:
        raw, source = read_recipe_file(name_or_path)
    stages = recipe_stages(raw, source)
    selected = [i for i, spec in enumerate(stages) if stage is None or _stage_of(spec, source) == stage]
    if not selected:
        found = sorted({_stage_of(spec, source) for spec in stages})
        raise RecipeError(f"{source} has no stage {stage} (it has stage(s) {found}); check --stage")
    if resume and len(selected) > 1:
        raise RecipeError("--resume applies to one stage: add --stage")
    multi = len(stages) > 1

    def overrides_for(spec: dict[str, Any]) -> dict[str, Any]:
        stage_overrides = dict(overrides)
        if multi and "output_dir" in stage_overrides:  # one run folder, one sub-folder per stage
            stage_overrides["output_dir"] = str(Path(overrides["output_dir"]) / f"stage{spec.get('stage', 1)}")
        return stage_overrides

    planned = []
    for i in selected:
        spec = stages[i]
        stage_overrides = overrides_for(spec)
        if spec.get("model") == "previous" and "model" not in stage_overrides:
            if i == 0:
                raise RecipeError(f"{source}: the first stage cannot start from model 'previous'")
            previous = build_recipe(stages[i - 1], overrides_for(stages[i - 1]), source=str(source))
            previous_final = Path(previous.output_dir) / FINAL_DIR
            spec = {**spec, "model": str(previous_final)}
            if i - 1 not in selected and not previous_final.is_dir():
                raise RecipeError(
                    f"stage {spec.get('stage')} starts from {previous_final}, which does not exist yet: run the "
                    "previous stage first (drop --stage)"
                )
        planned.append(build_recipe(spec, stage_overrides, source=str(source)))
    return planned


def _stage_of(spec: dict[str, Any], source: Path) -> int:
    value = spec.get("stage", 1)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{source}: stage must be 1 or 2, got {value!r}") from None


def _with_suggestion(key: str) -> str:
    import difflib

    if "." not in key:  # the recipe's own keys first: no need to import transformers (and torch) for them
        match = difflib.get_close_matches(key, list(RECIPE_FIELDS), n=1)
        if match:
            return f"{key} (did you mean {match[0]}?)"
    candidates = list(RECIPE_FIELDS) + [f"training.{name}" for name in _training_argument_types()]
    plain = {candidate.split(".")[-1]: candidate for candidate in candidates}
    match = difflib.get_close_matches(key.split(".")[-1], list(plain), n=1)
    return f"{key} (did you mean {plain[match[0]]}?)" if match else key


__all__ = [
    "PYTHON_DOCSTRINGS",
    "RECIPES_DIR",
    "RECIPE_FIELDS",
    "TRAINING_DEFAULTS",
    "Recipe",
    "RecipeError",
    "available_recipes",
    "build_recipe",
    "check_training_keys",
    "check_training_values",
    "coerce",
    "parse_override",
    "plan_stages",
    "read_recipe_file",
    "recipe_differences",
    "recipe_stages",
]
