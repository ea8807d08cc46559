"""Training objectives beyond plain RetroMAE: contrastive fine-tuning (stage 2) and DupMAE's bag-of-words loss.

Stage 2 of the RetroMAE framework (arXiv 2208.00231) keeps the RetroMAE loss on the positive passages and adds a
contrastive (InfoNCE) loss over query / positive / hard-negative groups, with in-batch negatives gathered from
every device. `stage_loss` combines the terms with `ObjectiveWeights`; a zero weight skips its term entirely, so
stage 1 is `ObjectiveWeights(contrastive=0.0)` on a batch of the six `RetroMAECollator` keys.

Stage-2 batch layout (`B` queries, `N` hard negatives per query, `N` may be 0):

- `query_input_ids`, `query_attention_mask`: `[B, Lq]`;
- `passage_input_ids`, `passage_attention_mask`: `[B * (1 + N), Lp]` grouped per query: row `i * (1 + N)` is query
  `i`'s positive, the next `N` rows its hard negatives;
- the six RetroMAE keys on the positive passages (only needed when the RetroMAE or bag-of-words term is on).
"""

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .collator import RETROMAE_KEYS, RETROMAE_REQUIRED_KEYS
from .modeling_retromae import RetroMAEForPreTraining

logger = logging.getLogger(__name__)

CONTRASTIVE_KEYS = ("query_input_ids", "query_attention_mask", "passage_input_ids", "passage_attention_mask")
# The bag-of-words term needs the encoder's view of the masked passage and the unmasked ids it must predict.
BAG_OF_WORDS_KEYS = ("encoder_input_ids", "encoder_attention_mask", "decoder_input_ids")
SIMILARITIES = ("dot", "cosine")


