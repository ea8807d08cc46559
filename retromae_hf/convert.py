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
"""

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from transformers import BertConfig

from .configuration_retromae import BERT_FIELDS, RetroMAEConfig
from .errors import MissingInputError, UserError
from .modeling_retromae import RetroMAEForPreTraining

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


__all__ = ["CheckpointError", "config_from_bert", "from_official", "load_state_dict_file"]
