"""Load checkpoints of the official RetroMAE code, and published encoder-only models, into `RetroMAEForPreTraining`.

Two source layouts are understood:

- **official**: `RetroMAEForPretraining.state_dict()` of `staoxiao/RetroMAE` or `FlagOpen/FlagEmbedding`
  (`lm.bert.*`, `lm.cls.*`, `c_head.*`, and `decoder_embeddings.*`, an alias of `lm.bert.embeddings`);
- **encoder-only**: a `BertForMaskedLM` (or `BertModel`) state dict, as the released RetroMAE models are
  (`bert.*`, `cls.*`); the decoder is then freshly initialised.

Our own layout keeps the official one for the encoder: transformers' `BertForMaskedLM` under `lm.` (`lm.bert.*`,
`lm.cls.*`), and the decoder layers under `decoder.layers.N.*` (the official `c_head.*` is layer 0). A state dict
written by retromae-hf 0.1 (`bert.*`, `cls.*`, `decoder.*`) is understood too. Masked-LM checkpoints of other
architectures need no conversion: `RetroMAEForPreTraining.from_masked_lm` loads them as they are.

`extend_positions` lengthens an absolute position table (BERT, RoBERTa, XLM-R) so that the encoder takes longer
inputs, the step BGE-M3 took before its 8,192-token RetroMAE pre-training (`retromae-hf convert --max-positions`).
"""

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from transformers import BertConfig, PreTrainedModel

from .configuration_retromae import BERT_FIELDS, RetroMAEConfig
from .errors import MissingInputError, UserError
from .modeling_retromae import RetroMAEForPreTraining, RetroMAEPreTrainedModel, absolute_position_table

logger = logging.getLogger(__name__)

Variant = Literal["staoxiao", "flagembedding", "position", "embeddings"]
_VARIANT_TO_QUERY_STREAM = {
    "staoxiao": "position",
    "position": "position",
    "flagembedding": "embeddings",
    "embeddings": "embeddings",
}


class CheckpointError(UserError, ValueError):
    """A state dict that does not match what the converter expects (names the missing or unknown keys)."""


