"""PyTorch RetroMAE for any masked-LM encoder: the encoder's [CLS] vector must let a shallow decoder rebuild the input.

RetroMAE (Xiao et al., EMNLP 2022, arXiv 2205.12035) pre-trains a retrieval encoder with a masked auto-encoder.
The encoder reads a moderately masked sentence (15-30%) and is trained with masked language modelling; its last
layer's [CLS] vector is the sentence embedding. A one-layer decoder then reconstructs a far more heavily masked
copy (50-70%) from that vector alone, through *enhanced decoding*:

- the **query stream** is built from the [CLS] vector and position embeddings only, so it carries no token;
- the **content stream** is the [CLS] vector followed by the (unmasked) token embeddings of the sentence;
- the query stream attends to the content stream through a **position-specific attention mask** sampled per row,
  in which every position hides itself, so each token is predicted from [CLS] plus a different random context.

The encoder and its masked-LM head are transformers' own modules (`AutoModelForMaskedLM`: BERT, RoBERTa, XLM-R,
ModernBERT, ...) with their own parameter names under `lm.`, so a Hub masked-LM checkpoint loads into them as is
and the encoder exports in its native format. Only the decoder (`RetroMAEDecoder`) is ours.

This file is shipped to the Hub beside the weights (remote code): it imports only torch, transformers and the
configuration file next to it.
"""

import copy
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import (
    MODEL_FOR_MASKED_LM_MAPPING,
    MODEL_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    PreTrainedConfig,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_retromae import RetroMAEConfig

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
DEFAULT_LOSS_CHUNK_SIZE = 4096  # tokens per chunk of vocabulary logits (`RetroMAEConfig.loss_chunk_size`)
# Written into every saved config, so that any Auto class loads any RetroMAE checkpoint as remote code.
AUTO_MAP = {
    "AutoConfig": "configuration_retromae.RetroMAEConfig",
    "AutoModel": "modeling_retromae.RetroMAEModel",
    "AutoModelForPreTraining": "modeling_retromae.RetroMAEForPreTraining",
}
# Architectures this package tests end to end (training, round trips, exports). Others with a masked-LM head are
# accepted when they meet the structural requirements checked by `check_encoder_supported`.
TESTED_ENCODERS = ("bert", "roberta", "xlm-roberta", "modernbert")
# Masked-LM heads made of several sibling modules, applied in this order to the encoder's hidden states. Every
# other architecture has a single head module beside its base model (BERT `cls`, RoBERTa `lm_head`, ...).
MLM_HEAD_CHAINS = {
    "modernbert": ("head", "decoder"),
    "distilbert": ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
    "electra": ("generator_predictions", "generator_lm_head"),
}


# Named device maps that transformers infers from the model's layout (see `RetroMAEForPreTraining.infer_device_map`).
INFERRED_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
# `from_pretrained` options that also locate the config file.
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


class UnsupportedEncoderError(ValueError):
    """The encoder architecture cannot carry RetroMAE (says why, and names the supported architectures)."""


@dataclass
class RetroMAEModelOutput(ModelOutput):
    """Output of [`RetroMAEModel`].

    Args:
        last_hidden_state: `[batch, seq_len, hidden]`, the encoder's last layer.
        sentence_embedding: `[batch, hidden]`, the last layer's [CLS] vector (no pooler, no projection).
        hidden_states: the embedding output and every layer's output, when `output_hidden_states=True`; with
            indices, those the encoder selects for them (`None` elsewhere), as transformers' own models return them.
        attentions: every encoder layer's attention weights, when `output_attentions=True` (the encoder's own
            behaviour: with an attention kernel that returns no weights, such as SDPA, transformers warns and returns
            none; `attn_implementation="eager"` returns them).
    """

    last_hidden_state: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RetroMAEForPreTrainingOutput(ModelOutput):
    """Output of [`RetroMAEForPreTraining`].

    Args:
        loss: `encoder_loss + decoder_loss` (unweighted, as the official implementation), when labels are given.
        encoder_loss: masked-LM cross-entropy of the encoder, averaged over its labelled tokens.
        decoder_loss: reconstruction cross-entropy of the decoder, averaged over its labelled tokens.
        sentence_embedding: `[batch, hidden]`, the encoder's last-layer [CLS] vector.
        encoder_last_hidden_state: `[batch, seq_len, hidden]`.
        decoder_last_hidden_state: `[batch, seq_len, hidden]`, the decoder's output (before the MLM head).
        query_embedding: `[queries, hidden]` [CLS] vectors of `query_input_ids` (stage-2 contrastive learning).
        passage_embedding: `[passages, hidden]` [CLS] vectors of `passage_input_ids`.
        hidden_states, attentions: the encoder's (of `encoder_input_ids`), when `output_hidden_states` /
            `output_attentions` ask for them, as [`RetroMAEModelOutput`] has them.
    """

    loss: torch.FloatTensor | None = None
    encoder_loss: torch.FloatTensor | None = None
    decoder_loss: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    decoder_last_hidden_state: torch.FloatTensor | None = None
    query_embedding: torch.FloatTensor | None = None
    passage_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def write_sentence_transformers_files(
    save_directory: str | os.PathLike, hidden_size: int, max_seq_length: int | None
) -> None:
    """Describe the folder to sentence-transformers: the encoder, then [CLS] pooling (RetroMAE's embedding).

    Without these files `SentenceTransformer(folder)` would fall back to mean pooling. The legacy file layout is
    used because every sentence-transformers release reads it.
    """
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    files = {
        "modules.json": modules,
        os.path.join("1_Pooling", "config.json"): pooling,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {"similarity_fn_name": "dot"},
    }
    for name, content in files.items():
        path = os.path.join(save_directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)


# --------------------------------------------------------------------------------------------------- encoders
def _unsupported(model_type: str, why: str) -> UnsupportedEncoderError:
    return UnsupportedEncoderError(
        f"RetroMAE cannot use a {model_type!r} encoder: {why}. Supported and tested: {', '.join(TESTED_ENCODERS)}; "
        "other architectures work when they have a masked-LM head in transformers, an embedding block "
        "`embeddings(input_ids=...)` of the hidden size, and a [CLS]-style first token."
    )


def _masked_lm_class(encoder_config: PreTrainedConfig) -> type[PreTrainedModel]:
    try:
        return MODEL_FOR_MASKED_LM_MAPPING[type(encoder_config)]
    except KeyError:
        raise _unsupported(encoder_config.model_type, "transformers has no masked-LM model for it") from None


def build_masked_lm(encoder_config: PreTrainedConfig) -> PreTrainedModel:
    """A freshly initialised `*ForMaskedLM` for `encoder_config`, through `AutoModelForMaskedLM`."""
    _masked_lm_class(encoder_config)
    return AutoModelForMaskedLM.from_config(encoder_config)


def build_base_model(encoder_config: PreTrainedConfig) -> PreTrainedModel:
    """The `*ForMaskedLM`'s base model alone (`BertModel`, `ModernBertModel`, ...), without a pooler."""
    _masked_lm_class(encoder_config)
    model_class = MODEL_MAPPING[type(encoder_config)]
    # BERT-style base models add a pooler by default; their masked-LM models (whose weights we load) have none.
    kwargs = {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}
    return AutoModel.from_config(encoder_config, **kwargs)


def mlm_head_chain(masked_lm: PreTrainedModel) -> tuple[str, ...]:
    """Names of the modules of `masked_lm` that turn its base model's hidden states into vocabulary logits."""
    model_type = masked_lm.config.model_type
    if model_type in MLM_HEAD_CHAINS:
        return MLM_HEAD_CHAINS[model_type]
    heads = [
        name
        for name, child in masked_lm.named_children()
        if name != masked_lm.base_model_prefix and not isinstance(child, nn.modules.loss._Loss)
    ]
    if len(heads) != 1:
        raise _unsupported(model_type, f"its masked-LM head is not one module (found {heads or 'none'})")
    return (heads[0],)


def absolute_position_table(embeddings: nn.Module, hidden_size: int) -> tuple[nn.Embedding, int] | None:
    """The encoder's absolute position table and the index of its first position, or None (rotary encoders).

    RoBERTa-style embeddings (RoBERTa, XLM-R, CamemBERT, ...) number positions from `padding_idx + 1`, since
    their row `padding_idx` belongs to padding; the method they number them with marks them.
    """
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding) or table.embedding_dim != hidden_size:
        return None
    offset = 0
    if (
        hasattr(embeddings, "create_position_ids_from_input_ids")
        and getattr(embeddings, "padding_idx", None) is not None
    ):
        offset = embeddings.padding_idx + 1
    return table, offset