def _distributed_world() -> tuple[int, int]:
    """`(rank, world_size)`, or `(0, 1)` when torch.distributed is unavailable or not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _gather_shapes(tensor: torch.Tensor) -> list[torch.Size]:
    """Every rank's shape of `tensor`; ranks may differ in dim 0 (a smaller last batch), never in the others."""
    _, world_size = _distributed_world()
    # The shape travels on the tensor's own device: NCCL only moves CUDA tensors.
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape)
    sizes = [torch.Size(s.tolist()) for s in shapes]
    if any(s[1:] != tensor.shape[1:] for s in sizes):
        raise ValueError(f"all_gather_with_grad: ranks disagree beyond dim 0: {[tuple(s) for s in sizes]}")
    return sizes


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward returns this rank's slice of the *summed* gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rows: list[int]) -> torch.Tensor:
        rank, _ = _distributed_world()
        longest = max(rows)
        # all_gather needs equal shapes: pad to the longest local batch, then cut each rank's padding away.
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        chunks = [torch.empty_like(padded) for _ in rows]
        dist.all_gather(chunks, padded.contiguous())
        ctx.start = sum(rows[:rank])
        ctx.rows = tensor.shape[0]
        return torch.cat([chunk[:n] for chunk, n in zip(chunks, rows, strict=True)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Every rank's loss may depend on this rank's rows (its queries score our passages as negatives); those
        # gradients live on the other ranks, so they are summed here before we keep our own rows.
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.rows], None


def _gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Differentiable gather of every rank's rows, and the global index of this rank's first row."""
    rank, _ = _distributed_world()
    rows = [shape[0] for shape in _gather_shapes(tensor)]
    return _AllGatherWithGrad.apply(tensor, rows), sum(rows[:rank])


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0 (rank order), differentiably.

    Ranks may hold different numbers of rows (the Trainer's last batch can be smaller); the other dimensions must
    agree. Without an initialised process group, or with a world of one, the tensor is returned unchanged.

    Why the backward all-reduces: the gathered rows of other ranks are, on this rank, constants produced by
    another process, so autograd here only reaches our own slice. But our rows also enter the *other* ranks'
    losses (e.g. our passages are in-batch negatives for their queries). The backward therefore sums, over all
    ranks, the gradient each rank's loss sends to every gathered row, and keeps this rank's slice. DDP then
    averages the parameter gradients over ranks, so the update is the gradient of the mean of the per-rank losses:
    with equal local batches, exactly the single-process gradient of the loss on the global batch.

    The common shortcut (gather detached copies and put the local tensor back in its slot) drops the gradient
    other ranks' losses send to our rows; it is only right when every rank computes the *whole* global loss
    (all queries gathered too) and the loss is rescaled by the world size.
    """
    _, world_size = _distributed_world()
    if world_size == 1:
        return tensor
    return _gather_rows(tensor)[0]


class InfoNCELoss(nn.Module):
    """InfoNCE of each query against its positive, its hard negatives and every other passage in the global batch.

    Each local query is scored against *all* passages of all ranks (gathered with `all_gather_with_grad`); the
    target of local query `i` on rank `r` is its positive, global row `offset_r + i * (1 + N)`, where `offset_r`
    counts the passage rows of ranks before `r`. The loss is the cross-entropy averaged over the local queries.
    Local batch sizes may differ across ranks; the result is then a per-rank mean, which DDP averages as it does
    any other per-rank loss (scale it by `world_size * B_local / B_global` for exactly the global mean's gradient).

    Args:
        temperature: scores are divided by it. The default 0.02 suits `"cosine"` (scores in [-1, 1]); with `"dot"`
            on unnormalised BERT vectors (norms of ~10) it saturates the softmax; the official RetroMAE
            fine-tuning uses dot products with temperature 1.0.
        similarity: `"dot"` (inner product, the RetroMAE paper's) or `"cosine"`.
        gather_across_devices: use the passages of every rank as negatives (a no-op without torch.distributed).
    """

    def __init__(
        self,
        temperature: float = 0.02,
        similarity: Literal["dot", "cosine"] = "dot",
        gather_across_devices: bool = True,
    ):
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.temperature = temperature
        self.similarity = similarity
        self.gather_across_devices = gather_across_devices

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, similarity={self.similarity!r}, "
            f"gather_across_devices={self.gather_across_devices}"
        )

    def forward(self, query_embeddings: torch.Tensor, passage_embeddings: torch.Tensor) -> torch.Tensor:
        """Return the scalar InfoNCE loss.

        Args:
            query_embeddings: `[B, H]`.
            passage_embeddings: `[B * (1 + N), H]`, grouped per query (positive first, then `N` hard negatives).
        """
        if query_embeddings.dim() != 2 or passage_embeddings.dim() != 2:
            raise ValueError(
                "InfoNCELoss expects [B, H] queries and [B * (1 + N), H] passages, got shapes "
                f"{tuple(query_embeddings.shape)} and {tuple(passage_embeddings.shape)}"
            )
        num_queries, num_passages = query_embeddings.shape[0], passage_embeddings.shape[0]
        if num_queries == 0:
            raise ValueError("InfoNCELoss got an empty batch of queries")
        if num_passages % num_queries != 0:
            raise ValueError(
                f"{num_passages} passage rows for {num_queries} queries: passages must come in groups of "
                "1 + N per query (the positive, then N hard negatives)"
            )
        if query_embeddings.shape[1] != passage_embeddings.shape[1]:
            raise ValueError(
                f"query and passage embeddings differ in size: {query_embeddings.shape[1]} vs "
                f"{passage_embeddings.shape[1]}"
            )
        group_size = num_passages // num_queries

        if self.similarity == "cosine":
            # Normalising before the gather ships unit vectors; the gradient is the same as normalising after.
            query_embeddings = F.normalize(query_embeddings, dim=-1)
            passage_embeddings = F.normalize(passage_embeddings, dim=-1)

        offset = 0
        if self.gather_across_devices and _distributed_world()[1] > 1:
            passage_embeddings, offset = _gather_rows(passage_embeddings)

        # At least float32: a bf16/fp16 softmax over thousands of negatives at temperature 0.02 loses the target.
        dtype = torch.promote_types(query_embeddings.dtype, torch.float32)
        scores = query_embeddings.to(dtype) @ passage_embeddings.to(dtype).T / self.temperature
        targets = offset + torch.arange(num_queries, device=scores.device) * group_size
        return F.cross_entropy(scores, targets)


