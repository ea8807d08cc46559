"""Configuration of a RetroMAE model: a BERT encoder plus the enhanced decoder of RetroMAE.

This file is shipped to the Hub beside the weights (remote code), so it imports only transformers.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

QUERY_STREAMS = ("position", "embeddings")
DECODINGS = ("enhanced", "plain")
# The fields RetroMAEConfig shares with BertConfig (converting checkpoints, exporting the encoder as BERT).
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
)


@strict
class RetroMAEConfig(PreTrainedConfig):
    r"""Configuration for [`RetroMAEModel`] and [`RetroMAEForPreTraining`].

    The encoder fields are those of `BertConfig`, so a BERT checkpoint's config converts one to one. The
    decoder fields describe the enhanced decoder of RetroMAE (Xiao et al., 2022; arXiv 2205.12035).

    Args:
        num_decoder_layers: Number of enhanced-decoding layers. The paper and the official code use one.
        query_stream: How the decoder's query stream is built from the encoder's [CLS] vector `h`:
            - `"position"` (the paper and `staoxiao/RetroMAE`): `h + position_embeddings(0..L-1)`;
            - `"embeddings"` (`FlagOpen/FlagEmbedding`): `LayerNorm(h + token_type_embeddings[0] +
              position_embeddings(0..L-1))`, i.e. the encoder's embedding block applied to the repeated `h`.

    Example:
        ```python
        >>> from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining
        >>> config = RetroMAEConfig(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024)
        >>> model = RetroMAEForPreTraining(config)
        ```
    """

    model_type = "retromae"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    num_decoder_layers: int = 1
    query_stream: str = "position"
    decoding: str = "enhanced"

    def __post_init__(self, **kwargs):
        # Checked here rather than in a `validate_*` hook: those wrap errors in a non-`ValueError` exception.
        if self.query_stream not in QUERY_STREAMS:
            raise ValueError(f"query_stream must be one of {QUERY_STREAMS}, got {self.query_stream!r}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers must be at least 1, got {self.num_decoder_layers}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        super().__post_init__(**kwargs)


__all__ = ["RetroMAEConfig"]
