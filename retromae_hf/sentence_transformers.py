"""RetroMAE as a sentence-transformers loss: adapt any `SentenceTransformer` to a domain from unlabelled text.

```python
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from retromae_hf.sentence_transformers import RetroMAELoss

model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
loss = RetroMAELoss(model)
trainer = SentenceTransformerTrainer(model=model, train_dataset=Dataset.from_dict({"text": texts}), loss=loss)
trainer.train()
model.save_pretrained("adapted")  # an ordinary SentenceTransformer: no remote code, no retromae_hf needed
```

What one step computes, on the batch sentence-transformers' collator has already tokenized (`input_ids`,
`attention_mask`):

1. **Masks**, drawn with the collator's own rules (`retromae_hf.collator`), vectorised on the batch's device:
   whole words (recovered from the tokens' spelling with a per-vocabulary table) are selected up to
   `encoder_mask_ratio` and replaced 80/10/10 for the encoder; every decoder row gets its own whole-word mask at
   `decoder_mask_ratio` from a per-sequence pool. The decoder's masks stay compact (the pool and each row's pick,
   O(P x L) per text, as `RetroMAECollator(decoder_mask="compact")` sends them): no `[B, L, L]` mask is built.
2. **Encoder**: the model itself (`model(features)`) reads the masked text; its **own sentence embedding**
   (`"sentence_embedding"`: whatever its pooling, CLS, mean, ..., after any Dense or Normalize module) is what the
   decoder must reconstruct the text from. Its token embeddings feed the masked-LM term of the encoder.
3. **Decoder**: the package's enhanced decoder (`modeling_retromae.RetroMAEDecoder`, the same module
   `RetroMAEForPreTraining` uses): query stream = embedding + positions, content stream = embedding followed by
   the unmasked tokens' embeddings (the backbone's own embedding block), position-specific attention masks
   expanded `decoder_attention_block_size` query rows at a time (`modeling_retromae.CompactDecoderMask`), so
   that long documents (8,192 tokens) never hold `[B, L, L]` masks nor `[B, heads, L, L]` attention scores.
4. **Loss** = `encoder_mlm_weight` x encoder masked-LM cross-entropy + decoder reconstruction cross-entropy, both
   through one masked-LM head (the backbone architecture's own head, freshly initialised, its output projection
   tied to the backbone's word embeddings), as in the paper and the official code. The loss returns both terms
   as a dict, so the trainer logs them apart.

The loss owns only the decoder, the head and the embedding adapter; the model stays a plain `SentenceTransformer`.
`save_pretrained` / `from_pretrained` keep the loss's own weights to continue training later, and
`checkpoint_callback` writes them into every trainer checkpoint. `MaskedLMLoss` is the encoder term alone: the
usual "continued masked-LM pre-training" baseline, on the same masks and head.

Supported: sentence-transformers 6.x (the package's dependency range; tested with 6.2) with transformers 5;
models whose first module is sentence-transformers' `Transformer` over an encoder that has a masked-LM head in
transformers (BERT, RoBERTa, XLM-R, ModernBERT, MPNet, ...: `modeling_retromae.check_encoder_supported`). The
decoder takes the encoder's absolute positions where it has them, else a position table of its own (rotary
encoders). Multi-GPU training with DDP works unchanged (the loss averages its own gradients across processes
before each optimizer step); FSDP and DeepSpeed ZeRO-3 are not supported (the loss reads the backbone's word
embeddings outside the model's forward, where those shard them). With `model_init` (hyper-parameter search),
pass a loss factory (`loss=lambda model: RetroMAELoss(model)`), as for any loss holding the model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import TrainerCallback

from .collator import (
    IGNORE_INDEX,
    SpellingWordBoundaries,
    expand_decoder_mask,
    mask_encoder_tokens,
    reconstruction_labels,
    sample_decoder_mask_pool,
)
from .configuration_retromae import RetroMAEConfig
from .modeling_retromae import (
    DEFAULT_LOSS_CHUNK_SIZE,
    CompactDecoderMask,
    RetroMAEDecoder,
    absolute_position_table,
    build_masked_lm,
    check_encoder_supported,
    chunked_cross_entropy,
    decoder_mask_from,
    init_decoder_weights,
    mlm_head_chain,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

LOSS_CONFIG_NAME = "retromae_loss.json"
LOSS_WEIGHTS_NAME = "retromae_loss.safetensors"
CHECKPOINT_SUBFOLDER = "retromae_loss"
_FORMAT_VERSION = 1

CITATION = """
@inproceedings{xiao-etal-2022-retromae,
    title = "{R}etro{MAE}: Pre-Training Retrieval-oriented Language Models Via Masked Auto-Encoder",
    author = "Xiao, Shitao and Liu, Zheng and Shao, Yingxia and Cao, Zhao",
    booktitle = "Proceedings of the 2022 Conference on Empirical Methods in Natural Language Processing",
    year = "2022",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/2205.12035",
}
"""


class RetroMAELossError(ValueError):
    """A model, dataset or saved loss that `RetroMAELoss` / `MaskedLMLoss` cannot train with."""


def _unwrap(model: nn.Module) -> SentenceTransformer:
    """The `SentenceTransformer` inside the wrappers a trainer may put around it (DDP, torch.compile)."""
    from sentence_transformers import SentenceTransformer

    seen = 0
    while not isinstance(model, SentenceTransformer) and seen < 8:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model, seen = inner, seen + 1
    if not isinstance(model, SentenceTransformer):
        raise RetroMAELossError(
            f"the loss's model is a {type(model).__name__}, not a SentenceTransformer (or a DDP / torch.compile "
            "wrapper around one); pass the SentenceTransformer you train to the loss"
        )
    return model


def _backbone_of(model: SentenceTransformer, check: bool = False) -> nn.Module:
    """The transformers model of the first module, or a clear error for models RetroMAE cannot train (`check`:
    also the architecture, once, when the loss is built)."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    first = model[0] if len(model) else None
    if not isinstance(first, Transformer):
        raise RetroMAELossError(
            f"RetroMAE needs a SentenceTransformer whose first module is a Transformer (a masked-LM encoder such "
            f"as BERT); this model starts with {type(first).__name__}. Static-embedding, CLIP-style and Router "
            "models have no token-level encoder to mask and reconstruct."
        )
    backbone = first.auto_model
    if check:
        # The architecture must carry the decoder: a masked-LM head in transformers and an embedding block for
        # the content stream (raises UnsupportedEncoderError, naming the supported encoders, otherwise).
        check_encoder_supported(backbone.config)
    return backbone


