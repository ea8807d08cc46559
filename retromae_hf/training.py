"""Two-stage RetroMAE training on the transformers `Trainer`: the driver from a recipe to a trained model.

- **Stage 1**: the RetroMAE loss of `RetroMAEForPreTraining` on a generic corpus.
- **Stage 2**: `retromae_weight * RetroMAE loss on the positive passages + contrastive_weight * InfoNCE(query,
  positive, hard negatives, in-batch negatives gathered across devices) [+ bag_of_words_weight * DupMAE term]`.

A recipe (YAML, see `retromae_hf/recipes/`) holds everything; `retromae-hf train` overrides single keys. Training
runs unchanged on one CPU, under `torchrun` (DDP) or `accelerate launch` (FSDP/DeepSpeed), because everything
distributed goes through `Trainer`/`accelerate`. Checkpoints are staged in a side folder and renamed into place
only once complete, so a crash mid-save never leaves a half-written `checkpoint-N` for `--resume` to pick up.
What a run folder holds, and which checkpoint `--resume` takes, lives in `run_folder.py`.
"""

import itertools
import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .collator import ContrastiveCollator, RetroMAECollator
from .configuration_retromae import BERT_FIELDS, RetroMAEConfig
from .errors import UserError, check_weight_files, is_disk_full, remote_resource
from .locks import RunLock, is_main_process
from .modeling_retromae import RetroMAEForPreTraining
from .objectives import DupMAEBagOfWordsLoss, InfoNCELoss, ObjectiveWeights, stage_loss
from .outputs import check_writable, staged_output
from .recipe import (  # noqa: F401 - re-exported: recipes were defined here before they had their own module
    PYTHON_DOCSTRINGS,
    RECIPE_FIELDS,
    RECIPES_DIR,
    TRAINING_DEFAULTS,
    Recipe,
    RecipeError,
    available_recipes,
    build_recipe,
    parse_override,
    plan_stages,
    read_recipe_file,
    recipe_differences,
    recipe_stages,
)
from .run_folder import (  # noqa: F401 - re-exported: run folders were managed here before they had their own module
    FINAL_DIR,
    RUN_RECORD,
    STAGING_DIR,
    _check_not_finished,
    _checkpoints,
    checkpoint_problem,
    new_run_record,
    prepare_output_dir,
    resolve_resume,
    shared_run_record,
)

logger = logging.getLogger(__name__)

#: In a checkpoint of a streamed run: where each rank stands in its share of the stream.
STREAM_STATE = "stream_state_rank{rank}.json"


# --------------------------------------------------------------------------------------------------- model & data
def load_tokenizer(recipe: Recipe, texts: Callable[[], Iterable[str]] | None = None) -> PreTrainedTokenizerBase:
    """The run's tokenizer: the recipe's (or the model's), or, for 'train', one trained on `texts` (a function
    returning a fresh iterator over the training texts: the corpus is streamed, never held in a list)."""
    if recipe.tokenizer == "train":
        from .quickstart import train_wordpiece_tokenizer

        if texts is None:
            raise RecipeError("tokenizer 'train' needs a corpus or pairs to train on")
        encoder = recipe.model_config.get("encoder")
        shape = encoder if isinstance(encoder, dict) else recipe.model_config
        vocab_size = int(shape.get("vocab_size", 4000))
        cap = recipe.tokenizer_train_samples
        logger.info(
            "training a WordPiece tokenizer (vocab %d) on %s corpus texts, streamed",
            vocab_size,
            f"the first {cap}" if cap else "all",
        )
        return train_wordpiece_tokenizer(texts, vocab_size=vocab_size)
    name = recipe.tokenizer or recipe.model
    flag = "--tokenizer" if recipe.tokenizer else "--model"
    check_tokenizer_files(recipe)
    with remote_resource("tokenizer", name, flag):
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError, TypeError) as error:
            if not Path(name).is_dir():
                raise
            raise RecipeError(
                f"tokenizer {name!r} ({flag}): the folder holds no tokenizer that transformers can load ({error}). "
                "Pass a folder with tokenizer.json / tokenizer_config.json, or a Hub name."
            ) from error
    if not tokenizer.is_fast:
        raise RecipeError(f"tokenizer {name!r} is not a fast tokenizer; whole-word masking needs word_ids()")
    return tokenizer


#: Files of which a folder holding a tokenizer has at least one (fast tokenizers, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def check_tokenizer_files(recipe: Recipe) -> None:
    """A local model or tokenizer folder without tokenizer files would load as a near-empty tokenizer that maps
    every word to [UNK], and train "successfully" on nothing: refuse it, naming both ways to fix it."""
    if recipe.tokenizer == "train" or (recipe.tokenizer is None and recipe.model == "scratch"):
        return
    name = recipe.tokenizer or recipe.model
    folder = Path(name).expanduser()
    if recipe.tokenizer and folder.is_file():
        raise RecipeError(
            f"tokenizer {name!r} (--tokenizer) is a file; pass the folder that holds it (with tokenizer.json or "
            "tokenizer_config.json, as save_pretrained writes it), or a Hub name."
        )
    if not folder.is_dir() or any((folder / file).is_file() for file in TOKENIZER_FILES):
        return
    if recipe.tokenizer is None:
        raise RecipeError(
            f"model {name!r} (--model) holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...): "
            "training would see every word as [UNK]. Pass the tokenizer the model was trained with "
            "(--tokenizer NAME_OR_FOLDER), or save it into the model folder "
            f"(AutoTokenizer.from_pretrained(...).save_pretrained({str(folder)!r}))."
        )
    raise RecipeError(
        f"tokenizer {name!r} (--tokenizer) is a folder without tokenizer files (none of "
        f"{', '.join(TOKENIZER_FILES[:3])}, ...). Pass a folder written by tokenizer.save_pretrained, or a Hub name."
    )


