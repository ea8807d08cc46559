"""Two-stage RetroMAE training on the transformers `Trainer`: recipes, data, objectives, checkpoints, resume.

- **Stage 1**: the RetroMAE loss of `RetroMAEForPreTraining` on a generic corpus.
- **Stage 2**: `retromae_weight * RetroMAE loss on the positive passages + contrastive_weight * InfoNCE(query,
  positive, hard negatives, in-batch negatives gathered across devices) [+ bag_of_words_weight * DupMAE term]`.

A recipe (YAML, see `retromae_hf/recipes/`) holds everything; `retromae-hf train` overrides single keys. Training
runs unchanged on one CPU, under `torchrun` (DDP) or `accelerate launch` (FSDP/DeepSpeed), because everything
distributed goes through `Trainer`/`accelerate`. Checkpoints are staged in a side folder and renamed into place
only once complete, so a crash mid-save never leaves a half-written `checkpoint-N` for `--resume` to pick up.
"""

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .collator import ContrastiveCollator, RetroMAECollator
from .configuration_retromae import BERT_FIELDS, RetroMAEConfig
from .modeling_retromae import RetroMAEForPreTraining
from .objectives import DupMAEBagOfWordsLoss, InfoNCELoss, ObjectiveWeights, stage_loss

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).parent / "recipes"
STAGING_DIR = ".staging"
FINAL_DIR = "final"
PYTHON_DOCSTRINGS = "python-docstrings"  # offline text that ships with Python (see quickstart.py)


class RecipeError(ValueError):
    """A recipe that cannot run: unknown key, wrong type, missing file or column. Names what is wrong."""


