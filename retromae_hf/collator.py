"""RetroMAE's masking: whole-word masks for the encoder, position-specific attention masks for the decoder.

`RetroMAECollator` turns texts (or tokenized examples) into the keys `RetroMAEForPreTraining.forward` takes: by
default (`decoder_mask="compact"`, what training uses) `FORWARD_KEYS` with `decoder_attention_mask` replaced by
`decoder_mask_pool` + `decoder_mask_pick` (O(P x L) per sequence), or, with `decoder_mask="dense"`, the six
`FORWARD_KEYS` with the official `[B, L, L]` decoder mask (L x L per sequence; the parity fixtures' layout). It follows the official collator's rules, vectorised in torch over the batch:

- **Encoder**: whole words are chosen in random order until `max(1, round(n * encoder_mask_ratio))` tokens are
  selected (`n` counts the special tokens, as the official code does); selected tokens become [MASK] 80% of the
  time, a random token 10%, unchanged 10%. Special tokens and padding are never selected.
- **Decoder**: each sequence draws a pool of `min(n, decoder_pool_size)` whole-word masks with
  `decoder_mask_ratio`; every query position picks one of them at random and also hides itself. Special tokens
  are in no mask, so [CLS] is visible to every row but its own; padding is never attended.
- **Decoder labels**: every real token except [CLS] (position 0) and the final separator.

Whole words come from the fast tokenizer's `word_ids()`, so WordPiece (BERT), byte-level BPE (RoBERTa) and
SentencePiece (XLM-R) tokenizers all work; the official collator only understands WordPiece's `##`.

Word selection replays the official greedy rule exactly (random word order; a word that would overshoot the
budget is skipped and shorter later words still get their turn); only the random number streams differ.

The rules are module-level functions on padded `[B, L]` tensors (`mask_budget`, `sample_whole_word_masks`,
`mask_encoder_tokens`, `sample_decoder_mask_pool`, `expand_decoder_mask`, `sample_decoder_attention`,
`reconstruction_labels`, `SpellingWordBoundaries`), so that
code which receives already tokenized batches (the sentence-transformers loss) applies exactly the same rules, on
whatever device the batch lives.
"""

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
FORWARD_KEYS = (
    "encoder_input_ids",
    "encoder_attention_mask",
    "encoder_labels",
    "decoder_input_ids",
    "decoder_attention_mask",
    "decoder_labels",
)
# The compact decoder mask (`RetroMAECollator(decoder_mask="compact")`), beside or instead of the dense
# `decoder_attention_mask`: `decoder_mask_pool` `[B, P, L]` bool (True: pool member p hides token j) and
# `decoder_mask_pick` `[B, L]` int16/int32 (the pool member of each query row). Padding comes from
# `encoder_attention_mask` (both streams share it), self-hiding from the position itself.
COMPACT_DECODER_MASK_KEYS = ("decoder_mask_pool", "decoder_mask_pick")
DECODER_MASKS = ("dense", "compact")
# Every RetroMAE key a batch may carry, and those it must carry whatever the mask's form (the model itself says
# when a batch has no decoder mask at all).
RETROMAE_KEYS = FORWARD_KEYS + COMPACT_DECODER_MASK_KEYS
RETROMAE_REQUIRED_KEYS = tuple(key for key in FORWARD_KEYS if key != "decoder_attention_mask")
_WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark the *start* of a word