def read_model_config(recipe: Recipe) -> RetroMAEConfig:
    """The `RetroMAEConfig` the model will have, read without building it (no weights are loaded).

    Lets the `model_config` keys, sequence lengths and the vocabulary be checked against the model before data and
    weights are loaded. For a masked-LM checkpoint it is the composite config `from_masked_lm` builds (the
    checkpoint's config as `encoder`); for a RetroMAE checkpoint, its own config with the decoder overrides.
    """
    overrides = dict(recipe.model_config)
    _check_model_config_keys(overrides)
    if recipe.model == "scratch":
        return _retromae_config(overrides, recipe.model)
    if Path(recipe.model).expanduser().is_file():
        raise RecipeError(
            f"model {recipe.model!r} (--model) is a file; --model takes a model folder (config.json with its "
            "weights, as save_pretrained writes it), a Hub name, or 'scratch'. A bare state dict is converted "
            "first: retromae-hf convert FILE FOLDER."
        )
    try:
        check_weight_files(recipe.model, f"model {recipe.model!r} (--model)")
    except UserError as error:
        raise RecipeError(str(error)) from error
    with remote_resource("model", recipe.model, "--model"):
        try:
            config = AutoConfig.from_pretrained(recipe.model)
        except (OSError, ValueError, KeyError) as error:
            if not Path(recipe.model).is_dir():
                raise
            raise RecipeError(
                f"model {recipe.model!r} (--model): {_no_config_reason(Path(recipe.model), error)} Pass a RetroMAE "
                "checkpoint, a masked-LM model folder, a Hub name, or 'scratch'."
            ) from error
    if config.model_type == RetroMAEConfig.model_type:
        decoder = _decoder_overrides(overrides, config.encoder, recipe.model)
        return _retromae_config({**config.to_dict(), **decoder}, recipe.model)
    decoder = _decoder_overrides(overrides, config, recipe.model)
    composite = _retromae_config({**decoder, "encoder": config}, recipe.model)
    _report_fresh_head(recipe.model, config)
    return composite


def _report_fresh_head(model: str, config) -> None:
    """Say in one line when a checkpoint has no masked-LM head (a sentence-transformers folder, a bare encoder).

    Such a model is accepted: its encoder weights are used and the head that predicts tokens starts fresh, like
    the decoder (transformers alone would only say that the checkpoint "seems corrupted"). See docs/encoders.md.
    """
    architectures = [name for name in (getattr(config, "architectures", None) or []) if isinstance(name, str)]
    if any(name.endswith(("ForMaskedLM", "ForPreTraining")) for name in architectures):
        return
    folder = Path(model)
    if not architectures and not (folder / "modules.json").is_file():
        return  # a config that does not say what it was saved from: nothing to report with certainty
    kind = "a sentence-transformers folder (modules.json)" if (folder / "modules.json").is_file() else "an encoder"
    saved = architectures[0] if architectures else config.model_type
    logger.warning(
        "model %s (--model) is %s without a masked-LM head (saved as %s): its encoder weights are used; the "
        "masked-LM head and the decoder start fresh",
        model,
        kind,
        saved,
    )


def _no_config_reason(folder: Path, error: BaseException) -> str:
    """Why a folder given as a model has no readable configuration, in the user's terms (not a JSON error)."""
    config = folder / "config.json"
    modules = folder / "modules.json"
    if not config.is_file() and modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
            inner = next(entry.get("path") for entry in entries if "Transformer" in entry.get("type", ""))
        except (OSError, ValueError, StopIteration, AttributeError, TypeError):
            inner = None
        if inner:
            return f"it is a sentence-transformers folder whose transformer is in {folder / inner}: pass that folder."
        return "it is a sentence-transformers folder without a config.json at its top."
    if not config.is_file():
        return "the folder holds no config.json, so it is not a model folder."
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except ValueError as bad:
        return f"its config.json is not valid JSON ({bad})."
    except OSError as bad:
        return f"its config.json cannot be read ({bad})."
    return f"its config.json is not a model configuration transformers can read ({' '.join(str(error).split())})."


def _retromae_config(fields: dict[str, Any], model: str) -> RetroMAEConfig:
    """`RetroMAEConfig(**fields)`, with the architecture checked (on the meta device: no memory, no weights)."""
    from .modeling_retromae import UnsupportedEncoderError, check_encoder_supported

    fields = {key: value for key, value in fields.items() if key not in ("model_type", "transformers_version")}
    try:
        config = RetroMAEConfig(**fields)
    except Exception as error:  # the config's own checks: wrong types, heads not dividing the hidden size, ...
        raise RecipeError(f"model_config: {' '.join(str(error).split())}") from error
    try:
        check_encoder_supported(config.encoder)
    except UnsupportedEncoderError as error:
        where = "model_config.encoder.model_type" if model == "scratch" else f"model {model!r} (--model)"
        raise RecipeError(f"{where}: {error}") from error
    return config


