"""Configuration of a RetroMAE model: any transformers masked-LM encoder plus the enhanced decoder of RetroMAE.

The shape follows transformers' own composite configs (`EncoderDecoderConfig`): the encoder's configuration is
kept whole as a sub-config (`encoder`, a `BertConfig`, `XLMRobertaConfig`, `ModernBertConfig`, ...), and the
fields of this class describe only the decoder.

This file is shipped to the Hub beside the weights (remote code), so it imports only transformers.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

# Recent transformers 5 builds sub-configs from dicts in the base class (`sub_configs_defaults`); with earlier
# releases (e.g. 5.17) `RetroMAEConfig.__post_init__` builds its encoder config itself.
try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:
    SubConfigSpec = None

QUERY_STREAMS = ("position", "embeddings")
DECODINGS = ("enhanced", "plain")
DECODER_POSITIONS = ("auto", "encoder", "learned")
# The fields of a RetroMAE config written by retromae-hf 0.1, which held a BERT encoder's fields at its top level.
# Such a config is read as `encoder=BertConfig(<these fields>)` (see `RetroMAEConfig`).
BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "tie_word_embeddings",
)
# The encoder's fields a `RetroMAEConfig` reads (and writes) through to its encoder's config, as properties.
ENCODER_PROPERTIES = ("hidden_size", "vocab_size", "max_position_embeddings")
# Where each decoder setting is read from the encoder's config when it is not given: the first name the encoder's
# config has. Architectures name the same thing differently (BERT `hidden_act`, ModernBERT `hidden_activation`).
_DECODER_DEFAULTS_FROM_ENCODER: dict[str, tuple[tuple[str, ...], Any]] = {
    "decoder_num_attention_heads": (("num_attention_heads", "encoder_attention_heads", "n_heads"), None),
    "decoder_intermediate_size": (("intermediate_size", "encoder_ffn_dim", "hidden_dim"), None),
    "decoder_hidden_act": (("hidden_act", "hidden_activation", "activation", "activation_function"), "gelu"),
    "decoder_hidden_dropout_prob": (("hidden_dropout_prob", "mlp_dropout", "hidden_dropout", "dropout"), 0.1),
    "decoder_attention_probs_dropout_prob": (
        ("attention_probs_dropout_prob", "attention_dropout", "attention_probs_dropout"),
        0.1,
    ),
    "decoder_layer_norm_eps": (("layer_norm_eps", "norm_eps", "layer_norm_epsilon"), 1e-12),
    "decoder_initializer_range": (("initializer_range", "init_std"), 0.02),
}


def _first_attribute(config: PreTrainedConfig, names: tuple[str, ...], default: Any) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


@strict
class RetroMAEConfig(PreTrainedConfig):
    r"""Configuration for [`RetroMAEModel`] and [`RetroMAEForPreTraining`].

    A composite configuration, as transformers' `EncoderDecoderConfig`: `encoder` is the encoder's own
    configuration (any architecture with a masked-LM head: `bert`, `roberta`, `xlm-roberta`, `modernbert`, ...),
    and the other fields describe the enhanced decoder of RetroMAE (Xiao et al., 2022; arXiv 2205.12035).
    The decoder's layer sizes default to the encoder's (its hidden size always is the encoder's).

    Args:
        encoder: the encoder's config, or a dict with its `model_type` (default: a `bert-base` shape).
        num_decoder_layers: Number of enhanced-decoding layers. The paper and the official code use one.
        decoding: `"enhanced"` (the paper) or `"plain"` (its ablation: self-attention over a masked copy).
        query_stream: How the decoder's query stream is built from the encoder's sentence vector `h`:
            - `"position"` (the paper and `staoxiao/RetroMAE`): `h + p(0..L-1)`;
            - `"embeddings"` (`FlagOpen/FlagEmbedding`): the encoder's embedding block applied to the repeated
              `h` (for BERT: `LayerNorm(h + token_type_embeddings[0] + position_embeddings(0..L-1))`).
        decoder_positions: Where the position vectors `p` of the decoder come from:
            - `"encoder"`: the encoder's own absolute position table, as the official code does for BERT (for
              RoBERTa and XLM-R, at the positions their embedding block uses, which start after `padding_idx`);
            - `"learned"`: the decoder's own learned table of `encoder.max_position_embeddings` rows, added to the
              query stream and to the content stream (whose token embeddings carry no position in a rotary
              encoder such as ModernBERT). It belongs to the decoder, so it is discarded with it at export;
            - `"auto"` (default): `"encoder"` when the encoder has an absolute position table, else `"learned"`;
              resolved when the pre-training model is built, which writes the choice back into this config.
        loss_chunk_size: tokens per chunk of the vocabulary projection and cross-entropy of both losses (default
            4096): at most one chunk of `[tokens, vocab]` logits is alive; the gradients of the final projection are
            taken chunk by chunk in forward (`LinearCrossEntropy`), so nothing is projected twice.
            `0` or `None`: one unchunked projection (the layout before chunking; identical values).
        fused_cross_entropy: on CUDA, compute both losses with a fused linear-cross-entropy kernel when
            `liger-kernel` or `cut-cross-entropy` is installed (`pip install retromae-hf[fused]`); otherwise, and
            on other devices, the chunked path is used.
        decoder_attention_block_size: query rows per block when the decoder expands a compact mask
            (`decoder_mask_pool` / `decoder_mask_pick`): at most `[batch, block, L]` of mask and scores exist at once,
            and blocks are recomputed in backward when there are several.
        decoder_num_attention_heads, decoder_intermediate_size, decoder_hidden_act, decoder_hidden_dropout_prob,
        decoder_attention_probs_dropout_prob, decoder_layer_norm_eps, decoder_initializer_range: the decoder
            layers' settings; `None` takes the encoder's value (read once, when the config is built).

    Configs written by retromae-hf 0.1 held a BERT encoder's fields (`hidden_size`, `vocab_size`, ...) at their
    top level. They still load: those fields become `encoder=BertConfig(...)`, and saving writes the new layout.
    The same shorthand works in code: `RetroMAEConfig(hidden_size=256, num_hidden_layers=4, ...)` is a BERT encoder.
    With an `encoder` given, `hidden_size`, `vocab_size` and `max_position_embeddings` read and write the encoder's
    values, and any other field set at the top level stays there (saved and read back like any extra field).

    Example:
        ```python
        >>> from transformers import AutoConfig
        >>> from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining
        >>> encoder = AutoConfig.for_model("modernbert", hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        ...                                intermediate_size=384)
        >>> model = RetroMAEForPreTraining(RetroMAEConfig(encoder=encoder))  # decoder_positions -> "learned"
        ```
    """

    model_type = "retromae"
    if SubConfigSpec is not None:
        sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    else:
        sub_configs = {"encoder": AutoConfig}

    encoder: PreTrainedConfig | dict | None = None
    num_decoder_layers: int = 1
    decoding: str = "enhanced"
    query_stream: str = "position"
    decoder_positions: str = "auto"
    decoder_num_attention_heads: int | None = None
    decoder_intermediate_size: int | None = None
    decoder_hidden_act: str | None = None
    decoder_hidden_dropout_prob: float | int | None = None
    decoder_attention_probs_dropout_prob: float | int | None = None
    decoder_layer_norm_eps: float | None = None
    decoder_initializer_range: float | None = None
    loss_chunk_size: int | None = 4096
    fused_cross_entropy: bool = False
    decoder_attention_block_size: int = 512

    def __post_init__(self, **kwargs):
        # The encoder's sizes read through to it (see the properties below): set here, they are the encoder's.
        through = {name: kwargs.pop(name) for name in ENCODER_PROPERTIES if name in kwargs}
        if self.encoder is None:
            legacy = {name: kwargs.pop(name) for name in BERT_FIELDS if name in kwargs}
            if legacy or through:
                # A retromae-hf 0.1 config (or the BERT shorthand): its BERT fields become the encoder's config.
                self.encoder = {"model_type": "bert", **legacy, **through}
                through = {}
        # With an `encoder`, any other field set at the top level (transformers' tests set `layer_norm_eps`, PEFT
        # and tying code `tie_word_embeddings`) is kept there like any extra field, so a saved config reads back.
        if isinstance(self.encoder, dict) and "model_type" not in self.encoder:
            raise ValueError("RetroMAEConfig(encoder={...}) needs the encoder's `model_type` (e.g. 'xlm-roberta')")
        if SubConfigSpec is None and not isinstance(self.encoder, PreTrainedConfig):
            fields = dict(self.encoder or {"model_type": "bert"})
            self.encoder = AutoConfig.for_model(fields.pop("model_type"), **fields)
        # Checked here rather than in a `validate_*` hook: those wrap errors in a non-`ValueError` exception.
        if self.query_stream not in QUERY_STREAMS:
            raise ValueError(f"query_stream must be one of {QUERY_STREAMS}, got {self.query_stream!r}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.decoder_positions not in DECODER_POSITIONS:
            raise ValueError(f"decoder_positions must be one of {DECODER_POSITIONS}, got {self.decoder_positions!r}")
        if self.loss_chunk_size is not None and self.loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size must be >= 0 (0 or None: unchunked), got {self.loss_chunk_size}")
        if self.decoder_attention_block_size < 1:
            raise ValueError(
                f"decoder_attention_block_size must be at least 1, got {self.decoder_attention_block_size}"
            )
        if self.num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers must be at least 1, got {self.num_decoder_layers}")
        super().__post_init__(**kwargs)
        for name, value in through.items():
            setattr(self.encoder, name, value)
        for name, (sources, default) in _DECODER_DEFAULTS_FROM_ENCODER.items():
            if getattr(self, name) is None:
                setattr(self, name, _first_attribute(self.encoder, sources, default))
        if self.decoder_num_attention_heads is None:
            raise ValueError(
                f"the {self.encoder.model_type} config names no number of attention heads: set "
                "decoder_num_attention_heads"
            )
        if self.decoder_intermediate_size is None:
            self.decoder_intermediate_size = 4 * self.hidden_size
        if self.hidden_size % self.decoder_num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of the decoder's num_attention_heads "
                f"({self.decoder_num_attention_heads})"
            )

    # The encoder's sizes, read through: the decoder works at the encoder's width, and code written for the BERT
    # layout (collators, exports) reads them here.
    # Setting one sets the encoder's (tools that resize a vocabulary set `config.vocab_size`); they are never
    # written at the top level of a saved config.
    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @hidden_size.setter
    def hidden_size(self, value: int) -> None:
        self.encoder.hidden_size = value

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    @vocab_size.setter
    def vocab_size(self, value: int) -> None:
        self.encoder.vocab_size = value

    @property
    def max_position_embeddings(self) -> int | None:
        return getattr(self.encoder, "max_position_embeddings", None)

    @max_position_embeddings.setter
    def max_position_embeddings(self, value: int) -> None:
        self.encoder.max_position_embeddings = value

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The encoder's config: it owns the vocabulary, the special tokens and the embeddings."""
        return self.encoder


__all__ = ["RetroMAEConfig"]