class _LossGradientSync:
    """Averages a loss's own gradients across DDP processes just before each optimizer step.

    DDP synchronises the gradients of the model it wraps; a loss's own parameters (here the decoder and head) are
    outside it, so without this every process would train a different decoder on its own shard of the data.
    torch's global optimizer pre-step hook (public API) runs on every process at the same point of every step,
    whichever loss each process ran in it (multi-dataset training gives processes different datasets), so the
    collective calls always pair up. The first step also broadcasts the parameters from process 0, so replicas
    that were initialised differently become identical. Gradient clipping by the trainer covers the model's
    parameters only, so it is unaffected.
    """

    def __init__(self, loss: MaskedLMLoss):
        self._loss = weakref.ref(loss)
        self._broadcast_done = False
        self._handle = register_optimizer_step_pre_hook(self)
        weakref.finalize(loss, self._handle.remove)

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        loss = self._loss()
        if loss is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        own = loss.own_parameters()
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        own = [p for p in own if id(p) in optimized]
        if not own:
            return
        world = dist.get_world_size()
        with torch.no_grad():
            if not self._broadcast_done:
                for parameter in own:
                    dist.broadcast(parameter.data, src=0)
                self._broadcast_done = True
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in own])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for parameter in own:
                size = parameter.numel()
                parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
                offset += size


