"""The two masked-LM baselines the speed benchmarks compare RetroMAE with.

- **full**: the architecture's own transformers `*ForMaskedLM` as it is: vocabulary logits at every position,
  the loss read at the labelled ones.
- **sparse**: the same model with its logits taken at the labelled positions only, which is how masked LMs are
  trained in practice (ModernBERT's `sparse_prediction`) and what RetroMAE's encoder loss does. ModernBERT uses its
  own option; for the architectures without one (BERT, RoBERTa, XLM-R) `SparseMaskedLM` runs the base model, gathers
  the labelled positions and applies the model's own head to them alone.

Both take `input_ids`, `attention_mask`, `labels` and return an output with `.loss`, so one training step serves
all of them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from retromae_hf.modeling_retromae import mlm_head_chain

IGNORE_INDEX = -100


class SparseMaskedLM(nn.Module):
    """`masked_lm` (a transformers `*ForMaskedLM`) with vocabulary logits computed at labelled positions only."""

    def __init__(self, masked_lm: nn.Module):
        super().__init__()
        self.masked_lm = masked_lm
        self.native = hasattr(masked_lm, "sparse_prediction")  # ModernBERT: its own option, used as it is
        if self.native:
            masked_lm.sparse_prediction = True
            masked_lm.config.sparse_prediction = True
        self.head_chain = mlm_head_chain(masked_lm)

    def set_attn_implementation(self, implementation: str) -> None:
        self.masked_lm.set_attn_implementation(implementation)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> MaskedLMOutput:
        if self.native:
            return self.masked_lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        base = getattr(self.masked_lm, self.masked_lm.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        flat = labels.flatten()
        index = (flat != IGNORE_INDEX).nonzero().squeeze(1)
        logits = hidden.flatten(0, 1).index_select(0, index)
        for name in self.head_chain:
            logits = getattr(self.masked_lm, name)(logits)
        return MaskedLMOutput(loss=F.cross_entropy(logits, flat.index_select(0, index)))


def masked_lm_anchors(masked_lm: nn.Module) -> dict[str, nn.Module]:
    """`{"full": masked_lm, "sparse": SparseMaskedLM(copy)}`, both holding the same weights."""
    return {"full": masked_lm, "sparse": SparseMaskedLM(copy.deepcopy(masked_lm))}