class DupMAEBagOfWordsLoss(nn.Module):
    """DupMAE's ordinary-token decoding: predict the input's bag of words from the encoder's token outputs.

    From "RetroMAE v2: Duplex Masked Auto-Encoder For Pre-Training Retrieval-Oriented Language Models" (Shitao
    Xiao, Zheng Liu et al., 2022, arXiv 2211.08769), as released in `staoxiao/RetroMAE`
    (`src/pretrain/modeling_duplex.py`, `ot_embedding` + `decoder_ot_loss`, and `DupMAECollator` in
    `src/pretrain/data.py`, which builds the target). Implemented variant, step by step:

    1. the encoder's last-layer outputs on the *masked* encoder input (the same forward as its MLM loss) are
       projected to vocabulary logits by the shared MLM head (`model.mlm_logits`, tied to the word embeddings);
    2. the logits are **max-pooled over positions, raw** (no ReLU, no `log(1 + relu)`: those are SPLADE's, not in
       the released DupMAE code), over the ordinary tokens: real (non-padding) positions other than position 0
       ([CLS]) and other than positions holding a special token in the *unmasked* input;
    3. `log_softmax` over the vocabulary gives `log p`;
    4. the target puts weight `1 / n` on every *distinct* token of the unmasked ordinary tokens, `n` counting
       them with repetition (exactly the official `bag_word_weight`: a repeated token gets `1 / n` once, so the
       weights sum to `distinct / n`, not 1); the loss is `-sum_v w_v log p_v`, averaged over sentences.

    Differences from the released code: it pools over every position after [CLS], the final [SEP] included; we
    leave out special-token positions, following the paper's "ordinary tokens" (one position fewer in a max).
    Sentences without ordinary tokens are left out of the average instead of counting as zero. (The released
    `forward` calls an undefined `sparse_embedding`, evidently meaning `ot_embedding`.)

    Args:
        special_token_ids: ids that are not ordinary tokens, e.g. `tokenizer.all_special_ids`; they are neither
            pooled nor predicted. Position 0 is always excluded. The official code treats [UNK] as ordinary
            (as `RetroMAECollator` does), so pass `set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}`
            to match it exactly.
        chunk_size: positions projected to the vocabulary at once. Only the running maximum is kept between
            chunks, so peak memory is `B * chunk_size * V` floats instead of `B * L * V`.
    """

    def __init__(self, special_token_ids: Iterable[int] = (), chunk_size: int = 128):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.chunk_size = chunk_size
        ids = sorted({int(i) for i in special_token_ids})
        self.special_token_ids: torch.Tensor
        self.register_buffer("special_token_ids", torch.tensor(ids, dtype=torch.long), persistent=False)

    def ordinary_token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]` boolean: the positions pooled and predicted (real, not position 0, not a special token)."""
        special = torch.isin(input_ids, self.special_token_ids.to(input_ids.device))
        ordinary = attention_mask.bool() & ~special
        ordinary[:, 0] = False
        return ordinary

    def forward(
        self,
        model: RetroMAEForPreTraining,
        encoder_hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Return the scalar bag-of-words loss.

        Args:
            model: supplies the MLM head (`model.mlm_logits`).
            encoder_hidden: `[B, L, H]` encoder last layer on the masked input (`encoder_last_hidden_state`).
            input_ids: `[B, L]` the *unmasked* ids of the same rows (e.g. `decoder_input_ids`).
            attention_mask: `[B, L]` 1 for real tokens.
        """
        if encoder_hidden.dim() != 3 or encoder_hidden.shape[:2] != input_ids.shape:
            raise ValueError(
                f"encoder_hidden must be [B, L, H] aligned with input_ids [B, L], got {tuple(encoder_hidden.shape)} "
                f"and {tuple(input_ids.shape)}"
            )
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}")
        ordinary = self.ordinary_token_mask(input_ids, attention_mask)
        counts = ordinary.sum(dim=1)
        has_tokens = counts > 0
        if not has_tokens.any():
            logger.warning("DupMAE bag-of-words loss: no ordinary tokens in the batch; the term is 0")
            return encoder_hidden.sum() * 0.0

        pooled = None
        for start in range(0, input_ids.shape[1], self.chunk_size):
            chunk_mask = ordinary[:, start : start + self.chunk_size]
            if not chunk_mask.any():  # the padded tail of a batch costs nothing
                continue
            logits = model.mlm_logits(encoder_hidden[:, start : start + self.chunk_size])  # [B, c, V]
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            logits = logits.masked_fill(~chunk_mask[:, :, None], torch.finfo(logits.dtype).min)
            chunk_max = logits.amax(dim=1)
            pooled = chunk_max if pooled is None else torch.maximum(pooled, chunk_max)
        log_probs = F.log_softmax(pooled, dim=-1)  # [B, V]

        # Distinct-token indicator of each row's ordinary tokens; masked-out positions scatter into a dummy column.
        vocab_size = log_probs.shape[-1]
        if int(input_ids[ordinary].max()) >= vocab_size:
            raise ValueError(f"input_ids contain ids >= the MLM head's vocabulary size {vocab_size}")
        targets = torch.where(ordinary, input_ids, vocab_size)
        bag = torch.zeros(input_ids.shape[0], vocab_size + 1, device=log_probs.device, dtype=log_probs.dtype)
        bag.scatter_(1, targets, 1.0)
        bag = bag[:, :vocab_size]

        per_sentence = -(bag * log_probs).sum(dim=-1) / counts.clamp(min=1)
        return per_sentence[has_tokens].mean()


@dataclass
class ObjectiveWeights:
    """Weights of the terms of `stage_loss`; a weight of 0 skips computing its term.

    Attributes:
        retromae: RetroMAE loss (encoder MLM + decoder reconstruction) on the passages.
        contrastive: InfoNCE over queries, positives, hard and in-batch negatives.
        bag_of_words: DupMAE's bag-of-words loss on the encoder's ordinary tokens (0: off).
    """

    retromae: float = 1.0
    contrastive: float = 1.0
    bag_of_words: float = 0.0

    def __post_init__(self) -> None:
        for name in ("retromae", "contrastive", "bag_of_words"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ObjectiveWeights.{name} must be a finite number >= 0, got {value}")
        if self.retromae == self.contrastive == self.bag_of_words == 0:
            raise ValueError("ObjectiveWeights: every weight is 0, so there is nothing to train")


def _require(batch: Mapping[str, Any], keys: Iterable[str], term: str) -> None:
    missing = [key for key in keys if batch.get(key) is None]
    if missing:
        raise KeyError(f"the {term} term is enabled but the batch lacks {missing} (it has {sorted(batch)})")


def stage_loss(
    model: RetroMAEForPreTraining,
    batch: Mapping[str, torch.Tensor],
    weights: ObjectiveWeights,
    infonce: InfoNCELoss | None,
    bow: DupMAEBagOfWordsLoss | None,
) -> dict[str, torch.Tensor]:
    """Weighted sum of the RetroMAE, contrastive and bag-of-words losses for one batch, from ONE forward.

    Everything the enabled terms need (the six RetroMAE keys, the query/passage inputs) goes through a single
    `model(...)` call, so that DDP/FSDP see one forward per step: pass the model exactly as the trainer holds it
    (wrapped or not). Query and passage embeddings are the last-layer [CLS] of the *unmasked* texts; the RetroMAE
    and bag-of-words terms use the masked view of the positives.

    Returns:
        `loss` (the weighted sum) and the unweighted terms actually computed: `retromae_loss`, `encoder_loss`,
        `decoder_loss`, `contrastive_loss`, `bag_of_words_loss`.

    Raises:
        KeyError: the batch lacks keys that an enabled term needs (all of them are named).
        ValueError: an enabled term has no loss module (`infonce` / `bow` is None).
    """
    use_retromae = weights.retromae != 0
    use_contrastive = weights.contrastive != 0
    use_bow = weights.bag_of_words != 0
    inputs: dict[str, torch.Tensor] = {}
    if use_retromae:
        _require(batch, RETROMAE_REQUIRED_KEYS, "RetroMAE")
        # The decoder mask travels dense (`decoder_attention_mask`) or compact (`decoder_mask_pool` + `_pick`).
        inputs.update({key: batch[key] for key in RETROMAE_KEYS if batch.get(key) is not None})
    if use_bow:
        _require(batch, BAG_OF_WORDS_KEYS, "bag-of-words")
        if bow is None:
            raise ValueError("weights.bag_of_words > 0 needs a DupMAEBagOfWordsLoss (bow=None was given)")
        inputs.update({key: batch[key] for key in ("encoder_input_ids", "encoder_attention_mask")})
    if use_contrastive:
        _require(batch, CONTRASTIVE_KEYS, "contrastive")
        if infonce is None:
            raise ValueError("weights.contrastive > 0 needs an InfoNCELoss (infonce=None was given)")
        inputs.update({key: batch[key] for key in CONTRASTIVE_KEYS})
    output = model(**inputs, return_dict=True)

    terms: dict[str, torch.Tensor] = {}
    weighted: list[torch.Tensor] = []
    if use_retromae:
        terms.update(retromae_loss=output.loss, encoder_loss=output.encoder_loss, decoder_loss=output.decoder_loss)
        weighted.append(weights.retromae * output.loss)
    if use_bow:
        bow_loss = bow(
            getattr(model, "module", model),  # the MLM head of the unwrapped model
            output.encoder_last_hidden_state,
            original_token_ids(batch),
            batch["encoder_attention_mask"],
        )
        terms["bag_of_words_loss"] = bow_loss
        weighted.append(weights.bag_of_words * bow_loss)
    if use_contrastive:
        contrastive = infonce(output.query_embedding, output.passage_embedding)
        terms["contrastive_loss"] = contrastive
        weighted.append(weights.contrastive * contrastive)

    # Summed left to right from the first term, so a single term with weight 1 is bit-identical to itself.
    total = weighted[0]
    for term in weighted[1:]:
        total = total + term
    return {"loss": total, **terms}


def original_token_ids(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The unmasked encoder input: labels where the encoder was masked, the input itself elsewhere.

    (`decoder_input_ids` is unmasked only with enhanced decoding; this holds for both decoding modes.)
    """
    labels = batch.get("encoder_labels")
    if labels is None:
        return batch["decoder_input_ids"]
    return torch.where(labels != -100, labels, batch["encoder_input_ids"])


__all__ = [
    "DupMAEBagOfWordsLoss",
    "InfoNCELoss",
    "ObjectiveWeights",
    "all_gather_with_grad",
    "stage_loss",
]