def _help(text: str, **kwargs) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class Recipe:
    """Everything one training stage needs. Every field can be set in the YAML file or overridden on the command
    line (`--max-length 128`, or `--set training.learning_rate=5e-5` for nested keys)."""

    stage: int = _help("1 = RetroMAE on a generic corpus; 2 = RetroMAE + contrastive on pairs", default=1)
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
    model_config: dict[str, Any] = _help(
        "RetroMAEConfig fields: overrides such as query_stream or decoder_positions; for 'scratch' also the "
        "encoder's shape, as `encoder: {model_type: modernbert, hidden_size: ...}` (or BERT fields at the top level)",
        default_factory=dict,
    )
    corpus: list[Any] = _help(
        "stage-1 texts: files (txt/jsonl/csv/tsv/parquet), folders, Hub dataset names, or mappings "
        "{path, config, split, text_column}; 'python-docstrings' for Python's own docstrings",
        default_factory=list,
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
    query_max_length: int = _help("query truncation length", default=64)
    passage_max_length: int = _help("passage truncation length for the contrastive loss", default=256)
    retromae_weight: float = _help("weight of the RetroMAE loss (0 disables it)", default=1.0)
    contrastive_weight: float = _help("weight of the InfoNCE loss in stage 2 (0 disables it)", default=1.0)
    bag_of_words_weight: float = _help("weight of the DupMAE bag-of-words loss (0 = off)", default=0.0)
    temperature: float = _help("InfoNCE temperature (dot: ~1.0, cosine: ~0.05)", default=1.0)
    similarity: str = _help("InfoNCE similarity: 'dot' or 'cosine'", default="dot")
    gather_across_devices: bool = _help("use the other devices' passages as negatives", default=True)
    output_dir: str = _help("run folder: checkpoints, training_log.jsonl, and final/", default="runs/retromae")
    training: dict[str, Any] = _help("transformers.TrainingArguments fields", default_factory=dict)
    evaluation: list[str] = _help(
        "tasks for `retromae-hf evaluate` after training (local paths or MTEB names)", default_factory=list
    )

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise RecipeError(f"stage must be 1 or 2, got {self.stage!r}")
        if self.similarity not in ("dot", "cosine"):
            raise RecipeError(f"similarity must be 'dot' or 'cosine', got {self.similarity!r}")
        if min(self.retromae_weight, self.contrastive_weight, self.bag_of_words_weight) < 0:
            raise RecipeError("loss weights must be >= 0")
        if self.stage == 1 and not self.corpus:
            raise RecipeError("stage 1 needs `corpus` (files, folders or Hub dataset names)")
        if self.stage == 2 and not self.pairs:
            raise RecipeError("stage 2 needs `pairs` (query/positive[/negatives] data)")
        if self.stage == 1 and self.retromae_weight == 0:
            raise RecipeError("stage 1 trains the RetroMAE loss: retromae_weight must be > 0")
        if self.stage == 2 and self.retromae_weight == 0 and self.contrastive_weight == 0:
            raise RecipeError("stage 2 needs retromae_weight > 0 or contrastive_weight > 0")
        if self.model == "scratch" and self.tokenizer is None:
            raise RecipeError("model 'scratch' needs a tokenizer (a name or folder, or 'train')")
        if self.temperature <= 0:
            raise RecipeError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPE_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def available_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def read_recipe_file(name_or_path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The raw YAML mapping of a shipped recipe (by name) or of a file."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = RECIPES_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise RecipeError(f"no recipe file {name_or_path!r}; shipped recipes: {', '.join(available_recipes())}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    return raw, path


def recipe_stages(raw: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """A recipe file holds one stage, or `stages:` (a list run in order, each inheriting the shared keys)."""
    if "stages" not in raw:
        return [raw]
    shared = {key: value for key, value in raw.items() if key != "stages"}
    stages = raw["stages"]
    if not isinstance(stages, list) or not stages:
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
    if "=" not in text:
        raise RecipeError(f"--set expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def build_recipe(raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "recipe") -> Recipe:
    """Merge command-line overrides (dotted keys) into a raw recipe mapping and check every key and type."""
    merged = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        keys = dotted.split(".")
        node = merged
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise RecipeError(f"cannot set {dotted}: {key} is not a mapping")
        node[keys[-1]] = value
    unknown = sorted(set(merged) - set(RECIPE_FIELDS))
    if unknown:
        raise RecipeError(f"{source}: unknown recipe key(s): {', '.join(_with_suggestion(key) for key in unknown)}")
    for key, value in merged.items():
        expected = RECIPE_FIELDS[key].type
        if value is None or not isinstance(expected, type):
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            merged[key] = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise RecipeError(f"{source}: {key} must be {expected.__name__}, got {value!r}")
    for key in ("corpus", "pairs", "negative_columns", "evaluation"):
        if isinstance(merged.get(key), str | dict):
            merged[key] = [merged[key]]
    recipe = Recipe(**merged)
    recipe.validate()
    return recipe


def _with_suggestion(key: str) -> str:
    import difflib

    candidates = list(RECIPE_FIELDS) + [f"training.{f.name}" for f in dataclasses.fields(TrainingArguments)]
    plain = {candidate.split(".")[-1]: candidate for candidate in candidates}
    match = difflib.get_close_matches(key, list(plain), n=1)
    return f"{key} (did you mean {plain[match[0]]}?)" if match else key


# --------------------------------------------------------------------------------------------------- model & data
def load_tokenizer(recipe: Recipe, texts: list[str] | None = None) -> PreTrainedTokenizerBase:
    if recipe.tokenizer == "train":
        from .quickstart import train_wordpiece_tokenizer

        if not texts:
            raise RecipeError("tokenizer 'train' needs an in-memory corpus to train on")
        vocab_size = int(recipe.model_config.get("vocab_size", 4000))
        logger.info("training a WordPiece tokenizer (vocab %d) on %d corpus lines", vocab_size, len(texts))
        return train_wordpiece_tokenizer(texts, vocab_size=vocab_size)
    name = recipe.tokenizer or recipe.model
    tokenizer = AutoTokenizer.from_pretrained(name)
    if not tokenizer.is_fast:
        raise RecipeError(f"tokenizer {name!r} is not a fast tokenizer; whole-word masking needs word_ids()")
    return tokenizer


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> RetroMAEForPreTraining:
    """Fresh, continued, or masked-LM-initialised `RetroMAEForPreTraining`, as the recipe says.

    `model_config` holds `RetroMAEConfig` fields. For 'scratch' it also gives the encoder's shape: either an
    `encoder` mapping naming its `model_type` (`bert`, `roberta`, `xlm-roberta`, `modernbert`, ...) and sizes, or
    BERT's fields at the top level (a BERT encoder, the 0.1 layout).
    """
    overrides = dict(recipe.model_config)
    if recipe.model == "scratch":
        encoder = dict(overrides.pop("encoder")) if "encoder" in overrides else None
        target = encoder if encoder is not None else overrides
        target["vocab_size"] = max(int(target.get("vocab_size", 0)), len(tokenizer))
        target.setdefault("pad_token_id", tokenizer.pad_token_id)
        if encoder is not None:
            _special_token_ids_from_tokenizer(encoder, tokenizer)
            overrides["encoder"] = encoder
        logger.info("initialising a RetroMAE model from scratch: %s", overrides)
        try:
            return RetroMAEForPreTraining(RetroMAEConfig(**overrides))
        except TypeError as error:  # an unknown or mistyped field of the encoder's or our config
            raise RecipeError(f"model_config: {error}") from error
    config = AutoConfig.from_pretrained(recipe.model)
    if config.model_type == RetroMAEConfig.model_type:
        logger.info("continuing from the RetroMAE checkpoint %s", recipe.model)
        return RetroMAEForPreTraining.from_pretrained(recipe.model, **_decoder_overrides(overrides, config))
    logger.info("initialising the encoder from %s (%s); the decoder starts fresh", recipe.model, config.model_type)
    return RetroMAEForPreTraining.from_masked_lm(recipe.model, **overrides).train()


def _decoder_overrides(overrides: dict[str, Any], config: RetroMAEConfig) -> dict[str, Any]:
    """`model_config` for a trained checkpoint: decoder fields apply; encoder-shape fields (shared by a multi-stage
    recipe with its 'scratch' stage) must be the checkpoint's own, and are then dropped."""
    encoder = config.encoder.to_dict()
    kept = {}
    for key, value in overrides.items():
        if key == "encoder" or key in BERT_FIELDS:
            given = value if key == "encoder" else {key: value}
            different = {k: v for k, v in given.items() if k != "model_type" and encoder.get(k) != v}
            if different:
                raise RecipeError(
                    f"model_config sets the encoder's {', '.join(sorted(different))} to "
                    f"{', '.join(repr(v) for _, v in sorted(different.items()))}, but the checkpoint {config.name_or_path} "
                    "has its own shape: drop these keys when continuing from a checkpoint"
                )
            continue
        kept[key] = value
    return kept


def _special_token_ids_from_tokenizer(encoder: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> None:
    """A scratch encoder's special-token ids follow its tokenizer where its config has such fields (ModernBERT
    names [CLS] and [SEP]; BERT only padding)."""
    if "model_type" not in encoder:
        raise RecipeError("model_config.encoder needs the encoder's model_type (e.g. 'modernbert')")
    defaults = AutoConfig.for_model(encoder["model_type"])
    for name, token_id in (
        ("bos_token_id", tokenizer.bos_token_id),
        ("eos_token_id", tokenizer.eos_token_id),
        ("cls_token_id", tokenizer.cls_token_id),
        ("sep_token_id", tokenizer.sep_token_id),
    ):
        if token_id is not None and hasattr(defaults, name):
            encoder.setdefault(name, token_id)


def _source_args(source: Any, default_column: str) -> tuple[Any, dict[str, Any]]:
    if isinstance(source, dict):
        if "path" not in source:
            raise RecipeError(f"a data source mapping needs `path`: {source}")
        options = {k: v for k, v in source.items() if k != "path"}
        if "config" in options:
            options["dataset_config"] = options.pop("config")
        return source["path"], options
    return source, {}


def load_corpus_texts(recipe: Recipe):
    """The stage-1 corpus as a `datasets` dataset with a `text` column."""
    from datasets import Dataset

    from .data import DataError, _concatenate, load_corpus

    parts = []
    for source in recipe.corpus:
        if source == PYTHON_DOCSTRINGS:
            from .quickstart import python_sentences

            parts.append(Dataset.from_dict({"text": python_sentences()}))
            continue
        path, options = _source_args(source, recipe.text_column)
        options.setdefault("text_column", recipe.text_column)
        try:
            parts.append(load_corpus(path, streaming=recipe.streaming, **options))
        except DataError as error:
            raise RecipeError(str(error)) from error
    if len(parts) > 1 and recipe.streaming:
        # Streams have no end in sight: concatenated, a later source (a second language) would never be reached
        # within max_steps. Interleaved, each source gives one example in turn.
        from datasets import interleave_datasets

        return interleave_datasets(parts, stopping_strategy="all_exhausted")
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def load_pair_data(recipe: Recipe):
    """The stage-2 pairs as a dataset with `query`, `positive`, `negatives` columns."""
    from datasets import Dataset

    from .data import DataError, _concatenate, load_beir_training_pairs, load_pairs

    parts = []
    for source in recipe.pairs:
        if source == PYTHON_DOCSTRINGS:
            from .quickstart import python_docstring_pairs

            parts.append(Dataset.from_list(python_docstring_pairs()))
            continue
        path, options = _source_args(source, recipe.query_column)
        try:
            if isinstance(path, str | os.PathLike) and (Path(path) / "qrels").is_dir():
                parts.append(load_beir_training_pairs(path, split=options.get("split", "train")))
            else:
                parts.append(
                    load_pairs(
                        path,
                        query_column=recipe.query_column,
                        positive_column=recipe.positive_column,
                        negative_columns=recipe.negative_columns or None,
                        streaming=recipe.streaming,
                        **options,
                    )
                )
        except DataError as error:
            raise RecipeError(str(error)) from error
    if len(parts) > 1 and not recipe.streaming:
        parts = [part.cast(parts[0].features) for part in parts]
    return parts[0] if len(parts) == 1 else _concatenate(parts)


# --------------------------------------------------------------------------------------------------- trainer
class JsonlLogCallback(TrainerCallback):
    """Appends every log record (loss, its components, learning rate, ...) to `training_log.jsonl`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step == 0 and self.path.is_file():
            self.path.unlink()  # a fresh run starts a fresh log
        # A resumed run replays the steps after its checkpoint: drop what the interrupted run logged past it.
        if state.is_world_process_zero and state.global_step > 0 and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= state.global_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


class CollatorEpochCallback(TrainerCallback):
    """Tells a seeded collator which epoch is starting, so each epoch draws fresh masks."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(math.floor(state.epoch or 0))


class RetroMAETrainer(Trainer):
    """`Trainer` with RetroMAE's stage-1/2 objectives, loss components in the logs, and atomic checkpoints."""

    def __init__(
        self,
        *args,
        weights: ObjectiveWeights,
        contrastive_loss: InfoNCELoss | None = None,
        bag_of_words_loss: DupMAEBagOfWordsLoss | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.weights = weights
        self.contrastive_loss = contrastive_loss
        self.bag_of_words_loss = bag_of_words_loss
        # Our losses are already means over the batch: let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._component_sums: dict[str, float] = defaultdict(float)
        self._component_steps = 0
        self._staging_dir: str | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        parts = stage_loss(model, inputs, self.weights, self.contrastive_loss, self.bag_of_words_loss)
        loss = parts.pop("loss")
        if model.training:
            self.record_components(parts)
        return (loss, parts) if return_outputs else loss

    def record_components(self, parts: dict[str, torch.Tensor]) -> None:
        """Accumulate one training step's loss terms; `log` reports their means beside the total loss."""
        for name, value in parts.items():
            self._component_sums[name] += value.detach().float().item()
        self._component_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._component_steps:
            for name, total in self._component_sums.items():
                logs[name] = round(total / self._component_steps, 6)
            self._component_sums.clear()
            self._component_steps = 0
        super().log(logs, start_time)

    # Atomic checkpoints: the Trainer writes into a staging folder, renamed into place once complete.
    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging_dir = os.path.join(run_dir, STAGING_DIR)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            staged, target = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(staged, target)
            _fsync_dir(run_dir)
            shutil.rmtree(os.path.join(run_dir, STAGING_DIR), ignore_errors=True)
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def training_arguments(recipe: Recipe, output_dir: str) -> TrainingArguments:
    defaults: dict[str, Any] = {
        "report_to": "none",
        "remove_unused_columns": False,  # the collators read raw columns (text, input_ids, word_ids, ...)
        "logging_steps": 10,
        "save_strategy": "steps",
        "save_steps": 500,
        "save_total_limit": 3,
        "dataloader_drop_last": True,  # equal per-device batches for the cross-device negatives
    }
    if recipe.retromae_weight == 0 or (recipe.stage == 2 and recipe.contrastive_weight == 0):
        defaults["ddp_find_unused_parameters"] = True  # the decoder or nothing but it is idle
    if recipe.streaming:
        defaults["max_steps"] = defaults.get("max_steps", 1000)
    options = {**defaults, **recipe.training, "output_dir": output_dir}
    if recipe.streaming and "max_steps" not in recipe.training:
        raise RecipeError("streaming corpora have no length: set training.max_steps")
    try:
        return TrainingArguments(**options)
    except TypeError as error:
        raise RecipeError(f"training: {error}") from error


def _check_resume_checkpoint(path: str) -> None:
    folder = Path(path)
    needed = ["trainer_state.json", "config.json"]
    missing = [name for name in needed if not (folder / name).is_file()]
    weights = list(folder.glob("model*.safetensors"))
    if missing or not weights:
        raise RecipeError(f"{folder} is not a complete checkpoint (missing {missing or ['model.safetensors']})")
    try:
        from safetensors import safe_open

        for weight in weights:
            with safe_open(str(weight), framework="pt") as handle:
                handle.keys()
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except Exception as error:
        raise RecipeError(f"{folder} is damaged and cannot be resumed from: {error}") from error


def resolve_resume(resume: str | bool | None, output_dir: str) -> str | None:
    """`True` picks the newest complete checkpoint in `output_dir`; a path is checked before it is used."""
    if not resume:
        return None
    if resume is True:
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise RecipeError(f"--resume: no checkpoint-* folder in {output_dir}")
        resume = last
    _check_resume_checkpoint(str(resume))
    return str(resume)


def train(recipe: Recipe, resume: str | bool | None = None, trainer_class: type[RetroMAETrainer] | None = None) -> Path:
    """Run one stage. Returns the final folder (`<output_dir>/final`), which export/evaluate/push read.

    `trainer_class` replaces `RetroMAETrainer` (a subclass with another `compute_loss`, e.g. the masked-LM
    baseline of `benchmarks/reproduce_small.py`), keeping data, masks, seeding, optimizer and saving identical.
    """
    recipe.validate()
    output_dir = recipe.output_dir
    staging = Path(output_dir) / STAGING_DIR
    if staging.exists():
        logger.warning("removing %s, left by a save that did not finish", staging)
        shutil.rmtree(staging)
    resume_from = resolve_resume(resume, output_dir)
    args = training_arguments(recipe, output_dir)

    texts_for_tokenizer = None
    if recipe.tokenizer == "train":
        corpus = load_corpus_texts(recipe) if recipe.corpus else None
        texts_for_tokenizer = (
            list(corpus["text"])
            if corpus is not None
            else [f"{row['query']} {row['positive']}" for row in load_pair_data(recipe)]
        )
    tokenizer = load_tokenizer(recipe, texts_for_tokenizer)
    if resume_from:
        tokenizer = AutoTokenizer.from_pretrained(resume_from) if recipe.tokenizer == "train" else tokenizer
    set_seed(args.seed)  # the model is built before the Trainer seeds: a fresh decoder must not vary run to run
    model = build_model(recipe, tokenizer)
    if args.gradient_checkpointing:
        args.gradient_checkpointing_kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": False}

    # Masks and negatives are a function of (seed, epoch, batch content): exact on resume, any workers/ranks.
    retromae_collator = RetroMAECollator(
        tokenizer,
        seed=args.seed,
        encoder_mask_ratio=recipe.encoder_mask_ratio,
        decoder_mask_ratio=recipe.decoder_mask_ratio,
        max_length=min(recipe.max_length, model.max_sequence_length() or recipe.max_length),
        decoding=model.config.decoding,
    )
    contrastive_loss = None
    if recipe.stage == 1:
        with args.main_process_first(desc="tokenizing the corpus"):
            from .data import tokenize_corpus

            dataset = tokenize_corpus(
                load_corpus_texts(recipe), tokenizer, max_length=retromae_collator.max_length, packing=recipe.packing
            )
        collator = retromae_collator
        weights = ObjectiveWeights(
            retromae=recipe.retromae_weight, contrastive=0.0, bag_of_words=recipe.bag_of_words_weight
        )
    else:
        dataset = load_pair_data(recipe)
        collator = ContrastiveCollator(
            tokenizer,
            query_max_length=recipe.query_max_length,
            passage_max_length=recipe.passage_max_length,
            num_negatives=recipe.num_negatives,
            retromae=retromae_collator if recipe.retromae_weight > 0 else None,
            seed=args.seed,
        )
        if recipe.contrastive_weight > 0:
            contrastive_loss = InfoNCELoss(
                temperature=recipe.temperature,
                similarity=recipe.similarity,
                gather_across_devices=recipe.gather_across_devices,
            )
        weights = ObjectiveWeights(
            retromae=recipe.retromae_weight,
            contrastive=recipe.contrastive_weight,
            bag_of_words=recipe.bag_of_words_weight,
        )
    _check_first_batch(dataset, collator, recipe)

    log_path = Path(output_dir) / "training_log.jsonl"
    trainer = (trainer_class or RetroMAETrainer)(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        weights=weights,
        contrastive_loss=contrastive_loss,
        bag_of_words_loss=(
            DupMAEBagOfWordsLoss(special_token_ids=tokenizer.all_special_ids)
            if recipe.bag_of_words_weight > 0
            else None
        ),
        callbacks=[JsonlLogCallback(log_path), CollatorEpochCallback(collator)],
    )
    result = trainer.train(resume_from_checkpoint=resume_from)

    final = Path(output_dir) / FINAL_DIR
    if trainer.is_world_process_zero():
        trainer.save_model(str(final))
        tokenizer.save_pretrained(final)
        (final / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
        # What the model was trained to compare with: read by sentence-transformers, evaluation and export.
        similarity = recipe.similarity if recipe.stage == 2 and recipe.contrastive_weight > 0 else "dot"
        st_config = final / "config_sentence_transformers.json"
        st_config.write_text(json.dumps({"similarity_fn_name": similarity}, indent=2), encoding="utf-8")
        summary = {
            "stage": recipe.stage,
            "global_step": trainer.state.global_step,
            "train_loss": result.training_loss if math.isfinite(result.training_loss) else None,
            "metrics": result.metrics,
        }
        (final / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if log_path.is_file():
            shutil.copyfile(log_path, final / "training_log.jsonl")
        logger.info("final model saved to %s", final)
    return final


def run_recipe(
    name_or_path: str | os.PathLike | None,
    overrides: dict[str, Any] | None = None,
    stage: int | None = None,
    resume: str | bool | None = None,
) -> list[tuple[Recipe, Path]]:
    """Run a recipe's stages in order (or only `stage`); returns each stage's recipe and final folder.

    A stage whose `model` is `previous` starts from the final folder of the recipe's preceding stage.
    """
    overrides = dict(overrides or {})
    if name_or_path is None:
        raw, source = {"stage": stage or 1}, Path("command line")
    else:
        raw, source = read_recipe_file(name_or_path)
    stages = recipe_stages(raw, source)
    selected = [i for i, spec in enumerate(stages) if stage is None or int(spec.get("stage", 1)) == stage]
    if not selected:
        found = sorted({int(spec.get("stage", 1)) for spec in stages})
        raise RecipeError(f"{source} has no stage {stage} (it has stage(s) {found})")
    if resume and len(selected) > 1:
        raise RecipeError("--resume applies to one stage: add --stage")
    multi = len(stages) > 1

    def overrides_for(spec: dict[str, Any]) -> dict[str, Any]:
        stage_overrides = dict(overrides)
        if multi and "output_dir" in stage_overrides:  # one run folder, one sub-folder per stage
            stage_overrides["output_dir"] = str(Path(overrides["output_dir"]) / f"stage{spec.get('stage', 1)}")
        return stage_overrides

    results = []
    for i in selected:
        spec = stages[i]
        stage_overrides = overrides_for(spec)
        if spec.get("model") == "previous" and "model" not in stage_overrides:
            if i == 0:
                raise RecipeError(f"{source}: the first stage cannot start from model 'previous'")
            previous = build_recipe(stages[i - 1], overrides_for(stages[i - 1]), source=str(source))
            spec = {**spec, "model": str(Path(previous.output_dir) / FINAL_DIR)}
            if not Path(spec["model"]).is_dir():
                raise RecipeError(f"stage {spec.get('stage')} starts from {spec['model']}, which does not exist yet")
        recipe = build_recipe(spec, stage_overrides, source=str(source))
        results.append((recipe, train(recipe, resume=resume)))
    return results


def evaluate_after_training(final: str | os.PathLike, tasks: list[str], output_dir: str | os.PathLike) -> Path:
    """Score a final folder on the recipe's tasks; returns the path of the evaluation summary.json."""
    from .evaluation import evaluate

    output_dir = Path(output_dir)
    resolved = []
    for task in tasks:
        if task == PYTHON_DOCSTRINGS:
            from .quickstart import write_docstring_retrieval_task

            resolved.append(write_docstring_retrieval_task(output_dir / "data" / "python-docstrings"))
        else:
            resolved.append(task)
    evaluate(str(final), resolved, output_dir=output_dir)
    return output_dir / "summary.json"


def _check_first_batch(dataset, collator, recipe: Recipe) -> None:
    """Collate a first batch before training, so bad data fails at once rather than after model set-up."""
    batch_size = int(recipe.training.get("per_device_train_batch_size", 8))
    examples = []
    for example in dataset:
        examples.append(example)
        if len(examples) == min(batch_size, 2):
            break
    if not examples:
        raise RecipeError("the training data is empty")
    try:
        collator(examples)
    except ValueError as error:
        raise RecipeError(f"the first training batch cannot be built: {error}") from error


__all__ = [
    "JsonlLogCallback",
    "Recipe",
    "RecipeError",
    "RetroMAETrainer",
    "available_recipes",
    "build_model",
    "build_recipe",
    "evaluate_after_training",
    "read_recipe_file",
    "recipe_stages",
    "resolve_resume",
    "run_recipe",
    "train",
]
