"""Tiny encoders of every tested architecture, each paired with a tokenizer of its own family and layout.

| architecture | tokenizer (tests/tokenizers_for_tests.py) | special tokens | positions |
|---|---|---|---|
| `bert` | WordPiece | `[CLS] ... [SEP]` | absolute, from 0 |
| `roberta` | byte-level BPE (`Ġ`) | `<s> ... </s>` | absolute, from `pad_token_id + 1` |
| `xlm-roberta` | Unigram (`▁`) | `<s> ... </s>` | absolute, from `pad_token_id + 1` |
| `modernbert` | byte-level BPE (`Ġ`) | `[CLS] ... [SEP]` | rotary (none in the embeddings) |

    from encoders_for_tests import ARCHITECTURES, tiny_encoder_config, save_tiny_masked_lm
    tokenizer = trained_tokenizer(*ARCHITECTURES["xlm-roberta"])    # the conftest fixture
    config = tiny_encoder_config("xlm-roberta", tokenizer)
"""

from __future__ import annotations

import os
from pathlib import Path

# architecture -> (tokenizer kind, layout) for the `trained_tokenizer` fixture.
ARCHITECTURES = {
    "bert": ("wordpiece", None),
    "roberta": ("bpe", None),
    "xlm-roberta": ("unigram", None),
    "modernbert": ("bpe", "bert"),
}
MAX_LENGTH = 64  # the longest input every tiny encoder takes, special tokens included


def tiny_encoder_config(architecture: str, tokenizer, dropout: float = 0.0, **overrides):
    """A two-layer, 32-wide config of `architecture`, sized to `tokenizer` and taking `MAX_LENGTH` tokens."""
    from transformers import AutoConfig

    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    if architecture == "modernbert":
        # Layer 0 global, layer 1 local with a window shorter than the inputs: both attention kinds run.
        shape.update(
            max_position_embeddings=MAX_LENGTH,
            global_attn_every_n_layers=2,
            local_attention=16,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            attention_dropout=dropout,
            mlp_dropout=dropout,
            embedding_dropout=dropout,
        )
    else:
        # RoBERTa-style position ids start after the padding row, so their tables are longer by that offset.
        offset = tokenizer.pad_token_id + 1 if architecture in ("roberta", "xlm-roberta") else 0
        shape.update(
            max_position_embeddings=MAX_LENGTH + offset,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
    shape.update(overrides)
    return AutoConfig.for_model(architecture, **shape)


def save_tiny_masked_lm(architecture: str, tokenizer, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a freshly initialised `*ForMaskedLM` of `architecture` with its tokenizer: a stand-in for a Hub
    checkpoint folder."""
    import torch
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(tiny_encoder_config(architecture, tokenizer, dropout=0.1))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def rewrite_in_the_0_1_layout(folder: str | os.PathLike) -> None:
    """Turn a saved BERT RetroMAE checkpoint into the layout retromae-hf 0.1 wrote: the BERT fields at the top of
    config.json (no `encoder`, no decoder size fields) and weights named `bert.*`, `cls.*`, `decoder.*`."""
    import json

    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    encoder = config.pop("encoder")
    assert encoder["model_type"] == "bert", "0.1 checkpoints were BERT"
    for key in [key for key in config if key.startswith("decoder_")]:
        config.pop(key)
    bert_fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                   "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "tie_word_embeddings")  # fmt: skip
    config.update({key: encoder[key] for key in bert_fields if key in encoder})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({key.removeprefix("lm."): value for key, value in tensors.items()}, str(folder / "model.safetensors"))