def _check_structure(masked_lm: PreTrainedModel, hidden_size: int) -> tuple[str, ...]:
    """Fail at once, before any training, when the encoder cannot carry the decoder; returns the head chain."""
    model_type = masked_lm.config.model_type
    chain = mlm_head_chain(masked_lm)
    base = getattr(masked_lm, masked_lm.base_model_prefix, None)
    embeddings = getattr(base, "embeddings", None)
    if embeddings is None:
        raise _unsupported(model_type, "its base model has no `embeddings` block for the decoder's content stream")
    # A shape probe on two tokens (on the meta device while loading: no computation, no memory).
    parameter = next(masked_lm.parameters())
    probe_ids = torch.zeros(1, 2, dtype=torch.long, device=parameter.device)
    was_training = masked_lm.training
    masked_lm.eval()  # no dropout: the probe must not draw from the random number generator
    try:
        with torch.no_grad():
            content = embeddings(input_ids=probe_ids)
            logits = torch.zeros(1, hidden_size, dtype=parameter.dtype, device=parameter.device)
            for name in chain:
                logits = getattr(masked_lm, name)(logits)
    except Exception as error:  # any failure here means the structure differs from what the decoder needs
        raise _unsupported(model_type, f"probing its embeddings and masked-LM head failed ({error})") from error
    finally:
        masked_lm.train(was_training)
    if not isinstance(content, torch.Tensor) or tuple(content.shape) != (1, 2, hidden_size):
        raise _unsupported(model_type, "its embedding block does not return [batch, seq, hidden_size] vectors")
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, masked_lm.config.vocab_size):
        raise _unsupported(model_type, "its masked-LM head does not map hidden states to vocabulary logits")
    return chain


def check_encoder_supported(encoder_config: PreTrainedConfig) -> None:
    """Raise `UnsupportedEncoderError` now if RetroMAE cannot use this encoder architecture.

    Builds the masked-LM model on the meta device (no memory, no weights), so it is cheap enough to run before
    downloading or loading a checkpoint.
    """
    with torch.device("meta"):
        masked_lm = build_masked_lm(encoder_config)
    _check_structure(masked_lm, encoder_config.hidden_size)


def _run_base_model(
    base: PreTrainedModel,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    output_hidden_states: bool | int | list[int] = False,
    output_attentions: bool = False,
):
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
    # Some architectures (ModernBERT) take no token types; BERT tokenizers still return them. Read once per model:
    # the signature lookup costs more host time than a small kernel.
    if token_type_ids is not None:
        takes_token_types = getattr(base, "_retromae_takes_token_types", None)
        if takes_token_types is None:
            takes_token_types = "token_type_ids" in inspect.signature(base.forward).parameters
            base._retromae_takes_token_types = takes_token_types
        if takes_token_types:
            inputs["token_type_ids"] = token_type_ids
    # Always passed: the caller resolved them from the RetroMAE config, whose flags the encoder's config lacks.
    # Indices of hidden states go to the encoder as they are, so they mean what they mean in the installed
    # transformers (its releases count them differently).
    inputs["output_hidden_states"] = output_hidden_states
    inputs["output_attentions"] = output_attentions
    # transformers' mask helpers already drop an all-ones padding mask for SDPA, so unpadded batches (packed
    # pre-training blocks) run the encoder without a mask.
    return base(**inputs, return_dict=True)