def _fresh_masked_lm_head(backbone: nn.Module) -> nn.Sequential:
    """The backbone architecture's own masked-LM head (BERT's `cls`, RoBERTa's `lm_head`, ModernBERT's `head`
    and `decoder`, ...), freshly initialised, with its output projection tied to the backbone's word embeddings.

    Built on the meta device (no copy of the encoder is ever materialised), then given memory and initialised by
    the architecture's own rule. A sentence-transformers model loads the encoder without any head, so the
    transform is new; the projection onto the vocabulary is the word-embedding matrix itself, as in BERT.
    """
    with torch.device("meta"):
        masked_lm = build_masked_lm(copy.deepcopy(backbone.config))
    chain = mlm_head_chain(masked_lm)
    output = masked_lm.get_output_embeddings()
    head = nn.Sequential(OrderedDict((name, getattr(masked_lm, name)) for name in chain))
    if output is None or not any(output is module for module in head.modules()):
        raise RetroMAELossError(f"could not find the output projection of the {type(masked_lm).__name__} head")
    word_embeddings = backbone.get_input_embeddings().weight
    head.to_empty(device=word_embeddings.device)
    head.to(word_embeddings.dtype)
    for module in head.modules():
        masked_lm._init_weights(module)
    for module in head.modules():  # vocabulary biases start at zero, whatever the architecture's init rule
        for name, parameter in module.named_parameters(recurse=False):
            if name == "bias" and parameter.shape[-1] == word_embeddings.shape[0]:
                nn.init.zeros_(parameter)
    output.weight = word_embeddings  # the tie: one Parameter, the model's
    # Ties inside the head that the full masked-LM model would make (BERT and RoBERTa: the projection's bias is
    # the head's `bias`), so that the head has exactly the parameters it has in the architecture.
    ties = getattr(masked_lm, "_tied_weights_keys", None)
    for target, source in ties.items() if isinstance(ties, dict) else ():
        if target.split(".")[0] in chain and source.split(".")[0] in chain:
            owner, _, attribute = target.rpartition(".")
            setattr(head.get_submodule(owner), attribute, head.get_parameter(source))
    return head