def _check_model_config_keys(overrides: dict[str, Any]) -> None:
    """Refuse `model_config` keys that no config reads: they would be stored silently and change nothing.

    Accepted are what `RetroMAEConfig` accepts: its own (decoder) fields, `encoder` (a mapping naming the
    architecture's `model_type` with fields of that architecture's config), and BERT's fields at the top level
    (the shorthand for a BERT encoder, e.g. `hidden_size` in the `model: scratch` recipes).
    """
    known = set(RetroMAEConfig().to_dict()) | set(BERT_FIELDS)
    for key, value in overrides.items():
        if key not in known:
            raise RecipeError(
                f"model_config: unknown RetroMAEConfig field {key!r}{_suggestion(key, known)}. Decoder settings are "
                "RetroMAEConfig fields; an encoder other than BERT is given as `encoder: {model_type: ..., ...}`."
            )
        if value is None:
            raise RecipeError(f"model_config: {key} has no value")
    if "encoder" not in overrides:
        return
    encoder = overrides["encoder"]
    if not isinstance(encoder, dict):
        raise RecipeError(
            f"model_config.encoder must be a mapping naming the architecture, e.g. {{model_type: modernbert, "
            f"hidden_size: 256}}, got {encoder!r}"
        )
    shorthand = sorted(set(overrides) & set(BERT_FIELDS))
    if shorthand:
        raise RecipeError(
            f"model_config sets {', '.join(shorthand)} at its top level and also `encoder`: put them inside "
            "`encoder` (the top-level keys are the shorthand for a BERT encoder)"
        )
    from transformers import CONFIG_MAPPING

    model_type = encoder.get("model_type")
    if model_type is None:
        raise RecipeError("model_config.encoder needs the encoder's model_type (e.g. 'modernbert')")
    if model_type not in CONFIG_MAPPING:
        raise RecipeError(
            f"model_config.encoder.model_type: transformers knows no architecture {model_type!r}"
            f"{_suggestion(str(model_type), set(CONFIG_MAPPING))}"
        )
    encoder_fields = set(AutoConfig.for_model(model_type).to_dict())
    for key, value in encoder.items():
        if key not in encoder_fields:
            raise RecipeError(
                f"model_config.encoder: the {model_type} config has no field {key!r}{_suggestion(key, encoder_fields)}"
            )
        if value is None:
            raise RecipeError(f"model_config.encoder: {key} has no value")


def _suggestion(key: str, known: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key.split(":")[0], sorted(known), n=1)
    hint = f" (did you mean {match[0]}?)" if match else ""
    if ":" in key:
        hint += "; in YAML a key needs a space after its colon: {hidden_size: 256}"
    return hint


def _model_limits(config: RetroMAEConfig) -> tuple[int | None, int]:
    """(longest input in tokens, or None where the encoder sets none; vocabulary size) of a model configuration.

    The length is the model's own `max_sequence_length()` (for RoBERTa and XLM-R their position table less the
    padding offset, 512 of 514), read from the encoder built on the meta device: no memory, no weights.
    """
    import copy

    from .modeling_retromae import RetroMAEModel

    with torch.device("meta"):
        encoder = RetroMAEModel(copy.deepcopy(config))
    return encoder.max_sequence_length(), int(config.vocab_size)