# --------------------------------------------------------------------------------------------------- decoder
def additive_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a 0/1 mask (`[B, L]` over keys, or `[B, L, L]` query x key) into an additive `[B, 1, Lq, L]` bias.

    Blocked entries get the dtype's lowest finite value rather than `-inf`: a fully blocked row (a padded query)
    then yields a finite uniform attention instead of NaN, exactly as BERT's extended mask does.
    """
    if mask.dim() == 2:
        mask = mask[:, None, None, :]
    elif mask.dim() == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(f"attention mask must be [batch, seq] or [batch, seq, seq], got shape {tuple(mask.shape)}")
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


def expand_decoder_mask(
    pool: torch.Tensor, pick: torch.Tensor, real: torch.Tensor, start: int = 0, end: int | None = None
) -> torch.Tensor:
    """Rows `start:end` of the position-specific mask held compactly: `[B, end - start, L]` bool, True = visible.

    Args:
        pool: `[B, P, L]` bool, True where pool member `p` of a row hides token `j` (`decoder_mask_pool`).
        pick: `[B, L]` integer, the pool member of each query row (`decoder_mask_pick`).
        real: `[B, L]` bool, True for real tokens (the attention mask of both streams).
        start, end: the block of query rows to build (all rows by default).

    Row `i` hides its pool member's tokens and itself; padding is never attended and padded rows see nothing:
    exactly the dense `[B, L, L]` mask of the collator (`RetroMAECollator(decoder_mask="dense")`).
    """
    seq_len = pick.shape[1]
    end = seq_len if end is None else min(end, seq_len)
    rows = pick[:, start:end].long()
    hidden = pool.gather(1, rows[:, :, None].expand(-1, -1, pool.shape[-1]))  # [B, rows, L]
    keys = torch.arange(pool.shape[-1], device=pool.device)
    hidden |= keys[None, None, :] == torch.arange(start, end, device=pool.device)[None, :, None]
    real = real.bool()
    return ~hidden & real[:, start:end, None] & real[:, None, :]


class CompactDecoderMask:
    """The decoder's position-specific mask in its compact form, expanded one block of query rows at a time.

    What the collator sends with `decoder_mask="compact"` (a pool of whole-word masks per sequence and each
    row's pick, O(P x L)), plus the padding. The decoder's attention asks for one block of query rows at a time
    (`additive(start, end)`), so neither a `[B, L, L]` mask nor `[B, heads, L, L]` scores ever exist for long
    inputs.
    """

    def __init__(
        self,
        pool: torch.Tensor,
        pick: torch.Tensor,
        real: torch.Tensor,
        block_size: int = 512,
        dtype: torch.dtype = torch.float32,
    ):
        if pool.dim() != 3 or pick.dim() != 2 or pool.shape[0] != pick.shape[0] or pool.shape[2] != pick.shape[1]:
            raise ValueError(
                f"decoder_mask_pool must be [batch, pool, seq] and decoder_mask_pick [batch, seq] of the same batch "
                f"and length; got {tuple(pool.shape)} and {tuple(pick.shape)}"
            )
        if tuple(real.shape) != tuple(pick.shape):
            raise ValueError(
                f"the padding mask {tuple(real.shape)} does not match decoder_mask_pick {tuple(pick.shape)}"
            )
        self.pool = pool.bool()
        self.pick = pick
        self.real = real.bool()
        self.block_size = block_size
        self.dtype = dtype

    @property
    def seq_len(self) -> int:
        return self.pick.shape[1]

    def with_dtype(self, dtype: torch.dtype) -> "CompactDecoderMask":
        return CompactDecoderMask(self.pool, self.pick, self.real, self.block_size, dtype)

    def visible(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """`[B, end - start, L]` bool: which keys each query row of the block sees."""
        return expand_decoder_mask(self.pool, self.pick, self.real, start, end)

    def additive(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """`[B, 1, end - start, L]` additive bias for the block, as `additive_attention_mask` makes it."""
        return additive_attention_mask(self.visible(start, end), self.dtype)


def decoder_mask_from(
    dense: torch.Tensor | None,
    pool: torch.Tensor | None,
    pick: torch.Tensor | None,
    real: torch.Tensor,
    block_size: int,
) -> "torch.Tensor | CompactDecoderMask | None":
    """The decoder's position-specific mask from whichever form a batch carries: the dense `[B, L, L]` mask as it
    is, the compact pool + picks wrapped for blockwise expansion, or None when it carries neither.

    Raises:
        ValueError: both forms, or half of the compact one.
    """
    if dense is not None:
        if pool is not None or pick is not None:
            raise ValueError("pass decoder_attention_mask or decoder_mask_pool + decoder_mask_pick, not both")
        return dense
    if pool is None and pick is None:
        return None
    if pool is None or pick is None:
        raise ValueError("the compact decoder mask needs both decoder_mask_pool and decoder_mask_pick")
    return CompactDecoderMask(pool, pick, real, block_size)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention on `[B, heads, L, d]` tensors; returns `[B, L, heads, d]` and the weights."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class RetroMAEAttention(nn.Module):
    """Multi-head attention whose keys and values may come from another stream than its queries."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.decoder_num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.decoder_attention_probs_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: "torch.Tensor | CompactDecoderMask | None",
        key_value_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if key_value_states is None:
            key_value_states = hidden_states
        batch, q_len, _ = hidden_states.shape
        kv_len = key_value_states.shape[1]
        query = self.query(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.key(key_value_states).view(batch, kv_len, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.value(key_value_states).view(batch, kv_len, self.num_heads, self.head_dim).transpose(1, 2)

        # A decoder used on its own (outside a PreTrainedModel) has no implementation set: eager, like BERT's.
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation or "eager", eager_attention_forward
        )
        dropout = self.dropout if self.training else 0.0
        if isinstance(attention_mask, CompactDecoderMask):
            output = self._blockwise(attention, query, key, value, attention_mask, dropout)
        else:
            output, _ = attention(
                self, query, key, value, attention_mask, scaling=self.scaling, dropout=dropout, is_causal=False
            )
        return output.reshape(batch, q_len, -1)

    def _blockwise(
        self,
        attention: Callable,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: CompactDecoderMask,
        dropout: float,
    ) -> torch.Tensor:
        """Attention of each block of query rows against all keys, with that block's rows of the compact mask.

        Rows are independent in attention, so the blocks' outputs are the rows of the full computation. With
        several blocks and gradients on, each block is checkpointed: its mask and scores are rebuilt in backward
        instead of being kept, so memory holds one block's `[B, heads, block, L]` at a time.
        """
        q_len = query.shape[2]
        block = mask.block_size
        recompute = torch.is_grad_enabled() and q_len > block

        def run(query_block: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: int) -> torch.Tensor:
            bias = mask.additive(start, start + query_block.shape[2])
            out, _ = attention(
                self, query_block, key, value, bias, scaling=self.scaling, dropout=dropout, is_causal=False
            )
            return out

        outputs = []
        for start in range(0, q_len, block):
            query_block = query[:, :, start : start + block]
            if recompute:
                outputs.append(checkpoint(run, query_block, key, value, start, use_reentrant=False))
            else:
                outputs.append(run(query_block, key, value, start))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


class RetroMAEResidualOutput(nn.Module):
    """Projection, dropout, residual add, LayerNorm: the output of both sub-layers of a post-LN BERT layer."""

    def __init__(self, config: RetroMAEConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.decoder_layer_norm_eps)
        self.dropout = nn.Dropout(config.decoder_hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class RetroMAEAttentionBlock(nn.Module):
    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.self = RetroMAEAttention(config)
        self.output = RetroMAEResidualOutput(config, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        key_value_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # The residual always comes from the query side: in the decoder that is the query stream.
        return self.output(self.self(hidden_states, attention_mask, key_value_states), hidden_states)


class RetroMAEIntermediate(nn.Module):
    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.decoder_intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.decoder_hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class RetroMAELayer(GradientCheckpointingLayer):
    """A post-LayerNorm transformer layer (BERT's, as the official `c_head`). With `key_value_states` it is an
    enhanced-decoding layer: queries from the query stream, keys and values from the content stream."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.attention = RetroMAEAttentionBlock(config)
        self.intermediate = RetroMAEIntermediate(config)
        self.output = RetroMAEResidualOutput(config, config.decoder_intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        key_value_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attended = self.attention(hidden_states, attention_mask, key_value_states)
        return self.output(self.intermediate(attended), attended)


def init_decoder_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation, which the official code gives its decoder: N(0, std) weights, zero biases,
    unit LayerNorms."""
    if isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)


class RetroMAEDecoder(nn.Module):
    """The enhanced decoder of RetroMAE, independent of the encoder it is trained with.

    `num_decoder_layers` post-LN layers; each refines the query stream against the same content stream (with one
    layer, as in the paper, this is exactly the official `c_head`). With `decoder_positions="learned"` the decoder
    owns its position table (`position_embeddings`, `encoder.max_position_embeddings` rows).

    Built from a `RetroMAEConfig` alone, so other training set-ups can reuse it: give it the encoder's sentence
    vector, the token embeddings of the unmasked sentence, and the position-specific attention mask.

    Example:
        ```python
        >>> config = RetroMAEConfig(encoder=backbone.config, decoder_positions="learned")
        >>> decoder = RetroMAEDecoder(config)
        >>> decoder.init_weights()
        >>> hidden = decoder(sentence_embedding, content_embeddings, None, attention_mask)  # [B, L, H]
        ```
    """

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([RetroMAELayer(config) for _ in range(config.num_decoder_layers)])
        self.position_embeddings: nn.Embedding | None = None
        if config.decoder_positions == "learned":
            if not config.max_position_embeddings:
                raise ValueError("decoder_positions='learned' needs the encoder's max_position_embeddings")
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def init_weights(self) -> None:
        """Initialise a standalone decoder (inside `RetroMAEForPreTraining`, `post_init` does it)."""
        for module in self.modules():
            init_decoder_weights(module, self.config.decoder_initializer_range)

    def learned_positions(self, seq_len: int) -> torch.Tensor:
        """`[1, seq_len, H]`: the decoder's own position vectors (`decoder_positions="learned"`)."""
        if self.position_embeddings is None:
            raise ValueError(
                "this decoder has no position table of its own (decoder_positions="
                f"{self.config.decoder_positions!r}): pass query_position_embeddings, or build it with "
                "decoder_positions='learned'"
            )
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds the decoder's {self.position_embeddings.num_embeddings} "
                "positions (max_position_embeddings); truncate the input (the collator's max_length)"
            )
        return self.position_embeddings.weight[None, :seq_len]

    def forward(
        self,
        sentence_embedding: torch.Tensor,
        content_embeddings: torch.Tensor,
        query_position_embeddings: torch.Tensor | None,
        attention_mask: "torch.Tensor | CompactDecoderMask",
        query_stream: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct every position from the sentence vector; returns `[B, L, H]` (before any MLM head).

        Args:
            sentence_embedding: `[B, H]`, the encoder's sentence vector (its last-layer [CLS]).
            content_embeddings: `[B, L, H]`, the encoder's embedding block applied to the *unmasked* token ids;
                position 0 is replaced by `sentence_embedding` (the content stream). With learned positions, the
                decoder adds its own position vectors to positions 1..L-1.
            query_position_embeddings: `[1 | B, L, H]` positions of the query stream `sentence_embedding + p`;
                `None` uses the decoder's learned table.
            attention_mask: `[B, L, L]` 0/1, `[b, i, j] = 1` when query position `i` may see content position
                `j` (the position-specific mask; for `decoding="plain"` a padding mask over the masked copy, or a
                `[B, L]` key padding mask), or a `CompactDecoderMask` (pool + picks, expanded block by block).
            query_stream: optional `[B, L, H]` query stream built by the caller (the `"embeddings"` rule runs
                the encoder's embedding block); replaces `sentence_embedding + p`.
        """
        seq_len = content_embeddings.shape[1]
        cls_hidden = sentence_embedding[:, None, :]
        tail = content_embeddings[:, 1:]
        learned = self.learned_positions(seq_len) if self.position_embeddings is not None else None
        if learned is not None:
            tail = tail + learned[:, 1:]
        content = torch.cat([cls_hidden, tail], dim=1)
        if self.config.decoding == "plain":  # ablation: ordinary self-attention over the masked sentence
            if isinstance(attention_mask, CompactDecoderMask):
                raise ValueError("decoding='plain' takes a padding mask, not a compact position-specific mask")
            mask = additive_attention_mask(attention_mask, content.dtype)
            hidden = content
            for layer in self.layers:
                hidden = layer(hidden, mask)
            return hidden
        if query_stream is None:
            positions = query_position_embeddings if query_position_embeddings is not None else learned
            if positions is None:
                positions = self.learned_positions(seq_len)  # raises: no table and no positions given
            query_stream = positions + cls_hidden
        if isinstance(attention_mask, CompactDecoderMask):
            mask = attention_mask.with_dtype(query_stream.dtype)
        else:
            mask = additive_attention_mask(attention_mask, query_stream.dtype)
        for layer in self.layers:
            query_stream = layer(query_stream, mask, content)
        return query_stream


# --------------------------------------------------------------------------------------------------- models
class _HeadlessMaskedLM(nn.Module):
    """Holds a base model under its masked-LM model's attribute name (`bert`, `roberta`, `model`, ...), so that
    the encoder's parameters are named as in a pre-training checkpoint (`lm.bert.*`) and load from it as is."""

    # What transformers gathers from a model's children for `device_map` and dtype handling (`post_init`): this
    # wrapper is a plain module, so it hands on its base model's.
    PLACEMENT_ATTRIBUTES = ("_no_split_modules", "_skip_keys_device_placement", "_keep_in_fp32_modules")

    def __init__(self, prefix: str, base_model: PreTrainedModel):
        super().__init__()
        self.prefix = prefix
        self.add_module(prefix, base_model)
        for name in self.PLACEMENT_ATTRIBUTES:
            setattr(self, name, set(getattr(base_model, name, None) or ()))


class RetroMAEPreTrainedModel(PreTrainedModel):
    config_class = RetroMAEConfig
    config: RetroMAEConfig
    # The masked-LM model lives under `lm`: loading a checkpoint without that prefix (one written by retromae-hf
    # 0.1, with `bert.*` / `cls.*` keys) adds it, through transformers' base-model-prefix handling.
    base_model_prefix = "lm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    # Completed in `__init__` with the encoder's own blocks (`BertLayer`, `BertEmbeddings`, ...): a `device_map`
    # never splits one of them across devices.
    _no_split_modules = None

    def _set_no_split_modules(self, *own: str) -> None:
        encoder_blocks = getattr(self.get_encoder(), "_no_split_modules", None) or ()
        self._no_split_modules = sorted({*encoder_blocks, *own})

    def get_encoder(self, modality: str | None = None) -> PreTrainedModel:
        """The text encoder: transformers' own base model (`BertModel`, `XLMRobertaModel`, `ModernBertModel`, ...).

        For `modality="image"`, `"video"` or `"audio"` the model itself, transformers' answer for a model without
        such an encoder (so `transformers.exporters.utils.is_multimodal` sees a text-only model)."""
        if modality is not None:
            if modality not in ("image", "video", "audio"):
                raise ValueError(f'modality must be "image", "video" or "audio" (or None), got {modality!r}')
            return self
        return getattr(self.lm, self._encoder_prefix)

    def get_input_embeddings(self) -> nn.Module:
        return self.get_encoder().get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.get_encoder().set_input_embeddings(value)

    def max_sequence_length(self) -> int | None:
        """The longest input the encoder takes: its absolute position table's size (less RoBERTa's offset), else
        `max_position_embeddings` (the length a rotary encoder was built for, and the decoder table's size)."""
        found = absolute_position_table(self.get_encoder().embeddings, self.config.hidden_size)
        if found is not None:
            table, offset = found
            return table.num_embeddings - offset
        return self.config.max_position_embeddings

    def _check_length(self, seq_len: int) -> None:
        limit = self.max_sequence_length()
        if limit is not None and seq_len > limit:
            raise ValueError(
                f"sequence length {seq_len} exceeds the {self.config.encoder.model_type} encoder's limit of {limit} "
                f"tokens (max_position_embeddings={self.config.max_position_embeddings}); truncate the input "
                "(the collator's max_length) to at most that"
            )

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
    ) -> RetroMAEModelOutput:
        """Run the encoder; the sentence embedding is the last layer's first ([CLS]) vector.

        `output_hidden_states` (`True`, or indices of the hidden states to keep) and `output_attentions` default
        to the RetroMAE config's flags, as in transformers' own models."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if output_hidden_states is None:
            output_hidden_states = bool(getattr(self.config, "output_hidden_states", False))
        if output_attentions is None:
            output_attentions = bool(getattr(self.config, "output_attentions", False))
        self._check_length((input_ids if input_ids is not None else inputs_embeds).shape[1])
        outputs = _run_base_model(
            self.get_encoder(),
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        hidden = outputs.last_hidden_state
        # Collected first: ModelOutput only registers the fields that are set when it is built.
        extra = {}
        if output_hidden_states is not False:
            extra["hidden_states"] = outputs.hidden_states
        if output_attentions:
            extra["attentions"] = outputs.attentions
        return RetroMAEModelOutput(last_hidden_state=hidden, sentence_embedding=hidden[:, 0], **extra)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records only the saved class's own Auto class; the encoder of a pre-training checkpoint
        # must load through AutoModel too.
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_sentence_transformers_files(save_directory, self.config.hidden_size, self.max_sequence_length())
        return result

    def _init_weights(self, module: nn.Module) -> None:
        # Only our decoder's modules reach this: the encoder is a transformers model that initialises itself.
        init_decoder_weights(module, self.config.decoder_initializer_range)


class RetroMAEModel(RetroMAEPreTrainedModel):
    """The RetroMAE encoder alone: transformers' base model of the encoder architecture, whose sentence embedding
    is the last layer's [CLS] vector. Loads from a pre-training checkpoint, leaving the MLM head and decoder.

    Example:
        ```python
        >>> import retromae_hf  # registers the Auto classes
        >>> from transformers import AutoModel, AutoTokenizer
        >>> model = AutoModel.from_pretrained("path/or/repo")
        >>> tokenizer = AutoTokenizer.from_pretrained("path/or/repo")
        >>> batch = tokenizer(["what is dense retrieval?"], return_tensors="pt")
        >>> embedding = model(**batch).sentence_embedding  # [1, hidden]
        ```
    """

    def __init__(self, config: RetroMAEConfig):
        super().__init__(config)
        prefix = _masked_lm_class(config.encoder).base_model_prefix
        self._encoder_prefix = prefix
        self.lm = _HeadlessMaskedLM(prefix, build_base_model(config.encoder))
        config.encoder = getattr(self.lm, prefix).config
        self._set_no_split_modules()
        # Loading the encoder from a pre-training checkpoint leaves its MLM head and decoder behind, as intended:
        # anything outside `lm.<prefix>.` (or, in a retromae-hf 0.1 checkpoint, outside `<prefix>.`).
        self._keys_to_ignore_on_load_unexpected = [r"^decoder\.", rf"^lm\.(?!{prefix}\.)", rf"^(?!lm\.|{prefix}\.)"]
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RetroMAEModelOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output = self.encode(
            input_ids, attention_mask, token_type_ids, inputs_embeds, output_hidden_states, output_attentions
        )
        return output if return_dict else output.to_tuple()


class RetroMAEForPreTraining(RetroMAEPreTrainedModel):
    """RetroMAE pre-training: the encoder's own `*ForMaskedLM` (under `lm`) + the enhanced decoder, in one model.

    The decoder shares the encoder's embedding block and masked-LM head (tied to the word embeddings), as in the
    official implementation. Masked-LM logits are computed only at labelled positions, for every architecture.
    The forward keys are exactly those produced by `RetroMAECollator`.

    Build it with `RetroMAEForPreTraining(config)` (fresh), `from_masked_lm("FacebookAI/xlm-roberta-base")` (a
    Hub or local masked-LM checkpoint: encoder and head keep their weights, the decoder starts fresh), or
    `from_pretrained` (a RetroMAE checkpoint).
    """

    # Generic tooling builds a model's inputs from this name: the first input of `forward`.
    main_input_name = "encoder_input_ids"

    def __init__(self, config: RetroMAEConfig, masked_lm: PreTrainedModel | None = None):
        super().__init__(config)
        self.lm = masked_lm if masked_lm is not None else build_masked_lm(config.encoder)
        config.encoder = self.lm.config  # one config object: attention settings and resizing reach both
        self._encoder_prefix = self.lm.base_model_prefix
        self._head_chain = _check_structure(self.lm, config.hidden_size)
        self._resolve_decoder_positions()
        self.decoder = RetroMAEDecoder(config)
        self._set_no_split_modules("RetroMAELayer")
        self.post_init()

    @classmethod
    def from_masked_lm(
        cls, name_or_path: str | os.PathLike, dtype: torch.dtype = torch.float32, **config_kwargs
    ) -> "RetroMAEForPreTraining":
        """Start RetroMAE from a masked-LM checkpoint (Hub name or folder) of any supported architecture.

        The encoder and its masked-LM head keep the checkpoint's weights; the decoder starts fresh. The
        architecture is checked before any weight is loaded. `config_kwargs` are `RetroMAEConfig` decoder fields.
        """
        encoder_config = AutoConfig.from_pretrained(name_or_path)
        config = RetroMAEConfig(encoder=encoder_config, **config_kwargs)
        check_encoder_supported(config.encoder)
        masked_lm = AutoModelForMaskedLM.from_pretrained(name_or_path, config=config.encoder, dtype=dtype)
        return cls(config, masked_lm=masked_lm)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`; a named `device_map` ("auto", "balanced", "balanced_low_0",
        "sequential") is laid out by `infer_device_map` (transformers' own inference cannot lay out this model)."""
        if kwargs.get("device_map") in INFERRED_DEVICE_MAPS:
            kwargs["device_map"] = cls.infer_device_map(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def infer_device_map(cls, pretrained_model_name_or_path, device_map: str = "auto", **kwargs) -> dict | str:
        """A device map for `from_pretrained`: the masked-LM model's own, as transformers infers it for that model,
        with the decoder on the device of the embedding block it reads (the two run back to back).

        transformers infers a map over the whole model by matching module names against tied parameters as
        substrings: our top-level `decoder` then "holds" the head's tied `lm.cls.predictions.decoder.weight`, and
        the inference fails (IndexError) for every encoder. The masked-LM model alone has no such clash.
        `kwargs` are those of `from_pretrained` (config, dtype, max_memory, hub options).
        """
        try:
            from transformers.integrations.accelerate import _get_device_map
        except ImportError:  # a transformers release without this helper: its own inference decides
            return device_map
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            hub_options = {name: kwargs[name] for name in HUB_OPTIONS if name in kwargs}
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_options)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if not isinstance(dtype, torch.dtype):  # "auto" or unset: the dtype the checkpoint was saved in
            saved = getattr(config, "dtype", None)
            dtype = getattr(torch, saved) if isinstance(saved, str) else saved
        with torch.device("meta"):  # sizes only: no memory, no weights
            model = cls(copy.deepcopy(config)).to(dtype if isinstance(dtype, torch.dtype) else torch.float32)
        try:
            lm_map = _get_device_map(model.lm, device_map, kwargs.get("max_memory"), None)
        except TypeError:  # another signature in this transformers release: its own inference decides
            return device_map
        layout = {f"lm.{name}" if name else "lm": device for name, device in lm_map.items()}
        embeddings = f"lm.{model._encoder_prefix}.embeddings"
        holders = [name for name in layout if embeddings == name or embeddings.startswith(name + ".")]
        layout["decoder"] = layout[max(holders, key=len)]
        return layout

    def _resolve_decoder_positions(self) -> None:
        has_table = absolute_position_table(self.get_encoder().embeddings, self.config.hidden_size) is not None
        if self.config.decoder_positions == "auto":
            # Written back into the config, so a saved checkpoint records the choice.
            self.config.decoder_positions = "encoder" if has_table else "learned"
        elif self.config.decoder_positions == "encoder" and not has_table:
            raise ValueError(
                f"decoder_positions='encoder' needs an absolute position table, and the "
                f"{self.config.encoder.model_type} encoder has none (its positions are rotary or relative): "
                "use decoder_positions='learned' (or 'auto')"
            )

    def get_output_embeddings(self) -> nn.Module | None:
        return self.lm.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm.set_output_embeddings(new_embeddings)

    def mlm_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of the encoder's masked-LM head for hidden states of any leading shape."""
        for name in self._head_chain:
            hidden_states = getattr(self.lm, name)(hidden_states)
        return hidden_states

    def encoder_position_embeddings(self, seq_len: int) -> torch.Tensor:
        """`[1, seq_len, H]`: the encoder's absolute position vectors for a full row, at the ids its embedding
        block gives a row without padding (0..L-1 for BERT; padding_idx+1.. for RoBERTa and XLM-R)."""
        table, offset = absolute_position_table(self.get_encoder().embeddings, self.config.hidden_size)
        position_ids = torch.arange(offset, offset + seq_len, device=table.weight.device)
        return table(position_ids)[None]

    def forward(
        self,
        encoder_input_ids: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        encoder_labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        decoder_labels: torch.Tensor | None = None,
        decoder_mask_pool: torch.Tensor | None = None,
        decoder_mask_pick: torch.Tensor | None = None,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        passage_input_ids: torch.Tensor | None = None,
        passage_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RetroMAEForPreTrainingOutput | tuple:
        """Encode, compute the encoder's masked-LM loss, then reconstruct through the enhanced decoder.

        Args:
            encoder_input_ids: `[B, L]` masked token ids for the encoder.
            encoder_attention_mask: `[B, L]` 1 for real tokens, 0 for padding.
            encoder_labels: `[B, L]` original ids at masked positions, -100 elsewhere.
            decoder_input_ids: `[B, L]` the *unmasked* ids; masking happens in the attention matrix.
            decoder_attention_mask: `[B, L, L]` 0/1, `[b, i, j] = 1` when query position `i` may see key `j` (the
                official layout; grows with L x L). Or, instead, the compact form:
            decoder_mask_pool: `[B, P, L]` bool, True where pool member `p` hides token `j`, and
            decoder_mask_pick: `[B, L]` integer, each query row's pool member (`RetroMAECollator(
                decoder_mask="compact")`); padding comes from `encoder_attention_mask`. Expanded here, block of
                `config.decoder_attention_block_size` query rows by block. With `decoding="plain"` neither is
                needed: the decoder then masks padding from `encoder_attention_mask`.
            decoder_labels: `[B, L]` ids to reconstruct, -100 where no loss is taken.
            query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask: optional stage-2
                inputs, encoded in the same forward (so DDP/FSDP see one forward per step) into
                `query_embedding` and `passage_embedding`; the contrastive loss is computed by the trainer.
            output_hidden_states, output_attentions: the encoder's hidden states (`True`, or the indices of those to
                keep) and attention weights for `encoder_input_ids`, as `RetroMAEModel` returns them; default: the
                config's flags.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # The labelled positions of both losses, found before any kernel of the step is queued: finding them waits
        # for the device (their number decides the shapes), and waiting here, once, keeps the rest of the step
        # queued back to back.
        encoder_targets = _labelled_positions(encoder_labels) if encoder_input_ids is not None else None
        decoder_targets = (
            _labelled_positions(decoder_labels)
            if encoder_input_ids is not None and decoder_input_ids is not None
            else None
        )
        # Collected first: ModelOutput only registers fields that are set when it is built.
        output: dict[str, torch.Tensor] = {}
        if encoder_input_ids is not None:
            encoded = self.encode(
                encoder_input_ids,
                attention_mask=encoder_attention_mask,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
            )
            encoder_hidden = encoded.last_hidden_state
            output.update({name: getattr(encoded, name) for name in ("hidden_states", "attentions") if name in encoded})
            output["sentence_embedding"] = encoder_hidden[:, 0]
            output["encoder_last_hidden_state"] = encoder_hidden
            if encoder_labels is not None:
                output["encoder_loss"] = self._masked_lm_loss(encoder_hidden, encoder_targets)
            if decoder_input_ids is not None:
                decoder_mask = self._decoder_mask(
                    decoder_input_ids,
                    encoder_attention_mask,
                    decoder_attention_mask,
                    decoder_mask_pool,
                    decoder_mask_pick,
                )
                decoder_hidden = self.decode(encoder_hidden[:, 0], decoder_input_ids, decoder_mask)
                output["decoder_last_hidden_state"] = decoder_hidden
                if decoder_labels is not None:
                    output["decoder_loss"] = self._masked_lm_loss(decoder_hidden, decoder_targets)
        if query_input_ids is not None:
            output["query_embedding"] = self.encode(
                query_input_ids,
                attention_mask=query_attention_mask,
                output_hidden_states=False,
                output_attentions=False,
            ).sentence_embedding
        if passage_input_ids is not None:
            output["passage_embedding"] = self.encode(
                passage_input_ids,
                attention_mask=passage_attention_mask,
                output_hidden_states=False,
                output_attentions=False,
            ).sentence_embedding
        if encoder_input_ids is None and query_input_ids is None and passage_input_ids is None:
            raise ValueError("pass the RetroMAE inputs (encoder_input_ids, ...) and/or query/passage inputs")

        losses = [output[part] for part in ("encoder_loss", "decoder_loss") if part in output]
        result = RetroMAEForPreTrainingOutput(loss=sum(losses) if losses else None, **output)
        return result if return_dict else result.to_tuple()

    def _decoder_mask(
        self,
        decoder_input_ids: torch.Tensor,
        padding: torch.Tensor | None,
        dense: torch.Tensor | None,
        pool: torch.Tensor | None,
        pick: torch.Tensor | None,
    ) -> "torch.Tensor | CompactDecoderMask":
        """The decoder's mask from whichever form the batch carries: dense `[B, L, L]`, compact, or (plain
        decoding) none at all."""
        real = padding.bool() if padding is not None else torch.ones_like(decoder_input_ids, dtype=torch.bool)
        mask = decoder_mask_from(dense, pool, pick, real, self.config.decoder_attention_block_size)
        if mask is not None:
            return mask
        if self.config.decoding == "plain":
            return real  # a key padding mask: plain decoding has no position-specific mask
        raise ValueError(
            "decoder_input_ids needs its mask: decoder_attention_mask [batch, seq, seq], or decoder_mask_pool "
            "[batch, pool, seq] with decoder_mask_pick [batch, seq] (RetroMAECollator(decoder_mask='compact'))"
        )

    def decode(
        self,
        sentence_embedding: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: "torch.Tensor | CompactDecoderMask",
    ) -> torch.Tensor:
        """Run the decoder from the encoder's `[B, H]` sentence vector; returns `[B, L, H]`."""
        embeddings = self.get_encoder().embeddings
        seq_len = decoder_input_ids.shape[1]
        content = embeddings(input_ids=decoder_input_ids)
        positions, query_stream = None, None
        if self.config.decoder_positions == "encoder":
            positions = self.encoder_position_embeddings(seq_len)
        if self.config.decoding == "enhanced" and self.config.query_stream == "embeddings":
            repeated = sentence_embedding[:, None, :].expand(-1, seq_len, -1)
            if self.config.decoder_positions == "learned":
                repeated = repeated + self.decoder.learned_positions(seq_len)
            query_stream = embeddings(inputs_embeds=repeated)
        return self.decoder(sentence_embedding, content, positions, decoder_attention_mask, query_stream)

    def _masked_lm_loss(
        self, hidden_states: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor | None:
        """Cross-entropy of the masked-LM head at the labelled positions only (`_labelled_positions`)."""
        if targets is None:
            return None
        index, labels = targets
        if index.numel() == 0:  # no labelled token: a zero that still reaches every parameter (no NaN)
            return hidden_states.sum() * 0.0
        # Project only the labelled positions: the vocabulary projection is the costliest matmul of the step.
        selected = hidden_states.flatten(0, 1).index_select(0, index)
        if self.config.fused_cross_entropy and selected.is_cuda:
            fused = self._fused_loss(selected, labels)
            if fused is not None:
                return fused
        return chunked_cross_entropy(
            selected, labels, self.mlm_logits, self.config.loss_chunk_size, self.get_output_embeddings()
        )

    def _fused_loss(self, selected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """The loss through a fused linear-cross-entropy kernel, or None when none is installed or the head's
        last step is not a plain linear projection (the chunked path then runs)."""
        kernel = fused_linear_cross_entropy_kernel()
        projection = self.get_output_embeddings()
        if kernel is None or not isinstance(projection, nn.Linear):
            if not getattr(self, "_warned_fused", False):
                logger.warning(
                    "fused_cross_entropy: no fused kernel (install liger-kernel or cut-cross-entropy) or the head does "
                    "not end in a linear projection; using the chunked cross-entropy"
                )
                self._warned_fused = True
            return None
        features = head_features(self.mlm_logits, projection, selected)
        return kernel(features, projection.weight, labels, projection.bias)


def chunked_cross_entropy(
    hidden_states: torch.Tensor,
    labels: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int | None = DEFAULT_LOSS_CHUNK_SIZE,
    projection: nn.Module | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `head(hidden_states)` (vocabulary logits) against `labels`, chunk of tokens by chunk.

    Args:
        hidden_states: `[N, H]` the positions that carry a label (no -100 among `labels`).
        labels: `[N]` target ids.
        head: maps `[n, H]` to `[n, V]` logits (the masked-LM head, reused as it is).
        chunk_size: tokens per chunk; `0` / `None` (or N at most one chunk) projects everything at once, as before.
        projection: the head's final vocabulary projection (`nn.Linear`), when known.

    With `projection`, the head runs up to its projection for all N tokens (`[N, H]`), and the projection and the
    loss run chunk by chunk in `LinearCrossEntropy`, which computes the gradients while it has each chunk's
    logits: no `[N, V]` tensor and no second projection in backward, so it costs what the unchunked loss costs.
    Without it, each chunk is checkpointed and backward recomputes its logits (one more projection). Values equal
    the unchunked computation up to float summation order.
    """
    total = labels.numel()
    if not chunk_size or total <= chunk_size:
        return F.cross_entropy(head(hidden_states).float(), labels)
    if isinstance(projection, nn.Linear):
        features = head_features(head, projection, hidden_states)
        if not torch.is_grad_enabled():  # evaluation: `LinearCrossEntropy` would take gradients nobody asked for
            return linear_cross_entropy_value(features, projection.weight, projection.bias, labels, chunk_size)
        return LinearCrossEntropy.apply(features, projection.weight, projection.bias, labels, chunk_size)

    def chunk_loss(states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(states).float(), targets, reduction="sum")

    recompute = torch.is_grad_enabled()
    loss = None
    for start in range(0, total, chunk_size):
        states, targets = hidden_states[start : start + chunk_size], labels[start : start + chunk_size]
        part = (
            checkpoint(chunk_loss, states, targets, use_reentrant=False) if recompute else chunk_loss(states, targets)
        )
        loss = part if loss is None else loss + part
    return loss / total


def linear_cross_entropy_value(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """The value `LinearCrossEntropy` computes, chunk by chunk, and nothing else: one projection per chunk and no
    gradient work. For evaluation (`torch.no_grad()`, `torch.inference_mode()`), where autograd would discard the
    gradients that `LinearCrossEntropy.forward` takes (its `needs_input_grad` follows the inputs' `requires_grad`,
    not the grad mode)."""
    loss = torch.zeros((), dtype=torch.float32, device=features.device)
    for start in range(0, labels.numel(), chunk_size):
        logits = F.linear(features[start : start + chunk_size], weight, bias).float()
        targets = labels[start : start + chunk_size]
        loss += (torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None]).squeeze(1)).sum()
    return loss / labels.numel()


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `features @ weight.T + bias` against `labels`, over chunks of `chunk_size` tokens.

    The gradients with respect to features, weight and bias are computed in forward, chunk by chunk, while each
    chunk's `[chunk, V]` logits exist (softmax minus one-hot, divided by N); backward only scales them by the
    incoming gradient. Memory: one chunk of logits plus one weight-sized gradient, never `[N, V]`; compute: the
    three matrix products of an ordinary projection's forward and backward, none repeated. It takes the gradients
    whenever an input requires them, also without grad mode: `chunked_cross_entropy` calls
    `linear_cross_entropy_value` instead there.
    """

    @staticmethod
    def forward(ctx, features, weight, bias, labels, chunk_size):
        total = labels.numel()
        needs = ctx.needs_input_grad
        grad_features = torch.empty_like(features) if needs[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs[1] else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and needs[2] else None
        loss = torch.zeros((), dtype=torch.float32, device=features.device)
        for start in range(0, total, chunk_size):
            chunk, targets = features[start : start + chunk_size], labels[start : start + chunk_size]
            logits = F.linear(chunk, weight, bias).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            loss += (log_norm - logits.gather(1, targets[:, None]).squeeze(1)).sum()
            if grad_features is None and grad_weight is None and grad_bias is None:
                continue
            # d(sum of losses)/d(logits) = softmax - one_hot; divided by N for the mean.
            grad_logits = logits.sub_(log_norm[:, None]).exp_()
            grad_logits[torch.arange(len(targets), device=targets.device), targets] -= 1.0
            grad_logits /= total
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(weight.dtype)
            if grad_features is not None:
                grad_features[start : start + chunk_size] = (grad_logits @ weight).to(features.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.t() @ chunk.to(weight.dtype)).float()
        ctx.save_for_backward(
            *(t if t is not None else torch.empty(0) for t in (grad_features, grad_weight, grad_bias))
        )
        ctx.present = (grad_features is not None, grad_weight is not None, grad_bias is not None)
        ctx.dtypes = (features.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss / total

    @staticmethod
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        grads = [
            (grad * grad_output).to(dtype) if present else None
            for grad, present, dtype in zip(saved, ctx.present, ctx.dtypes, strict=True)
        ]
        return grads[0], grads[1], grads[2], None, None


class _HeadFeatures(Exception):
    """Carries the input of the head's final projection out of the head (see `head_features`)."""

    def __init__(self, features: torch.Tensor):
        super().__init__("head features")
        self.features = features


def head_features(
    head: Callable[[torch.Tensor], torch.Tensor], projection: nn.Module, hidden_states: torch.Tensor
) -> torch.Tensor:
    """What the masked-LM head feeds its final vocabulary projection, without computing the projection.

    Architectures arrange their heads differently (BERT `transform` + `decoder`, RoBERTa `dense`/`layer_norm` +
    `decoder`, ModernBERT `head` + `decoder`); running the head and stopping at the projection's input works for
    all of them without knowing their layout.
    """

    def stop(module: nn.Module, args: tuple) -> None:
        raise _HeadFeatures(args[0])

    handle = projection.register_forward_pre_hook(stop)
    try:
        head(hidden_states)
    except _HeadFeatures as found:
        return found.features
    finally:
        handle.remove()
    raise RuntimeError("the masked-LM head never applied its output projection")


def fused_linear_cross_entropy_kernel() -> Callable | None:
    """`(features, weight, labels, bias) -> mean loss` from liger-kernel or cut-cross-entropy, or None."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        pass
    else:

        def liger(features, weight, labels, bias):
            return liger_fused_linear_cross_entropy(features, weight, labels, bias=bias, reduction="mean")

        return liger
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError:
        return None

    def cut(features, weight, labels, bias):
        if bias is None:
            return linear_cross_entropy(features, weight, labels, reduction="mean")
        return linear_cross_entropy(features, weight, labels, bias=bias, reduction="mean")

    return cut


def _labelled_positions(labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`(flat indices of the labelled positions, their labels)`, or None without labels."""
    if labels is None:
        return None
    flat = labels.flatten()
    index = (flat != IGNORE_INDEX).nonzero().squeeze(1)
    return index, flat.index_select(0, index)


__all__ = [
    "CompactDecoderMask",
    "LinearCrossEntropy",
    "RetroMAEDecoder",
    "RetroMAEForPreTraining",
    "RetroMAEForPreTrainingOutput",
    "RetroMAEModel",
    "RetroMAEModelOutput",
    "RetroMAEPreTrainedModel",
    "UnsupportedEncoderError",
    "check_encoder_supported",
    "chunked_cross_entropy",
    "decoder_mask_from",
    "expand_decoder_mask",
    "linear_cross_entropy_value",
]