class MaskedLMLoss(nn.Module):
    """Masked-LM adaptation of a `SentenceTransformer`: the encoder term of RetroMAE alone.

    The usual "continue masked-LM pre-training on the domain" baseline, with RetroMAE's masks (whole words,
    `mask_ratio`, 80/10/10) and its head. It trains the backbone's token representations only; nothing in it
    shapes the sentence embedding. `RetroMAELoss` adds the decoder that does.

    Args:
        model: the `SentenceTransformer` to train (first module: a `Transformer` over a BERT-family encoder).
        mask_ratio: share of each text's tokens (special tokens counted, as the official code does) to predict.
        mask_replace_prob: share of the selected tokens replaced by the mask token (BERT: 0.8).
        random_replace_prob: share replaced by a random token (BERT: 0.1); the rest stay unchanged.

    Inputs: a dataset with exactly one text column (other than a label column, which is ignored). Returns
    `{"masked_lm_loss": tensor}`.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        mask_ratio: float = 0.3,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
    ):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise RetroMAELossError(f"the mask ratio must be in (0, 1), got {mask_ratio}")
        if min(mask_replace_prob, random_replace_prob) < 0 or mask_replace_prob + random_replace_prob > 1:
            raise RetroMAELossError("mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1")
        self.model = model
        backbone = _backbone_of(model, check=True)
        tokenizer = model.tokenizer
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise RetroMAELossError(
                f"the tokenizer of this model ({type(tokenizer).__name__}) has no mask token, and masked "
                "auto-encoding replaces tokens by it. Add one and grow the embedding matrix first: "
                "model.tokenizer.add_special_tokens({'mask_token': '[MASK]'}); "
                "model[0].auto_model.resize_token_embeddings(len(model.tokenizer))"
            )
        word_embeddings = backbone.get_input_embeddings().weight
        if word_embeddings.shape[0] < len(tokenizer):
            raise RetroMAELossError(
                f"the tokenizer has {len(tokenizer)} tokens but the backbone's embedding matrix only "
                f"{word_embeddings.shape[0]} rows: call model[0].auto_model.resize_token_embeddings(len(tokenizer))"
            )
        self.mask_ratio = mask_ratio
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.head = _fresh_masked_lm_head(backbone)
        # Tables over the vocabulary, built once; masks for a batch are then a few tensor operations.
        self.boundaries = SpellingWordBoundaries(tokenizer)
        self._mask_token_id = int(tokenizer.mask_token_id)
        self._vocab_size = len(tokenizer)
        self._hidden_size = backbone.config.hidden_size
        self._warned_labels = False
        self._gradient_sync = _LossGradientSync(self)

    # ------------------------------------------------------------------ building blocks
    def _own_named_parameters(self) -> dict[str, nn.Parameter]:
        # named_parameters() lists a shared Parameter once, under its first name: the head's tied projection is
        # the model's word-embedding matrix and so appears as `model.…`, never as the loss's own.
        return {name: p for name, p in self.named_parameters() if not name.startswith("model.")}

    def own_parameters(self) -> list[nn.Parameter]:
        """The loss's own parameters (decoder, head, adapter): everything it holds that is not the model's."""
        return list(self._own_named_parameters().values())

    def _text_features(
        self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The one tokenized text column, checked, or a clear error."""
        features = list(sentence_features)
        name = type(self).__name__
        if not features:
            raise RetroMAELossError(
                f"{name} got no text column: the training dataset has no column besides labels "
                "('label'/'score'). Give it one column of raw texts, e.g. Dataset.from_dict({'text': texts})."
            )
        if len(features) > 1:
            raise RetroMAELossError(
                f"{name} trains on one text column, but the dataset has {len(features)} input columns. Keep "
                "only the text column (dataset.select_columns(['text'])), or train a pair dataset with a "
                "contrastive loss beside this one (a dict of datasets and losses)."
            )
        feature = features[0]
        if feature.get("modality", "text") != "text" or "input_ids" not in feature:
            raise RetroMAELossError(
                f"{name} needs tokenized text (input_ids); the column holds {feature.get('modality', 'non-text')} "
                "inputs. Give it a column of strings."
            )
        if labels is not None and not self._warned_labels:
            logger.warning("%s ignores the dataset's label column: masked auto-encoding needs only texts", name)
            self._warned_labels = True
        if "attention_mask" not in feature:
            feature = {**feature, "attention_mask": torch.ones_like(feature["input_ids"])}
        elif not feature["attention_mask"][:, 0].all():
            # The decoder puts the sentence embedding at position 0 and numbers positions from there, as the
            # encoder does for right-padded rows.
            raise RetroMAELossError(
                f"{name} needs right-padded batches (the first token of every row real); this tokenizer pads on "
                "the left: set model.tokenizer.padding_side = 'right'"
            )
        return feature

    def _words(self, input_ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        word_ids = self.boundaries.word_ids(input_ids, real)
        empty = (word_ids < 0).all(-1)
        if empty.any():
            row = int(empty.nonzero()[0, 0])
            raise RetroMAELossError(
                f"{type(self).__name__}: text {row} of this batch has no token besides the special tokens, i.e. it "
                "is empty or only whitespace. Remove such texts before training, e.g. "
                "dataset = dataset.filter(lambda row: row['text'].strip())"
            )
        return word_ids

    def _masked_lm(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Project only labelled positions: the vocabulary projection is the costliest matmul of the step.
        selected = labels != IGNORE_INDEX
        targets = labels[selected]
        if targets.numel() == 0:
            return hidden_states.sum() * 0.0
        # Over chunks of tokens: one chunk's [tokens, vocab] logits at a time, gradients taken in forward.
        chunk_size = getattr(getattr(self, "config", None), "loss_chunk_size", DEFAULT_LOSS_CHUNK_SIZE)
        # The vocabulary projection is the head's widest linear layer (tied to the word embeddings).
        projection = max((m for m in self.head.modules() if isinstance(m, nn.Linear)), key=lambda m: m.out_features)
        return chunked_cross_entropy(hidden_states[selected], targets, self.head, chunk_size, projection)

    def _follow_model_mode(self, model: nn.Module) -> None:
        # The trainer switches the model between train and eval; the loss's own dropout follows it.
        for module in self.children():
            if module is not self.model:
                module.train(model.training)

    def mask_encoder(
        self, features: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(word_ids, masked_input_ids, labels)` for a tokenized batch: the encoder's masks."""
        input_ids = features["input_ids"]
        real = features["attention_mask"].bool()
        word_ids = self._words(input_ids, real)
        masked, labels = mask_encoder_tokens(
            input_ids,
            word_ids,
            real.sum(-1),
            self.mask_ratio,
            self._mask_token_id,
            self._vocab_size,
            self.mask_replace_prob,
            self.random_replace_prob,
            generator,
        )
        return word_ids, masked, labels

    def forward(
        self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        features = self._text_features(sentence_features, labels)
        self._follow_model_mode(_unwrap(self.model))
        _, masked, encoder_labels = self.mask_encoder(features)
        # A copy: sentence-transformers modules write their outputs into the features dict they are given.
        output = self.model({**features, "input_ids": masked})
        return {"masked_lm_loss": self._masked_lm(output["token_embeddings"], encoder_labels)}

    # ------------------------------------------------------------------ sentence-transformers conventions
    def get_config_dict(self) -> dict[str, Any]:
        """The settings shown in the model card sentence-transformers writes."""
        return {
            "mask_ratio": self.mask_ratio,
            "mask_replace_prob": self.mask_replace_prob,
            "random_replace_prob": self.random_replace_prob,
        }

    @property
    def citation(self) -> str:
        return CITATION

    # ------------------------------------------------------------------ saving and loading the loss's own state
    def _saved_settings(self) -> dict[str, Any]:
        return self.get_config_dict()

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the loss's own weights (not the model's) and settings into `save_directory`.

        Two files, `retromae_loss.json` and `retromae_loss.safetensors`; the model is saved as usual with
        `model.save_pretrained`. Load both back with `from_pretrained(model, save_directory)` to continue training.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: p.detach().contiguous().cpu() for name, p in self._own_named_parameters().items()}
        save_file(state, str(directory / LOSS_WEIGHTS_NAME))
        description = {
            "format_version": _FORMAT_VERSION,
            "class": type(self).__name__,
            "settings": self._saved_settings(),
            "hidden_size": self._hidden_size,
            "vocab_size": self._vocab_size,
        }
        (directory / LOSS_CONFIG_NAME).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, model: SentenceTransformer, directory: str | os.PathLike, **overrides: Any):
        """Rebuild a loss saved by `save_pretrained` around `model` (the model trained with it, e.g. reloaded
        from its own folder), with its decoder and head weights. `overrides` change settings such as mask ratios
        (not shapes)."""
        directory = Path(directory)
        config_path, weights_path = directory / LOSS_CONFIG_NAME, directory / LOSS_WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise RetroMAELossError(
                f"{directory} holds no saved loss ({LOSS_CONFIG_NAME} and {LOSS_WEIGHTS_NAME}); write one with "
                "loss.save_pretrained(directory), or pass a checkpoint's retromae_loss/ folder"
            )
        description = json.loads(config_path.read_text(encoding="utf-8"))
        if description.get("class") != cls.__name__:
            raise RetroMAELossError(
                f"{config_path} was saved by {description.get('class')}, not {cls.__name__}; load it with that class"
            )
        loss = cls(model, **{**description["settings"], **overrides})
        state = load_file(str(weights_path), device=str(loss.own_parameters()[0].device))
        own = loss._own_named_parameters()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        mismatched = [name for name in set(own) & set(state) if own[name].shape != state[name].shape]
        if missing or unexpected or mismatched:
            raise RetroMAELossError(
                f"the loss saved in {directory} does not fit this model (hidden size {description.get('hidden_size')}, "
                f"vocabulary {description.get('vocab_size')}; this model: {loss._hidden_size}, "
                f"{loss._vocab_size}): missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"other shapes {mismatched[:3]}. Load it around the model it was trained with."
            )
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)
        return loss

    def checkpoint_callback(self) -> TrainerCallback:
        """A trainer callback that saves this loss into every checkpoint, as `checkpoint-N/retromae_loss/`.

        The trainer saves the model, optimizer and scheduler but not a loss's own weights; with this callback
        `trainer.train(resume_from_checkpoint=...)` can continue with the decoder it had:
        `loss = RetroMAELoss.from_pretrained(model, "out/checkpoint-N/retromae_loss")` before building the trainer.
        """
        return _SaveLossCallback(self)


class _SaveLossCallback(TrainerCallback):
    def __init__(self, loss: MaskedLMLoss):
        self.loss = loss

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / CHECKPOINT_SUBFOLDER
            self.loss.save_pretrained(folder)
        return control


class RetroMAELoss(MaskedLMLoss):
    """RetroMAE (Xiao et al., 2022) as a sentence-transformers loss: the model's own sentence embedding must let
    a shallow enhanced decoder rebuild its text from a heavily masked copy.

    Args:
        model: the `SentenceTransformer` to train (first module: a `Transformer` over a BERT-family encoder).
        encoder_mask_ratio: share of tokens the encoder reads masked and must predict (paper: 0.15-0.3).
        decoder_mask_ratio: share of context each decoder row hides (paper: 0.5-0.7).
        num_decoder_layers: enhanced-decoding layers (paper: 1).
        encoder_mlm_weight: weight of the encoder's masked-LM term (the paper's objective sums both terms, 1.0);
            0 trains through the decoder alone.
        decoder_pool_size: cap on the decoder masks drawn per text (official: 256).
        mask_replace_prob, random_replace_prob: the encoder's 80/10/10 split.
        normalize_embedding: put the sentence embedding through a LayerNorm (learned) before decoding. None
            (default) decides from the model: not for a raw [CLS] / last-token hidden state (the paper's input,
            already on the scale of the token embeddings), yes for anything else (mean pooling's averages,
            L2-normalised vectors of length 1, Dense outputs), so that the decoder gets an input on the scale
            of the token embeddings it is added to. An embedding whose size differs from the backbone's (a Dense
            module) is first projected back to the backbone's hidden size by a learned linear layer.
        decoder_attention_block_size: query rows per block when the decoder expands its compact masks: at most
            `[B, heads, block, L]` attention scores exist at once (blocks are recomputed in backward). Memory
            only: every block size gives the same losses and gradients.

    Inputs: a dataset with exactly one text column (a label column is ignored). Returns
    `{"encoder_loss": ..., "decoder_loss": ...}`; the trainer sums them and logs each.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        encoder_mask_ratio: float = 0.3,
        decoder_mask_ratio: float = 0.5,
        num_decoder_layers: int = 1,
        encoder_mlm_weight: float = 1.0,
        decoder_pool_size: int = 256,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        normalize_embedding: bool | None = None,
        decoder_attention_block_size: int = 512,
    ):
        super().__init__(model, encoder_mask_ratio, mask_replace_prob, random_replace_prob)
        if not 0.0 < decoder_mask_ratio < 1.0:
            raise RetroMAELossError(f"decoder_mask_ratio must be in (0, 1), got {decoder_mask_ratio}")
        if num_decoder_layers < 1:
            raise RetroMAELossError(f"num_decoder_layers must be at least 1, got {num_decoder_layers}")
        if encoder_mlm_weight < 0 or not math.isfinite(encoder_mlm_weight):
            raise RetroMAELossError(f"encoder_mlm_weight must be a finite number >= 0, got {encoder_mlm_weight}")
        if decoder_pool_size < 1:
            raise RetroMAELossError(f"decoder_pool_size must be at least 1, got {decoder_pool_size}")
        if decoder_attention_block_size < 1:
            raise RetroMAELossError(
                f"decoder_attention_block_size must be at least 1, got {decoder_attention_block_size}"
            )
        self.decoder_mask_ratio = decoder_mask_ratio
        self.encoder_mlm_weight = encoder_mlm_weight
        self.decoder_pool_size = decoder_pool_size
        backbone = _backbone_of(model)
        # The decoder's positions: the encoder's absolute table where it has one (BERT, RoBERTa, XLM-R, MPNet: the
        # paper's choice), else a table of the decoder's own (rotary encoders such as ModernBERT).
        has_table = absolute_position_table(backbone.embeddings, backbone.config.hidden_size) is not None
        # A copy of the backbone's config: the composite config would otherwise share (and edit) the model's own.
        self.config = RetroMAEConfig(
            encoder=copy.deepcopy(backbone.config),
            num_decoder_layers=num_decoder_layers,
            decoder_positions="encoder" if has_table else "learned",
            decoder_attention_block_size=decoder_attention_block_size,
        )
        # The decoder attends with the backbone's attention implementation (sdpa unless the model chose another).
        self.config._attn_implementation = backbone.config._attn_implementation or "sdpa"
        self.decoder = RetroMAEDecoder(self.config)
        self.decoder.init_weights()

        embedding_size, raw_hidden_state = self._probe_embedding(model)
        if normalize_embedding is None:
            normalize_embedding = not raw_hidden_state
        self.normalize_embedding = normalize_embedding
        adapter: list[nn.Module] = []
        if embedding_size != self.config.hidden_size:
            adapter.append(nn.Linear(embedding_size, self.config.hidden_size))
        if normalize_embedding:
            adapter.append(nn.LayerNorm(self.config.hidden_size, eps=self.config.decoder_layer_norm_eps))
        self.embedding_adapter = nn.Sequential(*adapter)
        for module in self.embedding_adapter:
            init_decoder_weights(module, self.config.decoder_initializer_range)

    @property
    def encoder_mask_ratio(self) -> float:
        return self.mask_ratio

    def _probe_embedding(self, model: SentenceTransformer) -> tuple[int, bool]:
        """The size of `model(features)["sentence_embedding"]`, measured on one short text (exact whatever the
        modules), and whether it is a raw token hidden state (CLS or last-token pooling straight after the
        backbone, nothing after it)."""
        from sentence_transformers.sentence_transformer.modules import Pooling

        modules = list(model)
        pooling = modules[1] if len(modules) == 2 else None
        raw = isinstance(pooling, Pooling) and getattr(pooling, "pooling_mode", None) in ("cls", "lasttoken", ("cls",))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                features = model.preprocess(["retromae"])
                features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
                output = model(features)
        finally:
            model.train(was_training)
        if "token_embeddings" not in output or "sentence_embedding" not in output:
            raise RetroMAELossError(
                "the model's forward gives no token_embeddings / sentence_embedding; RetroMAE needs both "
                "(a Transformer module followed by a pooling module)"
            )
        return int(output["sentence_embedding"].shape[-1]), raw

    def decode(
        self,
        embedding: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | CompactDecoderMask,
    ) -> torch.Tensor:
        """Enhanced decoding from `[B, D]` sentence embeddings with the package's `RetroMAEDecoder`;
        `attention_mask` is the decoder's position-specific mask, either dense (`[B, L, L]` 0/1) or a
        `CompactDecoderMask` (expanded block of query rows by block). Returns `[B, L, H]` (before the head)."""
        embeddings = _backbone_of(_unwrap(self.model)).embeddings
        seq_len = input_ids.shape[1]
        # The content stream's tokens: the backbone's own embedding block on the unmasked ids (the decoder puts
        # the sentence vector in place of the first one).
        content = embeddings(input_ids=input_ids)
        positions = None  # None: the decoder's own learned table
        if self.config.decoder_positions == "encoder":
            table, offset = absolute_position_table(embeddings, self.config.hidden_size)
            # RoBERTa-style tables number positions from padding_idx + 1, as their embedding block does.
            positions = table(torch.arange(offset, offset + seq_len, device=input_ids.device))[None]
        return self.decoder(self.embedding_adapter(embedding), content, positions, attention_mask)

    def retromae_inputs(
        self,
        features: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        decoder_mask: str = "dense",
    ) -> dict[str, torch.Tensor]:
        """The RetroMAE tensors for a tokenized batch, drawn with the collator's rules on the batch's device: the
        keys `RetroMAECollator(decoder_mask=...)` produces and `RetroMAEForPreTraining` takes.

        `decoder_mask="dense"` (default, as the collator's) gives the decoder's masks as `decoder_attention_mask`
        `[B, L, L]`; `"compact"` (what the loss's own `forward` uses) as `decoder_mask_pool` `[B, P, L]` bool and
        `decoder_mask_pick` `[B, L]`. Both forms come from the same random draws: for one generator state the
        compact form, expanded, is the dense mask bit for bit. `compute_losses` takes either.
        """
        if decoder_mask not in ("dense", "compact"):
            raise RetroMAELossError(f"decoder_mask must be 'dense' or 'compact', got {decoder_mask!r}")
        input_ids = features["input_ids"]
        real = features["attention_mask"].bool()
        word_ids, masked, encoder_labels = self.mask_encoder(features, generator)
        pool, pick = sample_decoder_mask_pool(
            word_ids, real.sum(-1), self.decoder_mask_ratio, self.decoder_pool_size, generator
        )
        if decoder_mask == "compact":
            masks = {"decoder_mask_pool": pool, "decoder_mask_pick": pick}
        else:
            masks = {"decoder_attention_mask": expand_decoder_mask(pool, pick, real)}
        return {
            "encoder_input_ids": masked,
            "encoder_attention_mask": features["attention_mask"],
            "encoder_labels": encoder_labels,
            "decoder_input_ids": input_ids,
            **masks,
            "decoder_labels": reconstruction_labels(input_ids, real),
        }

    def _decoder_mask(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | CompactDecoderMask:
        """The decoder's mask from whichever form `inputs` carries: dense, or compact (wrapped for blockwise
        expansion with this loss's block size)."""
        real = inputs["encoder_attention_mask"].bool()  # the one padding of both streams: the same token ids
        try:
            mask = decoder_mask_from(
                inputs.get("decoder_attention_mask"),
                inputs.get("decoder_mask_pool"),
                inputs.get("decoder_mask_pick"),
                real,
                self.config.decoder_attention_block_size,
            )
        except ValueError as error:
            raise RetroMAELossError(
                f"{error}; build the inputs with retromae_inputs(features, decoder_mask='dense' or 'compact')"
            ) from error
        if mask is None:
            raise RetroMAELossError(
                "the inputs carry no decoder mask: decoder_attention_mask [batch, seq, seq], or decoder_mask_pool "
                "[batch, pool, seq] with decoder_mask_pick [batch, seq] (see retromae_inputs)"
            )
        return mask

    def compute_losses(
        self, features: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The two terms for a batch whose masks are given (`retromae_inputs`, with either decoder-mask form)."""
        self._follow_model_mode(_unwrap(self.model))
        decoder_mask = self._decoder_mask(inputs)  # checked before the encoder runs
        # A copy: sentence-transformers modules write their outputs into the features dict they are given.
        output = self.model({**features, "input_ids": inputs["encoder_input_ids"]})
        losses = {}
        if self.encoder_mlm_weight > 0:
            encoder_loss = self._masked_lm(output["token_embeddings"], inputs["encoder_labels"])
            losses["encoder_loss"] = self.encoder_mlm_weight * encoder_loss
        decoded = self.decode(output["sentence_embedding"], inputs["decoder_input_ids"], decoder_mask)
        losses["decoder_loss"] = self._masked_lm(decoded, inputs["decoder_labels"])
        return losses

    def forward(
        self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        features = self._text_features(sentence_features, labels)
        # Compact decoder masks: the pool and picks, expanded block by block inside the decoder's attention.
        return self.compute_losses(features, self.retromae_inputs(features, decoder_mask="compact"))

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "encoder_mask_ratio": self.mask_ratio,
            "decoder_mask_ratio": self.decoder_mask_ratio,
            "num_decoder_layers": self.config.num_decoder_layers,
            "encoder_mlm_weight": self.encoder_mlm_weight,
            "decoder_pool_size": self.decoder_pool_size,
            "mask_replace_prob": self.mask_replace_prob,
            "random_replace_prob": self.random_replace_prob,
            "normalize_embedding": self.normalize_embedding,
            "decoder_attention_block_size": self.config.decoder_attention_block_size,
        }


__all__ = ["CHECKPOINT_SUBFOLDER", "MaskedLMLoss", "RetroMAELoss", "RetroMAELossError"]