def sample_whole_word_masks(
    word_ids: torch.Tensor, budget: torch.Tensor, num_draws: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw `num_draws` independent whole-word masks per row.

    Args:
        word_ids: `[B, L]` word index of each token within its row, -1 for tokens that may never be masked.
        budget: `[B]` maximum number of tokens to mask in each row.
        num_draws: masks to draw per row.
        generator: optional torch generator on `word_ids`' device (that device's global RNG otherwise).

    Returns:
        `[B, num_draws, L]` boolean masks on `word_ids`' device: words visited in a uniformly random order, each
        taken if it still fits the budget (the official `_whole_word_mask` rule).
    """
    device = word_ids.device
    batch, seq_len = word_ids.shape
    num_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    if num_words <= 0:
        return torch.zeros(batch, num_draws, seq_len, dtype=torch.bool, device=device)
    maskable = word_ids >= 0
    index = word_ids.clamp(min=0)
    # int16 throughout: word lengths and budgets are far below 2**15, and the batch-wide tensors stay small.
    word_len = torch.zeros(batch, num_words, dtype=torch.int16, device=device).scatter_add_(
        1, index, maskable.to(torch.int16)
    )

    # A uniformly random word order per draw. On the CPU numpy's radix sort of 16-bit keys is several times faster
    # than a float argsort; equal keys (a few pairs per draw) keep their index order, a negligible bias. Other
    # devices sort the same keys stably in torch, so the rule is the same everywhere.
    keys = torch.randint(
        -(2**15), 2**15, (batch * num_draws, num_words), dtype=torch.int16, generator=generator, device=device
    )
    keys.view(batch, num_draws, num_words).masked_fill_((word_len == 0)[:, None, :], 2**15 - 1)
    if device.type == "cpu":
        order = torch.from_numpy(np.argsort(keys.numpy(), axis=-1, kind="stable"))
    else:
        order = torch.sort(keys, dim=-1, stable=True).indices
    order = order.view(batch, num_draws, num_words)
    lengths = word_len[:, None, :].expand(-1, num_draws, -1).gather(-1, order)

    # The official greedy rule: walk the words in order, take each one that still fits, skip one that does not.
    # Each pass takes the longest run of still-fitting words, so a handful of passes replays the whole walk.
    # Rows are flattened so that later passes, which concern only a few rows, touch only those rows.
    pending = lengths.reshape(batch * num_draws, num_words).clone()  # words not yet taken nor ruled out; else 0
    remaining = budget.to(device=device, dtype=torch.int16).repeat_interleave(num_draws)[:, None]
    taken_in_order = torch.zeros(pending.shape, dtype=torch.bool, device=device)
    rows = None  # all rows in the first pass
    while True:
        pending.masked_fill_(pending > remaining, 0)  # budgets only shrink: a word too long now stays too long
        active = pending.any(-1).nonzero().squeeze(-1)
        if active.numel() == 0:
            break
        rows = active if rows is None else rows[active]
        pending, remaining = pending[active], remaining[active]
        take = (pending.cumsum(-1, dtype=torch.int16) <= remaining) & (pending > 0)
        taken_in_order[rows] |= take
        remaining = remaining - (pending * take).sum(-1, keepdim=True, dtype=torch.int16)
        pending.masked_fill_(take, 0)
    taken_in_order = taken_in_order.view(batch, num_draws, num_words)
    taken = torch.zeros_like(taken_in_order).scatter_(-1, order, taken_in_order)
    token_mask = taken.gather(-1, index[:, None, :].expand(-1, num_draws, -1))
    return token_mask & maskable[:, None, :]


def mask_budget(lengths: torch.Tensor, ratio: float) -> torch.Tensor:
    """`max(1, round(n * ratio))` tokens per row, `n` counting the special tokens (the official budget)."""
    # In float64 on the CPU (MPS has no float64): the rounding of n * ratio must not depend on the device.
    return torch.round(lengths.cpu().double() * ratio).long().clamp(min=1).to(lengths.device)


def mask_encoder_tokens(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor,
    lengths: torch.Tensor,
    ratio: float,
    mask_token_id: int,
    vocab_size: int,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's input: whole words selected up to `mask_budget(lengths, ratio)`, then 80/10/10.

    Args:
        input_ids: `[B, L]` token ids (padding included).
        word_ids: `[B, L]` word of each token, -1 for special tokens and padding (never selected).
        lengths: `[B]` real tokens per row, special tokens included.
        ratio: the encoder mask ratio.
        mask_token_id, vocab_size: the [MASK] id, and the range random replacements are drawn from.
        mask_replace_prob, random_replace_prob: shares of selected tokens replaced by [MASK] / a random token.
        generator: a generator on `input_ids`' device, or None for that device's global RNG.

    Returns:
        `(masked_input_ids, labels)`: labels hold the original id at selected positions and -100 elsewhere.
    """
    selected = sample_whole_word_masks(word_ids, mask_budget(lengths, ratio), 1, generator).squeeze(1)
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    roll = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = selected & (roll < mask_replace_prob)
    to_random = selected & ~to_mask & (roll < mask_replace_prob + random_replace_prob)
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    return torch.where(to_random, random_tokens, masked), labels


