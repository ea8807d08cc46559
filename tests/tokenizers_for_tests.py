"""Tiny tokenizers trained in the test session from the project's own text (README and docs).

Unit tests should not need a downloaded tokenizer: these three cover the tokenizer families the supported
encoders use, each with its architecture's special-token layout, so whole-word masking and special-token handling
are tested on real sub-word schemes:

- ``wordpiece``: BERT's scheme (lower-cased, ``##`` continuations), ``[CLS] ... [SEP]``;
- ``bpe``: byte-level BPE as RoBERTa's (``Ġ`` marks a word start), ``<s> ... </s>``; with ``layout="bert"`` it
  takes ModernBERT's layout instead (byte-level BPE with ``[CLS] ... [SEP]``);
- ``unigram``: SentencePiece-style Unigram as XLM-R's (``▁`` marks a word start), ``<s> ... </s>``.

A given checkout yields the same vocabulary, ids included, every time: byte-level BPE comes from tokenizers'
trainer (deterministic); the WordPiece and Unigram vocabularies are counted here (frequent words, frequent
suffixes, every character), because tokenizers' trainers for those two break ties in hash order. The vocabularies are small (a few hundred to a thousand entries): size tiny models to
`len(tokenizer)`.

    from tokenizers_for_tests import train_tokenizer
    tokenizer = train_tokenizer("bpe", tmp_path)          # a PreTrainedTokenizerFast, also saved in tmp_path
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("wordpiece", "bpe", "unigram")

# Special tokens of each layout, in vocabulary order (ids 0..4).
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
ROBERTA_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}


def project_text() -> list[str]:
    """Non-empty lines of the README and docs, in a fixed order (the training text of every tokenizer here)."""
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    lines = []
    for path in files:
        if path.is_file():
            lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < 100:
        raise RuntimeError(f"too little project text to train a test tokenizer from {[str(f) for f in files]}")
    return lines


def train_tokenizer(kind: str, directory: str | os.PathLike, vocab_size: int = 800, layout: str | None = None):
    """Train a tiny tokenizer of `kind` ("wordpiece", "bpe" or "unigram"), save it in `directory`, return it.

    `layout` is "bert" (``[CLS] ... [SEP]``) or "roberta" (``<s> ... </s>``); the default is the family's usual one
    (wordpiece: bert, bpe and unigram: roberta).
    """
    # Imported here: the test modules that only need the path helpers should not pay for tokenizers.
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    layout = layout or ("bert" if kind == "wordpiece" else "roberta")
    if layout not in ("bert", "roberta"):
        raise ValueError(f"layout must be 'bert' or 'roberta', got {layout!r}")
    specials = BERT_SPECIALS if layout == "bert" else ROBERTA_SPECIALS
    special_list = list(specials.values())

    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(_wordpiece_vocab(special_list, vocab_size), unk_token=specials["unk"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "unigram":
        pieces = _unigram_pieces(special_list, vocab_size)
        tokenizer = Tokenizer(models.Unigram(pieces, unk_id=special_list.index(specials["unk"]), byte_fallback=False))
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    else:
        # tokenizers' byte-level BPE trainer is deterministic (checked across processes); its WordPiece and Unigram
        # trainers are not (ties are broken in hash order), hence the counted vocabularies above.
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_list,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(project_text(), trainer=trainer)

    cls, sep = specials["cls"], specials["sep"]
    cls_id, sep_id = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
    if kind == "bpe" and layout == "roberta":
        tokenizer.post_processor = processors.RobertaProcessing((sep, sep_id), (cls, cls_id), add_prefix_space=False)
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1" if layout == "bert" else f"{cls} $A {sep} {sep} $B {sep}",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=cls,
        eos_token=sep,
        cls_token=cls,
        sep_token=sep,
        pad_token=specials["pad"],
        unk_token=specials["unk"],
        mask_token=specials["mask"],
        model_max_length=512,
    )
    fast.save_pretrained(str(directory))
    return fast


def _word_counts(lowercase: bool = True) -> list[tuple[str, int]]:
    """Words and punctuation of the project text with their counts, most frequent first, ties by text."""
    counts: dict[str, int] = {}
    for line in project_text():
        for word in re.findall(r"\w+|[^\w\s]", line.lower() if lowercase else line):
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _suffix_counts(words: list[tuple[str, int]], lengths: tuple[int, ...] = (2, 3, 4)) -> list[tuple[str, int]]:
    """Word endings of a few lengths with their counts, so that rarer words split into stem + suffix pieces."""
    counts: dict[str, int] = {}
    for word, count in words:
        for n in lengths:
            if len(word) > n + 1:
                counts[word[-n:]] = counts.get(word[-n:], 0) + count
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _wordpiece_vocab(specials: list[str], vocab_size: int) -> dict[str, int]:
    """Specials, every character (alone and as a ``##`` continuation), then frequent suffixes and words."""
    words = _word_counts()
    chars = sorted({char for word, _ in words for char in word})
    tokens = [*specials, *chars, *(f"##{char}" for char in chars)]
    suffixes = [f"##{suffix}" for suffix, _ in _suffix_counts(words)[: vocab_size // 8]]
    for token in [*suffixes, *(word for word, _ in words)]:
        if len(tokens) >= vocab_size:
            break
        if token not in tokens:
            tokens.append(token)
    return {token: index for index, token in enumerate(tokens)}


def _unigram_pieces(specials: list[str], vocab_size: int) -> list[tuple[str, float]]:
    """SentencePiece-style pieces (``▁`` starts a word) with log-frequency scores; specials score 0. Cased, as
    XLM-R's vocabulary is."""
    words = _word_counts(lowercase=False)
    total = sum(count for _, count in words)
    chars: dict[str, int] = {}
    for word, count in words:
        for char in word:
            chars[char] = chars.get(char, 0) + count
    scored = {"▁": total}
    scored.update(chars)
    budget = vocab_size - len(specials) - len(scored)
    for suffix, count in _suffix_counts(words)[: budget // 4]:
        scored.setdefault(suffix, count)
    for word, count in words:
        if len(scored) >= vocab_size - len(specials):
            break
        scored.setdefault(f"▁{word}", count)
    pieces = sorted(scored.items(), key=lambda item: (-item[1], item[0]))
    return [(token, 0.0) for token in specials] + [(piece, math.log(count / total)) for piece, count in pieces]