def _has_position_table(config: RetroMAEConfig) -> bool:
    """Whether the encoder has an absolute position table (BERT, RoBERTa, XLM-R), which `convert --max-positions`
    can extend; rotary encoders (ModernBERT) have none. Built on the meta device: no memory, no weights."""
    import copy

    from .modeling_retromae import RetroMAEModel, absolute_position_table

    with torch.device("meta"):
        encoder = RetroMAEModel(copy.deepcopy(config))
    return absolute_position_table(encoder.get_encoder().embeddings, config.hidden_size) is not None


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, as under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def effective_lengths(recipe: Recipe, positions: int | None, extendable: bool = True) -> dict[str, int]:
    """The sequence lengths a run uses, checked against the model's longest input (`max_sequence_length()`).

    A length the user set (in the recipe or on the command line) beyond the model's positions is refused, naming
    the limit: cutting it silently would train on something else than asked. A length left at its default is cut
    to the model's with an info line (the default 512 does not fit a small model of 128 positions).

    Raises:
        RecipeError: naming the key, its flag, the model's limit and where extending positions is explained.
    """
    keys = ["max_length"] + (["query_max_length", "passage_max_length"] if recipe.stage == 2 else [])
    explicit = getattr(recipe, "explicit_keys", None)
    lengths = {}
    for key in keys:
        value = getattr(recipe, key)
        if positions is not None and value > positions:
            flag = "--" + key.replace("_", "-")
            if explicit is None or key in explicit:
                if extendable:
                    longer = (
                        "a model with a longer position table (extending the table of a trained model: `retromae-hf "
                        "convert MODEL FOLDER --max-positions N`, see docs/encoders.md)"
                    )
                elif recipe.model == "scratch":
                    longer = "a longer encoder (model_config.encoder.max_position_embeddings)"
                else:  # rotary positions (ModernBERT): no table whose rows could be copied
                    longer = (
                        "a checkpoint trained for longer inputs (this encoder's positions are rotary, so there is "
                        "no position table to extend by copying rows; answerdotai/ModernBERT-base takes 8,192)"
                    )
                raise RecipeError(
                    f"{key} {value} ({flag}) is longer than the model's {positions} positions (its longest input, "
                    f"model {recipe.model!r}). Use {flag} {positions} or less, or {longer}."
                )
            logger.info("%s: the default %d is longer than the model's %d positions: using %d (%s)", key, value,
                        positions, positions, flag)  # fmt: skip
            value = positions
        lengths[key] = value
    return lengths


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int, recipe: Recipe) -> None:
    """A tokenizer with ids beyond the model's embedding table would fail deep inside the first step."""
    if recipe.model == "scratch":
        return
    smallest = max(100, vocab_size // 10)
    if len(tokenizer) < smallest and not recipe.allow_small_vocabulary:
        raise RecipeError(
            f"the tokenizer ({recipe.tokenizer or recipe.model}) has only {len(tokenizer)} tokens for a model "
            f"({recipe.model}) with {vocab_size} embeddings (fewer than {smallest}): it is almost surely not the "
            "model's tokenizer, and most words would become [UNK]. Use the model's own tokenizer (--tokenizer "
            "NAME_OR_FOLDER, or drop --tokenizer), or pass --allow-small-vocabulary if this is intended."
        )
    if len(tokenizer) <= vocab_size:
        return
    raise RecipeError(
        f"the tokenizer ({recipe.tokenizer or recipe.model}) has {len(tokenizer)} tokens but the model "
        f"({recipe.model}) has only {vocab_size} embeddings: they do not belong together. Use the model's own "
        "tokenizer (drop --tokenizer), or train from scratch with this tokenizer (--model scratch)."
    )


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> RetroMAEForPreTraining:
    """Fresh, continued, or masked-LM-initialised `RetroMAEForPreTraining`, as the recipe says.

    `model_config` holds `RetroMAEConfig` fields. For 'scratch' it also gives the encoder's shape: either an
    `encoder` mapping naming its `model_type` (`bert`, `roberta`, `xlm-roberta`, `modernbert`, ...) and sizes, or
    BERT's fields at the top level (a BERT encoder, the 0.1 layout). A masked-LM checkpoint keeps its encoder and
    head weights (`from_masked_lm`); the decoder starts fresh.

    Raises:
        RecipeError: an unknown `model_config` key, a value the config refuses, an unsupported architecture, or
            encoder-shape keys that differ from the checkpoint's.
    """
    overrides = dict(recipe.model_config)
    _check_model_config_keys(overrides)
    if recipe.model == "scratch":
        encoder = dict(overrides.pop("encoder")) if "encoder" in overrides else None
        target = encoder if encoder is not None else overrides
        target["vocab_size"] = max(int(target.get("vocab_size", 0)), len(tokenizer))
        target.setdefault("pad_token_id", tokenizer.pad_token_id)
        if encoder is not None:
            _special_token_ids_from_tokenizer(encoder, tokenizer)
            overrides["encoder"] = encoder
        logger.info("initialising a RetroMAE model from scratch: %s", overrides)
        return RetroMAEForPreTraining(_retromae_config(overrides, recipe.model))
    with remote_resource("model", recipe.model, "--model"):
        config = AutoConfig.from_pretrained(recipe.model)
        if config.model_type == RetroMAEConfig.model_type:
            logger.info("continuing from the RetroMAE checkpoint %s", recipe.model)
            decoder = _decoder_overrides(overrides, config.encoder, recipe.model)
            return RetroMAEForPreTraining.from_pretrained(recipe.model, **decoder)
        logger.info("initialising the encoder from %s (%s); the decoder starts fresh", recipe.model, config.model_type)
        decoder = _decoder_overrides(overrides, config, recipe.model)
        return RetroMAEForPreTraining.from_masked_lm(recipe.model, **decoder).train()


def _decoder_overrides(overrides: dict[str, Any], encoder_config, model: str) -> dict[str, Any]:
    """`model_config` for a checkpoint (RetroMAE or masked LM): decoder fields apply; encoder-shape fields (shared
    by a multi-stage recipe with its 'scratch' stage) must be the checkpoint's own, and are then dropped."""
    encoder = encoder_config.to_dict()
    kept = {}
    for key, value in overrides.items():
        if key == "encoder" or key in BERT_FIELDS:
            given = value if key == "encoder" else {key: value}
            different = {k: v for k, v in given.items() if encoder.get(k) != v}
            if different:
                raise RecipeError(
                    f"model_config sets the encoder's {', '.join(sorted(different))} to "
                    f"{', '.join(repr(v) for _, v in sorted(different.items()))}, but the checkpoint {model} "
                    "(--model) has its own shape: drop these keys when continuing from a checkpoint"
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


def tokenizer_training_texts(recipe: Recipe) -> Callable[[], Iterator[str]]:
    """For `tokenizer: train`: a function returning a fresh iterator over at most `tokenizer_train_samples` texts
    of the corpus (or of the pairs' queries and positives), read as they come; nothing is collected in a list."""
    cap = recipe.tokenizer_train_samples or None

    def texts() -> Iterator[str]:
        if recipe.corpus:
            rows: Iterable[str] = (row["text"] for row in load_corpus_texts(recipe))
        else:
            rows = (f"{row['query']} {row['positive']}" for row in load_pair_data(recipe))
        return itertools.islice(rows, cap)

    return texts


def load_corpus_texts(recipe: Recipe, shards: int = 1):
    """The stage-1 corpus as a `datasets` dataset with a `text` column; streamed local files in at least `shards`
    shards where they allow it (`data.load_corpus`'s `num_shards`)."""
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
        if recipe.streaming:
            options.setdefault("num_shards", shards)
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
                # DPR / Tevatron files: a source mapping may choose its own negatives ({path, negative_kind, ...}).
                options.setdefault("negative_kind", recipe.negative_kind)
                options.setdefault("max_negatives", recipe.max_negatives)
                options.setdefault("require_negatives", recipe.num_negatives > 0)
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
        run_record: dict[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.run_record = run_record  # copied into every checkpoint, so --resume can tell runs and recipes apart
        self.weights = weights
        self.contrastive_loss = contrastive_loss
        self.bag_of_words_loss = bag_of_words_loss
        # Our losses are already means over the batch: let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._component_sums: dict[str, float] = defaultdict(float)
        self._component_steps = 0
        self._staging_dir: str | None = None
        self._stream = None  # data.StreamPosition of a streamed corpus read in this process
        self._stream_resume: dict[str, Any] | None = None
        self._stream_start_step = 0

    # Streamed corpora: each rank saves where it stands in its share of the stream; --resume continues from there
    # (IterableDataset.load_state_dict) instead of reading and collating every consumed batch again.
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self._stream_resume = None
        if isinstance(resume_from_checkpoint, str):
            path = Path(resume_from_checkpoint, STREAM_STATE.format(rank=self.args.process_index))
            record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            if record is not None and record.get("world_size") == self.args.world_size:
                self._stream_resume = {"state": record["state"], "checkpoint": resume_from_checkpoint}
                self.args.ignore_data_skip = True  # the stream itself continues where it stood
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def get_train_dataloader(self):
        import datasets

        loader = super().get_train_dataloader()
        dataset = getattr(loader, "dataset", None)
        self._stream = None
        if isinstance(dataset, datasets.IterableDataset) and self.args.dataloader_num_workers == 0:
            from .data import StreamPosition

            base = getattr(loader, "base_dataloader", loader)
            self._stream = StreamPosition(dataset)
            if self._stream_resume is not None:
                dataset.load_state_dict(self._stream_resume["state"])
                logger.info("continuing the stream where checkpoint %s left it", self._stream_resume["checkpoint"])
            base.collate_fn = self._stream.wrap(base.collate_fn, on_first=self._stream_started)
        elif self._stream_resume is not None:  # cannot happen with the checks above; never resume silently wrong
            raise RuntimeError("a stream position was loaded for a run that does not stream from this process")
        return loader

    def _stream_started(self) -> None:
        # The first batch of this session: the Trainer has loaded the checkpoint's state by now. Skipping batches
        # would have restored the RNG state at this point (dropout); without skipping, restore it here.
        self._stream_start_step = self.state.global_step
        if self._stream_resume is not None:
            self._load_rng_state(self._stream_resume["checkpoint"])

    def _stream_state(self) -> dict[str, Any] | None:
        if self._stream is None:
            return None
        consumed = (self.state.global_step - self._stream_start_step) * self.args.gradient_accumulation_steps
        state = self._stream.state_after(consumed)
        # A stream read to its end starts again in a new epoch, which a resumed Trainer would not replay: skip then.
        return state if state is not None and state.get("epoch", 0) == 0 else None

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
        except Exception as error:
            if not is_disk_full(error):
                raise
            # The half-written checkpoint would keep the disk full: remove it; the earlier checkpoints stay.
            from .outputs import disk_full_error, folder_size, human_size

            staging = os.path.join(run_dir, STAGING_DIR)
            written = folder_size(staging)
            shutil.rmtree(staging, ignore_errors=True)
            kept = ", ".join(path.name for path in reversed(_checkpoints(Path(run_dir)))) or "none yet"
            # The weights plus Adam's two moments: what one checkpoint needs, roughly.
            size = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters()) * 3
            # A new checkpoint is staged whole before the oldest is rotated away, so a lower save_total_limit does
            # not make room for it: what helps is free space, or a smaller checkpoint.
            if kept != "none yet":
                then = (f"; the earlier checkpoints are intact ({kept}): once there is room for one more "
                        "checkpoint, continue with --resume")
            else:
                then = ("; there is no earlier checkpoint to resume from: once there is room, start again with "
                        "--overwrite-output-dir")
            raise disk_full_error(
                error, run_dir, what=f"the run folder (saving {name}, about {human_size(size)} per checkpoint)",
                written=written, extra=then + ". Checkpoints without the optimizer's state are about a third of that "
                "size (--set training.save_only_model=true; such a run can no longer be resumed exactly)",
            ) from error  # fmt: skip
        finally:
            self._staging_dir = None
        stream_state = self._stream_state()
        if stream_state is not None:  # every rank its own, beside its RNG state
            record = {"world_size": self.args.world_size, "step": self.state.global_step, "state": stream_state}
            path = Path(run_dir, STAGING_DIR, name, STREAM_STATE.format(rank=self.args.process_index))
            path.write_text(json.dumps(record), encoding="utf-8")
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            staged, target = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
            if self.run_record is not None:
                record = json.dumps(self.run_record, indent=2, default=str)
                Path(staged, RUN_RECORD).write_text(record, encoding="utf-8")
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

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Tied weights (the MLM decoder shares the word embeddings) are not stored in checkpoints; on a correct
        # resume they are "missing" only in name. Tie them and report only what is really missing.
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) != len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(_LoadResult(missing, list(load_result.unexpected_keys)))


@dataclass
class _LoadResult:
    missing_keys: list[str]
    unexpected_keys: list[str]


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
    defaults: dict[str, Any] = dict(TRAINING_DEFAULTS)
    if recipe.retromae_weight == 0 or (recipe.stage == 2 and recipe.contrastive_weight == 0):
        defaults["ddp_find_unused_parameters"] = True  # the decoder or nothing but it is idle
    if recipe.streaming and "max_steps" not in recipe.training:
        raise RecipeError("streaming corpora have no length: set training.max_steps (--max-steps)")
    options = {**defaults, **recipe.training, "output_dir": output_dir}
    _fall_back_from_bf16(recipe, options)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1:
        _distributed_options(options, recipe, launched)
    try:
        args = TrainingArguments(**options)
    except (TypeError, ValueError) as error:
        # TrainingArguments checks its values against each other and against the hardware (bf16 on a CPU, ...).
        raise RecipeError(f"training (TrainingArguments): {error}") from error
    if launched > 1 and args.world_size != launched:
        raise RecipeError(
            f"launched as {launched} processes (WORLD_SIZE), but the Trainer set up {args.world_size}: each process "
            "would train alone on the same data. On a machine without GPUs add --set training.use_cpu=true "
            "(DDP over gloo); with GPUs, start as many processes as there are GPUs (torchrun --nproc_per_node N)."
        )
    return args


def _distributed_options(options: dict[str, Any], recipe: Recipe, world_size: int) -> None:
    """What a multi-process launch needs that the Trainer does not do by itself.

    - Without a GPU (or other accelerator) the Trainer sets up no process group unless `use_cpu` is on: every
      process would train alone. Turn it on (DDP over gloo), saying so.
    - A streamed corpus: by default accelerate reads it on rank 0 alone and ships the collated batches (masks
      included) to the others. Instead each rank reads its own shards (`IterableDataset.shard`, as
      `datasets.distributed.split_dataset_by_node` does) and collates its own batches.
    """
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    if not has_accelerator and "use_cpu" not in options:
        logger.info("%d processes and no GPU: training with DDP over gloo on the CPU (training.use_cpu)", world_size)
        options["use_cpu"] = True
    if recipe.streaming:
        config = options.get("accelerator_config") or {}
        if isinstance(config, dict):
            options["accelerator_config"] = {"dispatch_batches": False, **config}


def _fall_back_from_bf16(recipe: Recipe, options: dict[str, Any]) -> None:
    """bf16 asked for on a machine without a bf16 GPU (the shipped GPU recipes on a laptop): train in float32.

    transformers would refuse with "Your setup doesn't support bf16/gpu"; a recipe written for a GPU should still
    run (slowly) on a CPU, so retromae-hf falls back, says so once, and names the override that makes it explicit.
    The recipe records float32, so the run record and the final recipe.yaml say what was trained.
    """
    wanted = [key for key in ("bf16", "bf16_full_eval") if options.get(key)]
    if not wanted or options.get("use_cpu"):
        return
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    if is_torch_bf16_gpu_available() or is_torch_xla_available():
        return
    logger.warning(
        "training.%s is on in the recipe, but this machine has no GPU with bf16 support: training in float32 "
        "instead. Pass --set training.bf16=false to say so (and silence this warning), or run on a GPU.",
        wanted[0],
    )
    for key in wanted:
        options[key] = False
        if key in recipe.training:
            recipe.training[key] = False


# --------------------------------------------------------------------------------------------------- train
def train(
    recipe: Recipe,
    resume: str | bool | None = None,
    trainer_class: type[RetroMAETrainer] | None = None,
    overwrite_output_dir: bool = False,
    train_dataset=None,
) -> Path:
    """Run one stage. Returns the final folder (`<output_dir>/final`), which export/evaluate/push read.

    Everything that can be checked cheaply is checked before data, tokenizer or weights are loaded: the recipe's
    values, the output folder (a folder holding an earlier run is refused unless `resume` continues it or
    `overwrite_output_dir` clears it), the checkpoint to resume from, `TrainingArguments`, and the sequence
    lengths against the model's positions.

    `trainer_class` replaces `RetroMAETrainer` (a subclass with another `compute_loss`, e.g. the masked-LM
    baseline of `benchmarks/reproduce.py`), keeping data, masks, seeding, optimizer and saving identical.
    `train_dataset` (stage 1 only) is the corpus already tokenized by `data.tokenize_corpus` with the recipe's
    tokenizer and max length (`input_ids`, `word_ids`), used instead of reading and tokenizing `recipe.corpus`;
    it lets several runs share one tokenization. `recipe.corpus` is still recorded in the saved recipe.
    """
    recipe.validate()
    if is_main_process():  # the main process checks and changes the folder, see below
        # Refused before the folder is locked (or created), so a mistake leaves no trace; checked again under the
        # lock.
        prepare_output_dir(recipe, resume, overwrite_output_dir, check_only=True)
        check_writable(recipe.output_dir, what="output_dir (--output-dir)")
    with RunLock(recipe.output_dir, what="output_dir (--output-dir)"):  # one run per folder, for the whole run
        return _train_holding_the_folder(recipe, resume, trainer_class, overwrite_output_dir, train_dataset)


def _train_holding_the_folder(
    recipe: Recipe,
    resume: str | bool | None,
    trainer_class: type["RetroMAETrainer"] | None,
    overwrite_output_dir: bool,
    train_dataset,
) -> Path:
    output_dir = recipe.output_dir
    # Only the main process changes the run folder (it alone holds the lock); the others read the run record it
    # writes. The process group does not exist yet, so the launcher's RANK says which process this is.
    main_process = is_main_process()
    _fall_back_from_bf16(recipe, recipe.training)  # before the recipe is compared with a checkpoint's or recorded
    if recipe.torch_threads:
        # Intra-op threads spin while they wait: on a busy machine, or for a tiny model whose operations are too
        # small to share, they cost far more than they give (benchmarks/threads.py).
        cores = available_cores()
        if recipe.torch_threads > cores:
            logger.warning(
                "torch_threads %d is more than the %d core(s) this process may use: threads would wait on each other "
                "(many times slower). Use --torch-threads %d or less (1 for a tiny model or a shared machine)",
                recipe.torch_threads, cores, cores,
            )  # fmt: skip
        torch.set_num_threads(recipe.torch_threads)
        logger.info("torch uses %d thread(s) (torch_threads)", recipe.torch_threads)
    resume_from = resolve_resume(resume, output_dir, recipe)
    staging = Path(output_dir) / STAGING_DIR
    if staging.exists() and main_process:
        logger.warning("removing %s, left by a save that did not finish", staging)
        shutil.rmtree(staging)
    if resume_from:
        _check_not_finished(Path(resume_from), Path(output_dir))
        logger.info("resuming from %s", resume_from)
    args = training_arguments(recipe, output_dir)
    config = read_model_config(recipe)
    positions, vocab_size = _model_limits(config)
    lengths = effective_lengths(recipe, positions, extendable=_has_position_table(config))

    from .prepare import find_prepared, load_prepared

    prepared = find_prepared(recipe.corpus) if recipe.stage == 1 and train_dataset is None else None
    if prepared is not None and recipe.streaming:
        raise RecipeError(
            f"--corpus {prepared} is a prepared corpus, which training memory-maps shard by shard (every rank at "
            "once, nothing held in memory); --streaming does not apply to it and would be ignored. Drop --streaming "
            "(or set streaming: false), or pass the text files to stream them instead."
        )
    if prepared is not None and recipe.tokenizer == "train":
        raise RecipeError(
            f"--corpus {prepared} is already tokenized: pass the tokenizer it was prepared with (--tokenizer), not "
            "'train'"
        )
    texts_for_tokenizer = None
    if recipe.tokenizer == "train" and not resume_from:
        texts_for_tokenizer = tokenizer_training_texts(recipe)
    if resume_from and recipe.tokenizer == "train":
        tokenizer = AutoTokenizer.from_pretrained(resume_from)  # the vocabulary the checkpoint was trained with
    else:
        tokenizer = load_tokenizer(recipe, texts_for_tokenizer)
    check_vocabulary(tokenizer, vocab_size, recipe)
    if tokenizer.mask_token_id is None:
        raise RecipeError(
            f"the tokenizer ({recipe.tokenizer or recipe.model}) has no mask token, which masked auto-encoding "
            "needs. Use a tokenizer that has one (BERT's [MASK], RoBERTa's <mask>), or add one and save it: "
            "tokenizer.add_special_tokens({'mask_token': '[MASK]'}); tokenizer.save_pretrained(FOLDER), then pass "
            "--tokenizer FOLDER (with --model scratch, or a model whose vocabulary has room for it)."
        )
    # Only now, with the settings, the model's limits and the tokenizer checked, does --overwrite-output-dir delete
    # the earlier run (checked again here: this process holds the folder's lock).
    if main_process:
        prepare_output_dir(recipe, resume, overwrite_output_dir)
    if args.gradient_checkpointing:
        args.gradient_checkpointing_kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": False}

    # Masks and negatives are a function of (seed, epoch, batch content): exact on resume, any workers/ranks.
    retromae_collator = RetroMAECollator(
        tokenizer,
        seed=args.seed,
        encoder_mask_ratio=recipe.encoder_mask_ratio,
        decoder_mask_ratio=recipe.decoder_mask_ratio,
        max_length=lengths["max_length"],
        decoding=config.decoding,
        decoder_mask="compact",  # O(P x L) per sequence; the model expands it block by block
    )
    contrastive_loss = None
    if recipe.stage == 1 and train_dataset is not None:
        if "input_ids" not in set(train_dataset.column_names or []):
            raise RecipeError("train_dataset must come from data.tokenize_corpus or prepare; it lacks input_ids")
        dataset = train_dataset
        collator = retromae_collator
        weights = ObjectiveWeights(
            retromae=recipe.retromae_weight, contrastive=0.0, bag_of_words=recipe.bag_of_words_weight
        )
    elif recipe.stage == 1:
        if prepared is not None:  # tokenized once beforehand: every rank memory-maps the shards at once
            dataset = load_prepared(prepared, tokenizer, max_length=lengths["max_length"], packing=recipe.packing)
        else:
            dataset = _tokenized_corpus(recipe, tokenizer, args, retromae_collator.max_length)
        collator = retromae_collator
        weights = ObjectiveWeights(
            retromae=recipe.retromae_weight, contrastive=0.0, bag_of_words=recipe.bag_of_words_weight
        )
    else:
        if train_dataset is not None:
            raise RecipeError("train_dataset is for stage 1 (a tokenized corpus); stage 2 reads recipe.pairs")
        dataset = load_pair_data(recipe)
        collator = ContrastiveCollator(
            tokenizer,
            query_max_length=lengths["query_max_length"],
            passage_max_length=lengths["passage_max_length"],
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
    _check_data_against_settings(dataset, recipe, args)
    _check_first_batch(dataset, collator, recipe)
    if recipe.stage == 1:
        check_corpus_vocabulary(dataset, tokenizer, recipe)

    set_seed(args.seed)  # the model is built before the Trainer seeds: a fresh decoder must not vary run to run
    model = build_model(recipe, tokenizer)
    if model.config.decoding != retromae_collator.decoding:  # the config read up front said otherwise
        raise RuntimeError(
            f"decoding mismatch: model {model.config.decoding!r}, collator {retromae_collator.decoding!r}"
        )

    run_path = Path(output_dir)
    run_record = shared_run_record(run_path, recipe, bool(resume_from), args)

    log_path = run_path / "training_log.jsonl"
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
        run_record=run_record,
        callbacks=[JsonlLogCallback(log_path), CollatorEpochCallback(collator)],
    )
    result = trainer.train(resume_from_checkpoint=resume_from)

    final = run_path / FINAL_DIR
    if trainer.is_world_process_zero():
        # Staged and renamed into place, like the checkpoints; final/ belongs to this run, so it may be replaced.
        with staged_output(final, overwrite=True, what="final folder") as staged:
            trainer.save_model(str(staged))
            tokenizer.save_pretrained(staged)
            (staged / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
            # What the model was trained to compare with: read by sentence-transformers, evaluation and export.
            similarity = recipe.similarity if recipe.stage == 2 and recipe.contrastive_weight > 0 else "dot"
            st_config = staged / "config_sentence_transformers.json"
            st_config.write_text(json.dumps({"similarity_fn_name": similarity}, indent=2), encoding="utf-8")
            summary = {
                "stage": recipe.stage,
                "global_step": trainer.state.global_step,
                "train_loss": result.training_loss if math.isfinite(result.training_loss) else None,
                "metrics": result.metrics,
            }
            (staged / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            if log_path.is_file():
                shutil.copyfile(log_path, staged / "training_log.jsonl")
        logger.info("final model saved to %s", final)
    return final


def run_recipe(
    name_or_path: str | os.PathLike | None,
    overrides: dict[str, Any] | None = None,
    stage: int | None = None,
    resume: str | bool | None = None,
    overwrite_output_dir: bool = False,
) -> list[tuple[Recipe, Path]]:
    """Run a recipe's stages in order (or only `stage`); returns each stage's recipe and final folder.

    A stage whose `model` is `previous` starts from the final folder of the recipe's preceding stage. Every
    selected stage's recipe and output folder is checked before the first one starts, so a mistake in stage 2
    does not surface after stage 1 has trained.
    """
    planned = plan_stages(name_or_path, overrides, stage=stage, resume=resume)
    for recipe in planned:
        prepare_output_dir(recipe, resume, overwrite_output_dir, check_only=True)
    return [(recipe, train(recipe, resume=resume, overwrite_output_dir=overwrite_output_dir)) for recipe in planned]


def evaluate_after_training(final: str | os.PathLike, tasks: list[str], output_dir: str | os.PathLike) -> Path:
    """Score a final folder on the recipe's tasks; returns the path of the evaluation summary.json.

    `output_dir` belongs to the run (`<output_dir>/evaluation`), so an earlier evaluation there is replaced.
    """
    from .evaluation import evaluate

    output_dir = Path(output_dir)
    resolved = []
    data_dir = output_dir.with_name(output_dir.name + "-data")  # beside, not inside: evaluate replaces output_dir
    for task in tasks:
        if task == PYTHON_DOCSTRINGS:
            from .quickstart import write_docstring_retrieval_task

            resolved.append(write_docstring_retrieval_task(data_dir / "python-docstrings", overwrite=True))
        else:
            resolved.append(task)
    evaluate(str(final), resolved, output_dir=output_dir, overwrite=True)
    return output_dir / "summary.json"


def _tokenized_corpus(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, args: TrainingArguments, max_length: int):
    """The stage-1 corpus tokenized here: once into the `datasets` cache (the main process first, the others then
    read the cache), or, streamed, lazily in shards that each rank and DataLoader worker read on their own."""
    from .data import tokenize_corpus

    if not recipe.streaming:
        with args.main_process_first(desc="tokenizing the corpus"):
            return tokenize_corpus(load_corpus_texts(recipe), tokenizer, max_length=max_length, packing=recipe.packing)
    readers = args.world_size * max(1, args.dataloader_num_workers)
    dataset = tokenize_corpus(
        load_corpus_texts(recipe, shards=readers), tokenizer, max_length=max_length, packing=recipe.packing
    )
    shards = getattr(dataset, "num_shards", 1)
    if shards < readers:
        logger.warning(
            "the streamed corpus has %d shard(s) for %d ranks x %d DataLoader workers: some read the whole stream "
            "and keep a share of it. More files (or plain .txt / JSON Lines files, split in byte ranges) avoid that",
            shards,
            args.world_size,
            max(1, args.dataloader_num_workers),
        )
    else:
        logger.info("streaming %d shards: each of %d rank(s) and its workers read their own", shards, args.world_size)
    return dataset


#: Blocks at the start of a stage-1 corpus whose [UNK] share is measured before the model is built.
VOCABULARY_SAMPLE_BLOCKS = 64


def check_corpus_vocabulary(dataset, tokenizer: PreTrainedTokenizerBase, recipe: Recipe) -> None:
    """Refuse a tokenizer that turns the corpus mostly into [UNK] (`data.check_unknown_share`, the check `prepare`,
    `export` and `evaluate` make too), measured on the first blocks of whatever feeds stage 1: a prepared folder,
    the text tokenized by the run, or the stream. `check_vocabulary`'s size rule cannot see this for `--model
    scratch`, where any vocabulary size fits."""
    from .data import check_unknown_share, unknown_share_of_ids

    rows = []
    for example in dataset:
        rows.append(example["input_ids"])
        if len(rows) == VOCABULARY_SAMPLE_BLOCKS:
            break
    share, tokens = unknown_share_of_ids(rows, tokenizer)
    check_unknown_share(
        tokenizer,
        share,
        tokens,
        what=f"the first {len(rows)} blocks of the corpus ({', '.join(map(str, recipe.corpus or ['train_dataset']))})",
        fix="Use the model's own tokenizer (drop --tokenizer), one trained on this kind of text, or --tokenizer "
        "train (which trains one on the corpus).",
        allow_flag="--allow-small-vocabulary",
        allowed=recipe.allow_small_vocabulary,
    )


def _check_data_against_settings(dataset, recipe: Recipe, args: TrainingArguments) -> None:
    """Settings that only the data can show absurd, checked on a dataset of known size before the model is built
    (a streamed one is checked row by row: the collator refuses a row with too few negatives).

    - `num_negatives` beyond the hard negatives of a row would repeat them (read from the Arrow column's list
      lengths, without reading the texts);
    - `gradient_accumulation_steps` beyond the batches of an epoch would never complete an optimizer step.

    Raises:
        RecipeError: naming the setting, what the data holds and the value that fits.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        return
    if recipe.stage == 2 and recipe.num_negatives > 0 and "negatives" in (dataset.column_names or []):
        import pyarrow.compute as pc

        lengths = pc.list_value_length(dataset.data.column("negatives")).fill_null(0)
        fewest = int(pc.min(lengths).as_py() or 0) if len(lengths) else 0
        if fewest < recipe.num_negatives:
            short = int(pc.sum(pc.less(lengths, recipe.num_negatives)).as_py() or 0)
            raise RecipeError(
                f"num_negatives {recipe.num_negatives} (--num-negatives): {short} of {len(dataset)} training "
                f"example(s) have fewer hard negatives (the fewest: {fewest}); their negatives would be repeated to "
                f"fill the batch. Use --num-negatives {fewest} or less (0: in-batch negatives only), or give every "
                "example enough negatives."
            )
    accumulation = args.gradient_accumulation_steps
    batches = len(dataset) // max(1, args.per_device_train_batch_size * args.world_size)
    if accumulation > 1 and accumulation > batches:
        raise RecipeError(
            f"training.gradient_accumulation_steps {accumulation} (--set training.gradient_accumulation_steps=N): "
            f"one optimizer step would sum {accumulation} batches, but an epoch of the training data holds "
            f"{batches} batch(es) ({len(dataset)} examples, {args.per_device_train_batch_size} per device on "
            f"{args.world_size} process(es)). Use {max(1, batches)} or less."
        )


def _check_first_batch(dataset, collator, recipe: Recipe) -> None:
    """Collate a first batch before the model is built, so bad data fails at once rather than after set-up."""
    batch_size = int(recipe.training.get("per_device_train_batch_size", 8))
    examples = []
    for example in dataset:
        examples.append(example)
        if len(examples) == min(batch_size, 2):
            break
    if not examples:
        sources = ", ".join(str(source) for source in (recipe.corpus if recipe.stage == 1 else recipe.pairs))
        flag = "--corpus" if recipe.stage == 1 else "--pairs"
        raise RecipeError(f"the training data is empty: {sources} ({flag}) gave no examples")
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
    "checkpoint_problem",
    "evaluate_after_training",
    "prepare_output_dir",
    "read_recipe_file",
    "recipe_stages",
    "resolve_resume",
    "run_recipe",
    "train",
]