def sample_decoder_mask_pool(
    word_ids: torch.Tensor,
    lengths: torch.Tensor,
    ratio: float,
    pool_size: int = 256,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The compact form of enhanced decoding's masks: a pool of whole-word masks per sequence and each row's pick.

    Args:
        word_ids: `[B, L]` word of each token, -1 for special tokens and padding (in no mask).
        lengths: `[B]` real tokens per row, special tokens included.
        ratio: the decoder mask ratio (`mask_budget` of each row).
        pool_size: cap on the pool; a row draws `min(n, pool_size)` masks.
        generator: a generator on `word_ids`' device, or None for that device's global RNG.

    Returns:
        `(pool, pick)`: `pool` `[B, P, L]` bool, `pool[b, p, j]` True when mask `p` of row `b` hides token `j`
        (`P = min(max n, pool_size)`; members past a row's own pool size are drawn but never picked); `pick`
        `[B, L]` long, the pool member each query row uses, uniform among its sequence's own pool. This is
        O(B x P x L): what crosses the process boundary instead of a `[B, L, L]` matrix. The draws are exactly
        those `sample_decoder_attention` makes, in the same order.
    """
    batch, seq_len = word_ids.shape
    pool_sizes = lengths.to(word_ids.device).clamp(max=pool_size)
    pool = sample_whole_word_masks(word_ids, mask_budget(lengths, ratio), int(pool_sizes.max()), generator)
    pick = (torch.rand(batch, seq_len, generator=generator, device=word_ids.device) * pool_sizes[:, None]).long()
    return pool, pick


def expand_decoder_mask(pool: torch.Tensor, pick: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The dense `[B, L, L]` 0/1 mask (uint8, `[b, i, j] = 1`: row `i` sees `j`) of a compact `(pool, pick)`.

    Row `i` hides its picked pool member's tokens and itself; padding is never attended and padded rows see
    nothing. For tests and inspection only: the model expands the compact form itself, one block of rows at a
    time, and never holds this matrix for long inputs.
    """
    seq_len = pick.shape[1]
    hidden = pool.gather(1, pick.long()[:, :, None].expand(-1, -1, seq_len))  # [B, L(query), L(key)]
    hidden |= torch.eye(seq_len, dtype=torch.bool, device=pool.device)[None]
    real = real.bool()
    visible = ~hidden & real[:, :, None] & real[:, None, :]
    return visible.to(torch.uint8)


def sample_decoder_attention(
    word_ids: torch.Tensor,
    lengths: torch.Tensor,
    real: torch.Tensor,
    ratio: float,
    pool_size: int = 256,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Position-specific `[B, L, L]` 0/1 attention masks of enhanced decoding (`[b, i, j] = 1`: row `i` sees `j`).

    Each sequence draws a pool of `min(n, pool_size)` whole-word masks with `ratio`; every query row picks one of
    its own sequence's pool uniformly and also hides itself. Special tokens are in no mask (so [CLS] is visible
    to every row but its own); padding is never attended and padded rows see nothing. The dense form of
    `sample_decoder_mask_pool` (same draws): grows with L x L, so long inputs should travel compact.
    """
    pool, pick = sample_decoder_mask_pool(word_ids, lengths, ratio, pool_size, generator)
    return expand_decoder_mask(pool, pick, real)


def reconstruction_labels(input_ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The decoder's targets: every real token except the first and the last ([CLS] and the final separator)."""
    labels = input_ids.masked_fill(~real, IGNORE_INDEX)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    first = real.int().argmax(-1)  # 0 with right padding, as the collator pads
    labels[rows, first] = IGNORE_INDEX
    labels[rows, first + real.sum(-1) - 1] = IGNORE_INDEX
    return labels


def _is_wordpiece(tokenizer: PreTrainedTokenizerBase, vocab: Mapping[str, int]) -> bool:
    """Whether words are spelled WordPiece-style (`##` continuations) rather than with word-start markers.

    A fast tokenizer says so itself (its model is WordPiece, BPE or Unigram). The mere presence of a `##` token is
    no proof: byte-level BPE learns `##` as an ordinary token from markdown headings. For other tokenizers, the
    convention most of the vocabulary follows decides.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    kind = type(backend.model).__name__ if backend is not None else None
    if kind == "WordPiece":
        return True
    if kind in ("BPE", "Unigram", "WordLevel"):
        return False
    continuations = sum(token.startswith("##") for token in vocab)
    return continuations > sum(token.startswith(_WORD_START_MARKERS) for token in vocab)


class SpellingWordBoundaries:
    """Whole words recovered from token spelling, for batches that were tokenized without `word_ids()`.

    One table per vocabulary, built once: whether each token starts a word (WordPiece: not a `##` continuation;
    byte-level BPE and SentencePiece: spelled with a leading `Ġ` / `▁`) and whether it is a structural special
    token ([CLS], [SEP], [PAD], [MASK], ...; [UNK] is an ordinary, maskable token as in the official collator).
    `word_ids` then numbers the words of a whole padded batch with a few tensor operations, on any device.
    A token right after a special token always starts a word.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        vocab = tokenizer.get_vocab()
        size = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
        is_wordpiece = _is_wordpiece(tokenizer, vocab)
        starts = torch.ones(size, dtype=torch.bool)
        for token, index in vocab.items():
            starts[index] = not token.startswith("##") if is_wordpiece else token.startswith(_WORD_START_MARKERS)
        special = torch.zeros(size, dtype=torch.bool)
        special_ids = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
        special[[i for i in special_ids if i is not None and 0 <= i < size]] = True
        self.is_wordpiece = is_wordpiece
        self._tables = {torch.device("cpu"): (starts, special)}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            starts, special = self._tables[torch.device("cpu")]
            self._tables[device] = (starts.to(device), special.to(device))
        return self._tables[device]

    def word_ids(self, input_ids: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, L]` word index of each token within its row (from 0), -1 for special tokens and padding.

        Args:
            input_ids: `[B, L]` token ids.
            real: `[B, L]` True for real tokens (the attention mask); all real when None.
        """
        starts, special = self._on(input_ids.device)
        size = starts.shape[0]
        in_range = (input_ids >= 0) & (input_ids < size)
        ids = input_ids.clamp(0, size - 1)
        never = special[ids] & in_range
        if real is not None:
            never = never | ~real.bool()
        begins_word = starts[ids] | ~in_range  # an id beyond the tokenizer's vocabulary counts as a word
        after_never = torch.cat([torch.ones_like(never[:, :1]), never[:, :-1]], dim=1)
        begins_word = (begins_word | after_never) & ~never
        return (begins_word.long().cumsum(-1) - 1).masked_fill(never, -1)


def _content_digest(examples: Sequence[Any]) -> bytes:
    """A digest of a batch's content: texts, token ids, query/positive/negatives."""
    digest = hashlib.blake2b(digest_size=8)
    for example in examples:
        if isinstance(example, Mapping):
            for key in ("text", "input_ids", "query", "positive", "negatives"):
                if key in example:
                    value = example[key]
                    if key == "input_ids":
                        digest.update(np.asarray(value, dtype=np.int64).tobytes())
                    else:
                        digest.update(repr(value).encode("utf-8", "surrogatepass"))
        else:
            digest.update(str(example).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.digest()


def _check_whole_number(name: str, value: Any, minimum: int = 3) -> None:
    """Refuse a missing or mistyped setting here, not later deep inside tokenization or masking."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "at least 3 ([CLS], one token, [SEP])" if minimum == 3 else f"at least {minimum}"
        raise ValueError(f"{name} must be a whole number, {need}; got {value!r}")


class _BatchRandomness:
    """Where a collator's random numbers come from.

    With a `seed`, every batch gets a generator seeded from `(seed, epoch, the batch's content)`: masks are then
    a pure function of the data, identical when a run is resumed, whatever the number of DataLoader workers or
    ranks, with fresh masks each epoch (`set_epoch`). Otherwise a given `generator`, or the global RNG.
    """

    def __init__(self, seed: int | None, generator: torch.Generator | None):
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        self.seed = seed
        self.generator = generator
        self.epoch = 0

    def for_batch(self, examples: Sequence[Any]) -> torch.Generator | None:
        if self.seed is None:
            return self.generator
        key = hashlib.blake2b(f"{self.seed}:{self.epoch}:".encode() + _content_digest(examples), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))


class RetroMAECollator:
    """Batch texts or tokenized examples into the inputs of `RetroMAEForPreTraining`.

    Args:
        tokenizer: a *fast* tokenizer (its `word_ids()` drive whole-word masking).
        encoder_mask_ratio: share of tokens the encoder must predict (paper: 0.15-0.3; default 0.3).
        decoder_mask_ratio: share of context each decoder row hides (paper: 0.5-0.7; default 0.5).
        max_length: longest sequence, special tokens included; longer inputs are truncated.
        decoder_pool_size: cap on the number of decoder masks drawn per sequence (official: 256).
        mask_replace_prob: share of encoder-selected tokens replaced by [MASK] (BERT: 0.8).
        random_replace_prob: share replaced by a random token (BERT: 0.1); the rest stay unchanged.
        pad_to_multiple_of: pad the sequence length up to a multiple of this (tensor-core friendly).
        seed: makes masks a function of `(seed, epoch, batch content)`: reproducible, identical after resuming,
            independent of DataLoader workers; call `set_epoch` for fresh masks each epoch. Training uses this.
        generator: alternatively, a torch generator to draw from (the global RNG when neither is given).
        decoding: `"enhanced"` (the paper) or `"plain"` (its ablation): the decoder then gets the sentence with
            whole words masked at `decoder_mask_ratio` replaced by [MASK], labels only there, and a padding-only
            `[B, L, L]` attention mask (none with `decoder_mask="compact"`: the model masks padding from
            `encoder_attention_mask`).
        decoder_mask: how enhanced decoding's position-specific masks travel. `"compact"` (default, what
            training uses): `decoder_mask_pool` `[B, P, L]` bool and `decoder_mask_pick` `[B, L]` int16 (int32
            past 32,767 pool members), O(P x L) per sequence; the model expands them block of query rows by block
            on its own device. `"dense"` (the official layout, on request): `decoder_attention_mask` `[B, L, L]`
            uint8, which grows with the square of the length (128 MiB at 2 x 8,192). Same random draws: expanded
            (`expand_decoder_mask(pool, pick, encoder_attention_mask)`), the compact masks equal the dense one
            bit for bit.

    Each example may be a string, a mapping with a `text` key, or a mapping with `input_ids` (special tokens
    included) and optionally `word_ids` (-1 for special tokens); without `word_ids` the words are recovered from
    the tokens' spelling (`##` continuations, or `Ġ`/`▁` word starts).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder_mask_ratio: float = 0.3,
        decoder_mask_ratio: float = 0.5,
        max_length: int = 512,
        decoder_pool_size: int = 256,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "enhanced",
        decoder_mask: str = "compact",
    ):
        if decoding not in ("enhanced", "plain"):
            raise ValueError(f"decoding must be 'enhanced' or 'plain', got {decoding!r}")
        if decoder_mask not in DECODER_MASKS:
            raise ValueError(f"decoder_mask must be 'dense' or 'compact', got {decoder_mask!r}")
        _check_whole_number("max_length", max_length)
        _check_whole_number("decoder_pool_size", decoder_pool_size, minimum=1)
        if pad_to_multiple_of is not None:
            _check_whole_number("pad_to_multiple_of", pad_to_multiple_of, minimum=1)
        for name, value in (("encoder_mask_ratio", encoder_mask_ratio), ("decoder_mask_ratio", decoder_mask_ratio)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        if not 0.0 <= mask_replace_prob + random_replace_prob <= 1.0 or min(mask_replace_prob, random_replace_prob) < 0:
            raise ValueError("mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer {type(tokenizer).__name__} needs a mask token and a pad token")
        self.tokenizer = tokenizer
        self.encoder_mask_ratio = encoder_mask_ratio
        self.decoder_mask_ratio = decoder_mask_ratio
        self.max_length = max_length
        self.decoder_pool_size = decoder_pool_size
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.pad_to_multiple_of = pad_to_multiple_of
        self.randomness = _BatchRandomness(seed, generator)
        self.generator: torch.Generator | None = None  # the current batch's source, set per call
        self.decoding = decoding
        self.decoder_mask = decoder_mask
        self._warned_truncation = False
        self._boundaries: SpellingWordBoundaries | None = None  # built from the vocabulary on first use

    # ------------------------------------------------------------------ inputs
    def _tokenize(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        if not self.tokenizer.is_fast:
            raise ValueError("RetroMAECollator needs a fast tokenizer for texts (whole words come from word_ids())")
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True)
        rows = []
        for i, ids in enumerate(encoded["input_ids"]):
            words = [-1 if w is None else w for w in encoded.word_ids(i)]
            rows.append((ids, words))
        return rows

    def _words_from_spelling(self, input_ids: Sequence[int]) -> list[int]:
        if self._boundaries is None:
            self._boundaries = SpellingWordBoundaries(self.tokenizer)
        return self._boundaries.word_ids(torch.tensor([list(input_ids)], dtype=torch.long))[0].tolist()

    def _truncate(self, ids: list[int], words: list[int]) -> tuple[list[int], list[int]]:
        if len(ids) <= self.max_length:
            return ids, words
        if not self._warned_truncation:
            logger.warning("an example of %d tokens was truncated to max_length=%d", len(ids), self.max_length)
            self._warned_truncation = True
        # Keep the closing special token so the sequence still ends like the tokenizer makes it.
        return ids[: self.max_length - 1] + ids[-1:], words[: self.max_length - 1] + words[-1:]

    def _rows(self, examples: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
        if len(examples) == 0:
            raise ValueError("RetroMAECollator got an empty batch")
        texts, rows, positions = [], [None] * len(examples), []
        for i, example in enumerate(examples):
            if isinstance(example, str):
                texts.append(example)
                positions.append(i)
            elif isinstance(example, Mapping) and "input_ids" in example:
                ids = [int(t) for t in example["input_ids"]]
                words = example.get("word_ids")
                words = (
                    self._words_from_spelling(ids) if words is None else [-1 if w is None else int(w) for w in words]
                )
                if len(words) != len(ids):
                    raise ValueError(f"example {i}: word_ids has {len(words)} entries for {len(ids)} input_ids")
                rows[i] = self._truncate(ids, words)
            elif isinstance(example, Mapping) and "text" in example:
                texts.append(example["text"])
                positions.append(i)
            else:
                raise ValueError(
                    f"example {i} must be a string or a mapping with 'text' or 'input_ids', got {type(example).__name__}"
                    + (f" with keys {sorted(example)}" if isinstance(example, Mapping) else "")
                )
        for i, text in zip(positions, texts, strict=True):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"example {i} has an empty or non-string text: {text!r}")
        for i, row in zip(positions, self._tokenize(texts) if texts else [], strict=True):
            rows[i] = row
        for i, (ids, _) in enumerate(rows):
            if len(ids) < 3:
                raise ValueError(f"example {i} has {len(ids)} tokens; RetroMAE needs at least one besides the specials")
        return rows

    # ------------------------------------------------------------------ masking
    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        self.generator = self.randomness.for_batch(examples)
        rows = self._rows(examples)
        lengths = torch.tensor([len(ids) for ids, _ in rows])
        seq_len = int(lengths.max())
        if self.pad_to_multiple_of:
            seq_len = -(-seq_len // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(rows)
        input_ids = torch.full((batch, seq_len), self.tokenizer.pad_token_id, dtype=torch.long)
        word_ids = torch.full((batch, seq_len), -1, dtype=torch.long)
        for i, (ids, words) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            word_ids[i, : len(words)] = torch.tensor(words)
        positions = torch.arange(seq_len)
        real = positions[None, :] < lengths[:, None]  # [B, L]

        encoder_input_ids, encoder_labels = self._mask_encoder(input_ids, word_ids, lengths)
        compact = self.decoder_mask == "compact"
        decoder_masks: dict[str, torch.Tensor] = {}
        if self.decoding == "plain":
            decoder_input_ids, decoder_labels, decoder_attention_mask = self._plain_decoder_inputs(
                input_ids, word_ids, lengths, real
            )
            if not compact:
                decoder_masks["decoder_attention_mask"] = decoder_attention_mask
        else:
            decoder_input_ids = input_ids
            pool, pick = sample_decoder_mask_pool(
                word_ids, lengths, self.decoder_mask_ratio, self.decoder_pool_size, self.generator
            )
            if compact:
                # Pool members are padded (never picked) to min(L, pool size), so that batches of one length have
                # one shape, as `accelerate` needs when it concatenates the batches of several processes.
                width = min(seq_len, self.decoder_pool_size)
                if pool.shape[1] < width:
                    pool = torch.cat([pool, pool.new_zeros(batch, width - pool.shape[1], seq_len)], dim=1)
                pick_dtype = torch.int16 if pool.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
                decoder_masks = {"decoder_mask_pool": pool, "decoder_mask_pick": pick.to(pick_dtype)}
            else:
                decoder_masks["decoder_attention_mask"] = expand_decoder_mask(pool, pick, real)
            decoder_labels = reconstruction_labels(input_ids, real)
        return {
            "encoder_input_ids": encoder_input_ids,
            "encoder_attention_mask": real.long(),
            "encoder_labels": encoder_labels,
            "decoder_input_ids": decoder_input_ids,
            **decoder_masks,
            "decoder_labels": decoder_labels,
        }

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh masks for a new epoch (only matters with `seed`)."""
        self.randomness.epoch = epoch

    def _mask_encoder(
        self, input_ids: torch.Tensor, word_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_encoder_tokens(
            input_ids,
            word_ids,
            lengths,
            self.encoder_mask_ratio,
            self.tokenizer.mask_token_id,
            len(self.tokenizer),
            self.mask_replace_prob,
            self.random_replace_prob,
            self.generator,
        )

    def _plain_decoder_inputs(
        self, input_ids: torch.Tensor, word_ids: torch.Tensor, lengths: torch.Tensor, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        hidden = sample_whole_word_masks(word_ids, mask_budget(lengths, self.decoder_mask_ratio), 1, self.generator)
        hidden = hidden.squeeze(1)
        decoder_input_ids = input_ids.masked_fill(hidden, self.tokenizer.mask_token_id)
        decoder_labels = input_ids.masked_fill(~hidden, IGNORE_INDEX)
        attention = None if self.decoder_mask == "compact" else (real[:, :, None] & real[:, None, :]).to(torch.uint8)
        return decoder_input_ids, decoder_labels, attention


class ContrastiveCollator:
    """Batch (query, positive, negatives) examples for stage 2: contrastive inputs plus RetroMAE inputs.

    Output keys: `query_input_ids`, `query_attention_mask` `[B, Lq]`; `passage_input_ids`,
    `passage_attention_mask` `[B * (1 + num_negatives), Lp]` grouped per query (the positive first, then its
    hard negatives); and, when `retromae` is given, the six RetroMAE keys computed on the positive passages.

    Args:
        tokenizer: a fast tokenizer.
        query_max_length, passage_max_length: truncation lengths.
        num_negatives: hard negatives per query, sampled without replacement from the example's; an example with
            fewer is refused (`ValueError`: repeating one negative would weigh it several times over, and at
            `num_negatives` far beyond the data it would be nearly all the batch); 0 uses in-batch negatives only.
        retromae: a `RetroMAECollator` for the joint RetroMAE loss on the passages; None for contrastive only.
        seed, generator: where negative sampling draws from, as for `RetroMAECollator` (the RetroMAE collator
            keeps its own).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        num_negatives: int = 1,
        retromae: RetroMAECollator | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        _check_whole_number("num_negatives", num_negatives, minimum=0)
        _check_whole_number("query_max_length", query_max_length)
        _check_whole_number("passage_max_length", passage_max_length)
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.num_negatives = num_negatives
        self.retromae = retromae
        self.randomness = _BatchRandomness(seed, generator)
        self.generator: torch.Generator | None = None

    def set_epoch(self, epoch: int) -> None:
        self.randomness.epoch = epoch
        if self.retromae is not None:
            self.retromae.set_epoch(epoch)

    def _sample_negatives(self, index: int, negatives: Sequence[str]) -> list[str]:
        if self.num_negatives == 0:
            return []
        if not negatives:
            raise ValueError(
                f"example {index} has no hard negatives but num_negatives={self.num_negatives}; "
                "set num_negatives: 0 to train with in-batch negatives only"
            )
        count = len(negatives)
        if count < self.num_negatives:
            raise ValueError(
                f"example {index} has {count} hard negative(s) but num_negatives={self.num_negatives}; each would be "
                f"repeated. Set num_negatives to {count} or less (--num-negatives), or give every example at least "
                f"{self.num_negatives}"
            )
        picks = torch.randperm(count, generator=self.generator)[: self.num_negatives]
        return [negatives[int(i)] for i in picks]

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("ContrastiveCollator got an empty batch")
        self.generator = self.randomness.for_batch(examples)
        queries, passages, positives = [], [], []
        for i, example in enumerate(examples):
            missing = [key for key in ("query", "positive") if not example.get(key)]
            if missing:
                raise ValueError(f"example {i} lacks a non-empty {' and '.join(missing)}: {dict(example)!r}")
            queries.append(example["query"])
            positives.append(example["positive"])
            passages.append(example["positive"])
            passages.extend(self._sample_negatives(i, example.get("negatives") or []))
        query_batch = self.tokenizer(
            queries, truncation=True, max_length=self.query_max_length, padding=True, return_tensors="pt"
        )
        passage_batch = self.tokenizer(
            passages, truncation=True, max_length=self.passage_max_length, padding=True, return_tensors="pt"
        )
        batch = self.retromae(positives) if self.retromae is not None else {}
        batch.update(
            query_input_ids=query_batch["input_ids"],
            query_attention_mask=query_batch["attention_mask"],
            passage_input_ids=passage_batch["input_ids"],
            passage_attention_mask=passage_batch["attention_mask"],
        )
        return batch


__all__ = [
    "COMPACT_DECODER_MASK_KEYS",
    "FORWARD_KEYS",
    "RETROMAE_KEYS",
    "RETROMAE_REQUIRED_KEYS",
    "ContrastiveCollator",
    "RetroMAECollator",
    "SpellingWordBoundaries",
    "expand_decoder_mask",
    "mask_budget",
    "mask_encoder_tokens",
    "reconstruction_labels",
    "sample_decoder_attention",
    "sample_decoder_mask_pool",
    "sample_whole_word_masks",
]
