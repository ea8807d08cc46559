"""PyTorch RetroMAE: a BERT encoder whose [CLS] vector must let a shallow decoder rebuild the input.

RetroMAE (Xiao et al., EMNLP 2022, arXiv 2205.12035) pre-trains a retrieval encoder with a masked auto-encoder.
The encoder reads a moderately masked sentence (15-30%) and is trained with masked language modelling; its last
layer's [CLS] vector is the sentence embedding. A one-layer decoder then reconstructs a far more heavily masked
copy (50-70%) from that vector alone, through *enhanced decoding*:

- the **query stream** is built from the [CLS] vector and the position embeddings only, so it carries no token;
- the **content stream** is the [CLS] vector followed by the (unmasked) token embeddings of the sentence;
- the query stream attends to the content stream through a **position-specific attention mask** sampled per row,
  in which every position hides itself, so each token is predicted from [CLS] plus a different random context.

The encoder's parameter names are those of `BertModel`, so its weights export to plain BERT unchanged.

This file is shipped to the Hub beside the weights (remote code): it imports only torch, transformers and the
configuration file next to it.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_retromae import RetroMAEConfig

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
# Written into every saved config, so that any Auto class loads any RetroMAE checkpoint as remote code.
AUTO_MAP = {
    "AutoConfig": "configuration_retromae.RetroMAEConfig",
    "AutoModel": "modeling_retromae.RetroMAEModel",
    "AutoModelForPreTraining": "modeling_retromae.RetroMAEForPreTraining",
}


@dataclass
class RetroMAEModelOutput(ModelOutput):
    """Output of [`RetroMAEModel`].

    Args:
        last_hidden_state: `[batch, seq_len, hidden]`, the encoder's last layer.
        sentence_embedding: `[batch, hidden]`, the last layer's [CLS] vector (no pooler, no projection).
        hidden_states: the embedding output and every layer's output, when `output_hidden_states=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


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
    """

    loss: torch.FloatTensor | None = None
    encoder_loss: torch.FloatTensor | None = None
    decoder_loss: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    decoder_last_hidden_state: torch.FloatTensor | None = None
    query_embedding: torch.FloatTensor | None = None
    passage_embedding: torch.FloatTensor | None = None


def write_sentence_transformers_files(save_directory: str | os.PathLike, config: RetroMAEConfig) -> None:
    """Describe the folder to sentence-transformers: the encoder, then [CLS] pooling (RetroMAE's embedding).

    Without these files `SentenceTransformer(folder)` would fall back to mean pooling. The legacy file layout is
    used because every sentence-transformers release reads it.
    """
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling = {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    files = {
        "modules.json": modules,
        os.path.join("1_Pooling", "config.json"): pooling,
        "sentence_bert_config.json": {"max_seq_length": config.max_position_embeddings, "do_lower_case": False},
        "config_sentence_transformers.json": {"similarity_fn_name": "dot"},
    }
    for name, content in files.items():
        path = os.path.join(save_directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)


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


class RetroMAEEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout (BERT's embedding block)."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_len = inputs_embeds.shape[1]
        if seq_len > self.position_ids.shape[1]:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings={self.position_ids.shape[1]}; "
                "truncate the input (the collator's max_length) to at most that"
            )
        if token_type_ids is None:
            token_type = self.token_type_embeddings.weight[0]
        else:
            token_type = self.token_type_embeddings(token_type_ids)
        embeddings = inputs_embeds + token_type + self.position_embeddings(self.position_ids[:, :seq_len])
        return self.dropout(self.LayerNorm(embeddings))


class RetroMAEAttention(nn.Module):
    """Multi-head attention whose keys and values may come from another stream than its queries."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        key_value_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if key_value_states is None:
            key_value_states = hidden_states
        batch, q_len, _ = hidden_states.shape
        kv_len = key_value_states.shape[1]
        query = self.query(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.key(key_value_states).view(batch, kv_len, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.value(key_value_states).view(batch, kv_len, self.num_heads, self.head_dim).transpose(1, 2)

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, _ = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=False,
        )
        return output.reshape(batch, q_len, -1)


class RetroMAEResidualOutput(nn.Module):
    """Projection, dropout, residual add, LayerNorm: the output of both sub-layers of a post-LN BERT layer."""

    def __init__(self, config: RetroMAEConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

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
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class RetroMAELayer(GradientCheckpointingLayer):
    """A post-LayerNorm transformer layer (BERT's). With `key_value_states` it is an enhanced-decoding layer:
    queries from the query stream, keys and values from the content stream."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.attention = RetroMAEAttentionBlock(config)
        self.intermediate = RetroMAEIntermediate(config)
        self.output = RetroMAEResidualOutput(config, config.intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        key_value_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attended = self.attention(hidden_states, attention_mask, key_value_states)
        return self.output(self.intermediate(attended), attended)


class RetroMAEEncoder(nn.Module):
    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.layer = nn.ModuleList([RetroMAELayer(config) for _ in range(config.num_hidden_layers)])


class RetroMAEDecoder(nn.Module):
    """The enhanced decoder: `num_decoder_layers` layers; each refines the query stream against the same content
    stream (with one layer, as in the paper, this is exactly the official `c_head`)."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.layers = nn.ModuleList([RetroMAELayer(config) for _ in range(config.num_decoder_layers)])

    def forward(self, query: torch.Tensor, content: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            query = layer(query, attention_mask, content)
        return query


class RetroMAEPredictionHeadTransform(nn.Module):
    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class RetroMAELMPredictionHead(nn.Module):
    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.transform = RetroMAEPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class RetroMAEOnlyMLMHead(nn.Module):
    """The masked-LM head, named as BERT's (`cls.predictions.*`) so `BertForMaskedLM` weights load directly."""

    def __init__(self, config: RetroMAEConfig):
        super().__init__()
        self.predictions = RetroMAELMPredictionHead(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden_states)


class RetroMAEPreTrainedModel(PreTrainedModel):
    config_class = RetroMAEConfig
    config: RetroMAEConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["RetroMAEEmbeddings", "RetroMAELayer"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records only the saved class's own Auto class; the encoder of a pre-training checkpoint
        # must load through AutoModel too.
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_sentence_transformers_files(save_directory, self.config)
        return result

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RetroMAELMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, RetroMAEEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


class RetroMAEModel(RetroMAEPreTrainedModel):
    """The RetroMAE encoder alone: a BERT encoder (no pooler) whose sentence embedding is the last layer's [CLS].

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

    # Loading the encoder from a pre-training checkpoint leaves its decoder and MLM head behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^cls\."]

    def __init__(self, config: RetroMAEConfig):
        super().__init__(config)
        self.embeddings = RetroMAEEmbeddings(config)
        self.encoder = RetroMAEEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RetroMAEModelOutput | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        hidden_states = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)
        mask = None if attention_mask is None else additive_attention_mask(attention_mask, hidden_states.dtype)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.encoder.layer:
            hidden_states = layer(hidden_states, mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

        output = RetroMAEModelOutput(
            last_hidden_state=hidden_states,
            sentence_embedding=hidden_states[:, 0],
            hidden_states=all_hidden_states,
        )
        return output if return_dict else output.to_tuple()


class RetroMAEForPreTraining(RetroMAEPreTrainedModel):
    """RetroMAE pre-training: encoder + masked-LM head + enhanced decoder, in one model.

    The decoder shares the encoder's embedding block and masked-LM head, and the head's output projection is tied
    to the word embeddings, as in the official implementation; being one `PreTrainedModel`, the tying survives
    `save_pretrained`/`from_pretrained`. The forward keys are exactly those produced by `RetroMAECollator`.
    """

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: RetroMAEConfig):
        super().__init__(config)
        self.bert = RetroMAEModel(config)
        self.cls = RetroMAEOnlyMLMHead(config)
        self.decoder = RetroMAEDecoder(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        encoder_input_ids: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        encoder_labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        decoder_labels: torch.Tensor | None = None,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        passage_input_ids: torch.Tensor | None = None,
        passage_attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RetroMAEForPreTrainingOutput | tuple:
        """Encode, compute the encoder's masked-LM loss, then reconstruct through the enhanced decoder.

        Args:
            encoder_input_ids: `[B, L]` masked token ids for the encoder.
            encoder_attention_mask: `[B, L]` 1 for real tokens, 0 for padding.
            encoder_labels: `[B, L]` original ids at masked positions, -100 elsewhere.
            decoder_input_ids: `[B, L]` the *unmasked* ids; masking happens in the attention matrix.
            decoder_attention_mask: `[B, L, L]` 0/1, `[b, i, j] = 1` when query position `i` may see key `j`.
            decoder_labels: `[B, L]` ids to reconstruct, -100 where no loss is taken.
            query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask: optional stage-2
                inputs, encoded in the same forward (so DDP/FSDP see one forward per step) into
                `query_embedding` and `passage_embedding`; the contrastive loss is computed by the trainer.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # Collected first: ModelOutput only registers fields that are set when it is built.
        output: dict[str, torch.Tensor] = {}
        if encoder_input_ids is not None:
            encoded = self.bert(encoder_input_ids, attention_mask=encoder_attention_mask, return_dict=True)
            encoder_hidden = encoded.last_hidden_state
            output["sentence_embedding"] = encoder_hidden[:, 0]
            output["encoder_last_hidden_state"] = encoder_hidden
            if encoder_labels is not None:
                output["encoder_loss"] = self._masked_lm_loss(encoder_hidden, encoder_labels)
            if decoder_input_ids is not None:
                if decoder_attention_mask is None:
                    raise ValueError("decoder_input_ids needs its [batch, seq, seq] decoder_attention_mask")
                decoder_hidden = self.decode(encoder_hidden[:, :1], decoder_input_ids, decoder_attention_mask)
                output["decoder_last_hidden_state"] = decoder_hidden
                if decoder_labels is not None:
                    output["decoder_loss"] = self._masked_lm_loss(decoder_hidden, decoder_labels)
        if query_input_ids is not None:
            output["query_embedding"] = self.bert(
                query_input_ids, attention_mask=query_attention_mask
            ).sentence_embedding
        if passage_input_ids is not None:
            output["passage_embedding"] = self.bert(
                passage_input_ids, attention_mask=passage_attention_mask
            ).sentence_embedding
        if encoder_input_ids is None and query_input_ids is None and passage_input_ids is None:
            raise ValueError("pass the RetroMAE inputs (encoder_input_ids, ...) and/or query/passage inputs")

        losses = [output[part] for part in ("encoder_loss", "decoder_loss") if part in output]
        result = RetroMAEForPreTrainingOutput(loss=sum(losses) if losses else None, **output)
        return result if return_dict else result.to_tuple()

    def decode(
        self, cls_hidden: torch.Tensor, decoder_input_ids: torch.Tensor, decoder_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Run enhanced decoding from the encoder's `[B, 1, H]` [CLS] vector; returns `[B, L, H]`."""
        embeddings = self.bert.embeddings
        seq_len = decoder_input_ids.shape[1]
        # Content stream: [CLS] vector in place of the [CLS] token, then the sentence's own token embeddings.
        content = torch.cat([cls_hidden, embeddings(input_ids=decoder_input_ids)[:, 1:]], dim=1)
        if self.config.decoding == "plain":  # ablation: ordinary self-attention over the masked sentence
            mask = additive_attention_mask(decoder_attention_mask, content.dtype)
            hidden = content
            for layer in self.decoder.layers:
                hidden = layer(hidden, mask)
            return hidden
        if self.config.query_stream == "position":
            query = embeddings.position_embeddings(embeddings.position_ids[:, :seq_len]) + cls_hidden
        else:
            query = embeddings(inputs_embeds=cls_hidden.expand(-1, seq_len, -1))
        mask = additive_attention_mask(decoder_attention_mask, query.dtype)
        return self.decoder(query, content, mask)

    def _masked_lm_loss(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Project only the labelled positions: the vocabulary projection is the costliest matmul of the step.
        selected = labels != IGNORE_INDEX
        targets = labels[selected]
        if targets.numel() == 0:
            return hidden_states.sum() * 0.0
        logits = self.cls(hidden_states[selected])
        return F.cross_entropy(logits.float(), targets)


__all__ = [
    "RetroMAEForPreTraining",
    "RetroMAEForPreTrainingOutput",
    "RetroMAEModel",
    "RetroMAEModelOutput",
    "RetroMAEPreTrainedModel",
]