def config_from_bert(
    bert_config: BertConfig | Mapping | str | os.PathLike, variant: Variant = "staoxiao", **overrides
) -> RetroMAEConfig:
    """Build a `RetroMAEConfig` from a BERT config (object, dict, `config.json` path or folder)."""
    if isinstance(bert_config, str | os.PathLike):
        path = Path(bert_config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise MissingInputError(f"no BERT config at {path}")
        try:
            bert_config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(
                f"{path}: not a JSON config file ({error}); pass the checkpoint's config.json"
            ) from None
        if not isinstance(bert_config, Mapping):
            raise CheckpointError(f"{path}: a config is a JSON object, got {type(bert_config).__name__}")
    if not isinstance(bert_config, Mapping):
        bert_config = bert_config.to_dict()
    if variant not in _VARIANT_TO_QUERY_STREAM:
        raise ValueError(f"variant must be one of {sorted(_VARIANT_TO_QUERY_STREAM)}, got {variant!r}")
    fields = {name: bert_config[name] for name in BERT_FIELDS if name in bert_config}
    # The official decoder takes its positions from BERT's own table.
    decoder = {"query_stream": _VARIANT_TO_QUERY_STREAM[variant], "decoder_positions": "encoder", **overrides}
    return RetroMAEConfig(encoder={"model_type": "bert", **fields}, **decoder)


def _rename(key: str) -> str | None:
    """Map one source key to ours; None drops it (aliases and non-persistent buffers)."""
    if key.startswith("decoder_embeddings.") or key.endswith(("position_ids", "token_type_ids")):
        return None
    # Very old BERT checkpoints name LayerNorm parameters gamma/beta.
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if key.startswith("c_head."):
        return "decoder.layers.0." + key[len("c_head.") :]
    if key.startswith(("embeddings.", "encoder.")):  # a bare BertModel state dict
        key = "bert." + key
    if key.startswith(("bert.", "cls.")):  # BertForMaskedLM, or a retromae-hf 0.1 checkpoint
        key = "lm." + key
    if key.startswith(("lm.bert.pooler.", "lm.cls.seq_relationship.")):
        return None  # BERT's pooler / NSP head: RetroMAE uses the raw [CLS] vector
    return key


def from_official(
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike,
    bert_config: BertConfig | Mapping | str | os.PathLike,
    variant: Variant = "staoxiao",
    **config_overrides,
) -> RetroMAEForPreTraining:
    """Build a `RetroMAEForPreTraining` from an official RetroMAE state dict or a `BertForMaskedLM` state dict.

    Args:
        state_dict: the tensors, or a path to a `.safetensors` / `.bin` / `.pt` file.
        bert_config: the BERT configuration the checkpoint was made with.
        variant: `"staoxiao"` (paper; query stream = [CLS] + position embeddings) or `"flagembedding"`
            (query stream through the embedding block with LayerNorm). Aliases: `"position"`, `"embeddings"`.
        **config_overrides: extra `RetroMAEConfig` fields (e.g. `num_decoder_layers`).

    Returns:
        The model, in eval mode. Parameters absent from the source (the whole decoder, for an encoder-only
        checkpoint) keep their fresh initialisation, and a log line lists them.

    Raises:
        CheckpointError: an encoder or MLM-head tensor is missing, a key is not understood, or a shape differs.
    """
    if isinstance(state_dict, str | os.PathLike):
        state_dict = load_state_dict_file(state_dict)
    config = config_from_bert(bert_config, variant, **config_overrides)
    model = RetroMAEForPreTraining(config)

    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new_key = _rename(key)
        if new_key is not None:
            renamed[new_key] = tensor
    # The MLM decoder's weight and bias are tied to the word embeddings and `cls.predictions.bias`.
    tied = set(model.all_tied_weights_keys)
    for key in tied:
        renamed.pop(key, None)

    expected = model.state_dict()
    unknown = sorted(set(renamed) - set(expected))
    if unknown:
        raise CheckpointError(f"unexpected keys in the checkpoint (not part of a RetroMAE/BERT model): {unknown[:10]}")
    for key, tensor in renamed.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"shape mismatch for {key}: checkpoint {tuple(tensor.shape)} vs config {tuple(expected[key].shape)}; "
                "is bert_config the checkpoint's own config?"
            )
    missing = sorted(set(expected) - set(renamed) - tied)
    missing_encoder = [key for key in missing if not key.startswith("decoder.")]  # the decoder may start fresh
    if missing_encoder:
        raise CheckpointError(f"the checkpoint lacks encoder / MLM-head tensors: {missing_encoder[:10]}")
    if missing:
        logger.info("No decoder in the checkpoint: %d decoder tensors keep their fresh initialisation", len(missing))

    model.load_state_dict(renamed, strict=False)
    model.tie_weights()
    return model.eval()


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors`, or from a torch pickle (`.bin`, `.pt`) with `weights_only=True`."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise MissingInputError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors, zip and unpickling errors all mean the same to the user
        # torch's own text suggests loading with weights_only=False, which runs any code the file holds: never
        # repeat it. Its first line says enough.
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Weights only load failed" in detail:
            detail = "it is not a state dict that torch.save wrote (only tensors are read from torch files)"
        raise CheckpointError(
            f"{path} cannot be read as a {'safetensors' if path.suffix == '.safetensors' else 'torch'} state dict "
            f"({detail[:300]}); the file is damaged or of another format (a text file, an HTML error page from a "
            "failed download, ...). Pass a .safetensors file, or a .bin/.pt state dict saved with torch.save."
        ) from error
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


class PositionExtensionError(UserError, ValueError):
    """The model cannot be given a longer position table (rotary encoder, or the table is already that long)."""


def _tiled(table: torch.nn.Embedding, rows: int, keep: int = 0) -> torch.nn.Embedding:
    """A new table of `rows` rows: the first `keep` rows of `table` as they are, then its remaining (learned) rows
    repeated in turn; same padding index, device and dtype."""
    with torch.no_grad():
        weight = table.weight.detach()
        learned = weight[keep:]
        repeats = -(-(rows - keep) // learned.shape[0])  # ceiling division
        tiled = torch.nn.Embedding(
            rows, weight.shape[1], padding_idx=table.padding_idx, device=weight.device, dtype=weight.dtype
        )
        tiled.weight.copy_(torch.cat([weight[:keep], learned.repeat(repeats, 1)[: rows - keep]]))
    return tiled


#: The most positions `--max-positions` gives a table. 2^20 tokens is already far beyond what full attention reads
#: (its cost grows with the square of the length: a 1M-token sequence needs 10^12 scores per head and layer), while
#: the table itself stays small (3 GB for BERT-base's 768 float32 values per row).
MAX_POSITIONS = 1 << 20


def check_position_count(max_length: int, hidden_size: int | None = None, element_size: int = 4) -> None:
    """Refuse a `--max-positions` above `MAX_POSITIONS` before any table is allocated, naming the limit and why.

    Raises:
        PositionExtensionError: with the size the table would have had.
    """
    if max_length <= MAX_POSITIONS:
        return
    from .outputs import human_size

    size = f" (its position table alone would take {human_size(max_length * hidden_size * element_size)})" if (
        hidden_size
    ) else ""
    raise PositionExtensionError(
        f"--max-positions {max_length:,} is above the limit of {MAX_POSITIONS:,} tokens{size}: "
        "full attention costs the square of the length (a sequence of 2^20 tokens already needs 10^12 attention "
        f"scores per head and layer), so no encoder trains or reads that many. Give {MAX_POSITIONS:,} or less "
        "(RetroMAE long-document runs use 8,192)."
    )


def extend_positions(model: RetroMAEPreTrainedModel | PreTrainedModel, max_length: int) -> PreTrainedModel:
    """Let an encoder with an absolute position table (BERT, RoBERTa, XLM-R) take `max_length` tokens, in place.

    The new rows are the learned ones copied in turn (rows 0..511 of BERT become rows 512..1023, 1024..1535, ...),
    as Longformer initialised its 4,096 positions from RoBERTa's 512 (Beltagy et al., 2020, arXiv 2004.05150):
    every position starts with a vector the model already reads as "a position", and local order within each
    block of 512 is kept, so continued pre-training at the longer length starts from a working model rather than
    from random rows. RoBERTa-style tables (RoBERTa, XLM-R) keep their first `padding_idx + 1` rows (padding and
    the unused row before the first position) in place and get `max_length + padding_idx + 1` rows; BERT's get
    `max_length`. `config.max_position_embeddings` and the embedding block's `position_ids` and `token_type_ids`
    buffers follow. Inside a RetroMAE model the decoder's query positions come from this same table
    (`decoder_positions="encoder"`), and a decoder with its own learned table (`decoder_positions="learned"`) gets
    the same treatment, so encoder and decoder take the same lengths.

    Args:
        model: a `RetroMAEForPreTraining` / `RetroMAEModel`, or a transformers model of the encoder (its
            `*ForMaskedLM` or base model).
        max_length: the longest input the encoder should take, special tokens included.

    Returns:
        The same model object.

    Raises:
        PositionExtensionError: the encoder has no absolute position table (ModernBERT and other rotary encoders:
            their length is `max_position_embeddings`, 8,192 for ModernBERT, with nothing to copy), or the table
            already takes `max_length` tokens.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a whole number >= 1, got {max_length!r}")
    if isinstance(model, RetroMAEPreTrainedModel):
        encoder = model.get_encoder()
    else:
        encoder = getattr(model, model.base_model_prefix, model)
    config = encoder.config
    embeddings = getattr(encoder, "embeddings", None)
    found = absolute_position_table(embeddings, config.hidden_size) if embeddings is not None else None
    if found is None:
        raise PositionExtensionError(
            f"the {config.model_type} encoder has no absolute position table to extend (its positions are rotary "
            f"or relative); it takes max_position_embeddings={getattr(config, 'max_position_embeddings', None)} "
            "tokens as it is. --max-positions is for BERT, RoBERTa and XLM-R; train a rotary encoder such as "
            "ModernBERT at its own length (recipe stage1-long)."
        )
    table, offset = found
    current = table.num_embeddings - offset
    if max_length <= current:
        raise PositionExtensionError(
            f"the {config.model_type} encoder already takes {current} tokens ({table.num_embeddings} position rows); "
            f"--max-positions {max_length} would not lengthen it. Give a length above {current}, or train at "
            f"{max_length} as it is (--max-length {max_length})."
        )
    check_position_count(max_length, config.hidden_size, table.weight.element_size())
    rows = max_length + offset
    embeddings.position_embeddings = _tiled(table, rows, keep=offset)
    device = table.weight.device
    # Non-persistent buffers sized by the table: BERT reads position ids from one, and both read the default
    # token type ids from the other, gathered at the position ids.
    if isinstance(getattr(embeddings, "position_ids", None), torch.Tensor):
        embeddings.position_ids = torch.arange(rows, device=device).expand((1, -1))
    if isinstance(getattr(embeddings, "token_type_ids", None), torch.Tensor):
        embeddings.token_type_ids = torch.zeros((1, rows), dtype=embeddings.token_type_ids.dtype, device=device)
    config.max_position_embeddings = rows
    decoder = getattr(model, "decoder", None)
    decoder_table = getattr(decoder, "position_embeddings", None) if decoder is not None else None
    if isinstance(decoder_table, torch.nn.Embedding) and decoder_table.num_embeddings < rows:
        decoder.position_embeddings = _tiled(decoder_table, rows)
    logger.info(
        "extended the %s position table from %d to %d tokens (%d rows; new rows copy the learned ones in turn)",
        config.model_type,
        current,
        max_length,
        rows,
    )
    return model


def check_extension(masked_lm: str | os.PathLike, max_length: int) -> None:
    """Raise `PositionExtensionError` now if `extend_positions` would refuse this masked-LM checkpoint (Hub name or
    folder): built from its config on the meta device, without memory or weights."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(str(masked_lm))
    with torch.device("meta"):
        extend_positions(AutoModelForMaskedLM.from_config(config), max_length)


def is_masked_lm_source(source: str | os.PathLike) -> bool:
    """Whether `convert --max-positions` reads `source` as a transformers masked-LM checkpoint: a Hub name (`name` or
    `org/name`), or a folder whose config.json names an architecture other than RetroMAE and which holds no
    official RetroMAE decoder (`c_head.*`: those go through `from_official`, as without --max-positions)."""
    from .errors import looks_like_local_path

    path = Path(source)
    if not path.exists():
        return not looks_like_local_path(str(source)) and path.suffix not in (".safetensors", ".bin", ".pt")
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return False
    if model_type in (None, RetroMAEConfig.model_type):
        return False
    weights = path / "model.safetensors"
    try:
        if weights.is_file():  # the header's names only: the weights are loaded once, by the masked-LM loader
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as handle:
                keys = list(handle.keys())
        else:
            keys = list(load_state_dict_file(path))
    except Exception:  # damaged or missing: let the masked-LM loader report what it finds
        return True
    return not any(key.startswith("c_head.") for key in keys)


def extend_masked_lm(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_length: int,
    tokenizer: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> RetroMAEForPreTraining:
    """`retromae-hf convert MASKED_LM OUT --max-positions N`: a RetroMAE checkpoint whose encoder and masked-LM head
    are the masked-LM checkpoint's (Hub name or folder) with a position table for `max_length` tokens
    (`extend_positions`); the decoder starts fresh, as with `train --model`. The tokenizer (default: the source's)
    is saved beside it with `model_max_length = max_length`. Written staged; `output_dir` is refused if it holds
    anything, unless `overwrite`. Returns the model."""
    from transformers import AutoTokenizer

    from .errors import remote_resource
    from .outputs import check_output, staged_output

    inputs = [source, tokenizer]
    check_output(output_dir, overwrite=overwrite, inputs=inputs, command="convert")  # before downloading or loading anything
    with remote_resource("checkpoint", str(source)):
        check_extension(source, max_length)  # the architecture and the length, before any weight is loaded
        model = RetroMAEForPreTraining.from_masked_lm(str(source))
    with remote_resource("tokenizer", str(tokenizer or source), "--tokenizer"):
        loaded = AutoTokenizer.from_pretrained(str(tokenizer or source))
    extend_positions(model, max_length)
    loaded.model_max_length = max_length
    with staged_output(output_dir, overwrite=overwrite, inputs=inputs, command="convert") as staging:
        model.save_pretrained(staging)
        loaded.save_pretrained(staging)
    return model


__all__ = [
    "MAX_POSITIONS",
    "CheckpointError",
    "PositionExtensionError",
    "check_extension",
    "check_position_count",
    "config_from_bert",
    "extend_masked_lm",
    "extend_positions",
    "from_official",
    "is_masked_lm_source",
    "load_state_dict_file",
]
