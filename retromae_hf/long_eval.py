"""Synthetic long-document retrieval sets, written as BEIR folders that `retromae-hf evaluate` scores offline.

In the style of the passkey and needle tasks of LongEmbed (Zhu et al., 2024, arXiv 2404.12096): one fact is
hidden at a random depth of a long document made of ordinary text, and a query asks for it. Each document holds
its own fact about its own (synthetic) person, "The pass key of Ada Okafor is 48213. Remember it.", among filler
sentences that say nothing about anyone's pass key; the query "What is the pass key of Ada Okafor?" has that one
document as its only relevant answer. The filler of each document is a different stretch of the source text, so
the fact is the only thing that ties a query to its document: a model finds it only if the fact reached the
document's embedding, wherever it sits.

Lengths are counted in the evaluated model's own tokenizer, special tokens included, so that a document of the
`passkey-8192` folder fills an 8,192-token model exactly and a 512-token model truncates it (and loses a fact that
lies beyond its reach, which is what the set measures). Everything is drawn from `seed` and the length, so the
same tokenizer, text and seed give byte-identical folders, and adding a length does not change the others.

What it is not: LongEmbed itself (its filler, facts and documents differ; use the mteb task names
`LEMBPasskeyRetrieval` and `LEMBNeedleRetrieval` online for published numbers), nor a test of reading
comprehension: the query names the person, so the set measures whether a fact survives in the embedding of a
long document, at each length and depth.

Layout written by `make_long_eval` (one BEIR folder per length, under one parent):

    DIR/long_eval.json                 settings (tokenizer, lengths, seed, text source and hash), for the record
    DIR/passkey-256/corpus.jsonl       {"_id", "title", "text", "tokens", "depth"}: one document per query
    DIR/passkey-256/queries.jsonl      {"_id", "text"}
    DIR/passkey-256/qrels/test.tsv     query-id, corpus-id, score (1)
    DIR/passkey-512/...                and so on for every length

`retromae-hf evaluate MODEL --tasks DIR` scores every length (a folder of BEIR folders is expanded, see
`evaluation.expand_task_folders`); `--tasks DIR/passkey-8192` scores one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MissingInputError, UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: LongEmbed's passkey and needle lengths up to ModernBERT's and BGE-M3's 8,192.
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
DEFAULT_DOCUMENTS = 50
MANIFEST = "long_eval.json"
FOLDER_PREFIX = "passkey-"
#: The shortest length: the fact, its query's name and some filler must fit with the special tokens.
MIN_LENGTH = 64
#: Filler "sentences" longer than this many words (a text without punctuation) are cut into pieces this long.
_MAX_PIECE_WORDS = 48

# Synthetic people: first names and surnames of several languages, combined (ours; 48 x 48 = 2,304 names).
_FIRST_NAMES = (
    "Ada", "Aiko", "Amara", "Anders", "Aroha", "Bao", "Beatriz", "Chidi", "Dagny", "Dmitri", "Elif", "Emeka",
    "Farah", "Gustavo", "Hana", "Ines", "Ivo", "Jalen", "Kaito", "Kalani", "Lars", "Leila", "Marek", "Mei",
    "Nadia", "Nikolai", "Noor", "Oskar", "Priya", "Quentin", "Rafael", "Rosa", "Sami", "Sione", "Sofia", "Tariq",
    "Teodora", "Umar", "Valeria", "Wanjiru", "Xavier", "Yara", "Yusuf", "Zainab", "Zofia", "Ilse", "Moana", "Tomas",
)  # fmt: skip
_SURNAMES = (
    "Abara", "Bergstrom", "Castellanos", "Dimitriou", "Eriksen", "Fonseca", "Gallagher", "Haddad", "Ishikawa",
    "Jovanovic", "Kowalczyk", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rahman",
    "Silvestri", "Tanaka", "Udeh", "Vasquez", "Wojcik", "Xu", "Yilmaz", "Zielinski", "Achterberg", "Brennan",
    "Chaudhry", "Delacroix", "Esposito", "Fitzgerald", "Grimaldi", "Hoffmann", "Iwu", "Jansen", "Kapoor",
    "Laurent", "Mwangi", "Novak", "Oyelaran", "Pereira", "Rasmussen", "Santos", "Takahashi", "Van Dijk", "Weber",
    "Zhang",
)  # fmt: skip


class LongEvalError(UserError, ValueError):
    """A setting of the long-document set that cannot work (a length too short, too many documents, no text)."""


@dataclass(frozen=True)
class _Filler:
    """The source text as pieces (sentences, or word runs of long ones) with their token counts."""

    pieces: list[str]
    counts: list[int]


def source_sentences(text_file: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """The filler text as sentences, and a description of where it came from.

    Without a file: the standard library's docstrings (`retromae_hf.quickstart.python_sentences`, the quickstart's
    own offline text). With a file: its text, split at sentence ends; runs of more than 48 words without a
    sentence end are cut into pieces of 48 words, so that any prose (or a text without punctuation) works.
    """
    if text_file is None:
        from .quickstart import python_sentences

        return python_sentences(), "python-docstrings (retromae_hf.quickstart.python_sentences)"
    path = Path(text_file)
    if not path.is_file():
        raise MissingInputError(f"no text file at {path} (--text): give a UTF-8 text file to build the documents from")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LongEvalError(f"{path} (--text) is not UTF-8 text ({error.reason} at byte {error.start})") from None
    sentences = []
    for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text).strip()):
        words = sentence.split()
        sentences += [" ".join(words[i : i + _MAX_PIECE_WORDS]) for i in range(0, len(words), _MAX_PIECE_WORDS)]
    if not sentences:
        raise LongEvalError(
            f"{path} (--text) holds no text (it is empty or only white space): give a UTF-8 file of ordinary prose, "
            "at least twice as long as the longest length, or leave --text out to use Python's docstrings"
        )
    return sentences, str(path)


def _filler(tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str]) -> _Filler:
    # Each piece is counted with a leading space, as it stands inside a document (byte-level BPE spells a word
    # after a space differently from one at the start of a text).
    encoded = tokenizer([" " + piece for piece in sentences], add_special_tokens=False)["input_ids"]
    kept = [(piece, len(ids)) for piece, ids in zip(sentences, encoded, strict=True) if ids]
    return _Filler([piece for piece, _ in kept], [count for _, count in kept])


def _count(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Tokens of `text` as the model reads it: special tokens included."""
    return len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def _unused_names(text: str, count: int) -> list[str]:
    """The synthetic names the filler text never mentions (a query must match one document only); at least
    `count` of them."""
    names = [f"{first} {last}" for first in _FIRST_NAMES for last in _SURNAMES]
    unused = [name for name in names if name not in text]
    if count > len(unused):
        raise LongEvalError(f"--documents {count}: only {len(unused)} synthetic names are absent from the text")
    return unused


def _document(
    tokenizer: PreTrainedTokenizerBase, filler: _Filler, length: int, fact: str, rng: random.Random
) -> tuple[str, int, float]:
    """A document of at most `length` tokens (special tokens included) holding `fact` at a random depth; returns
    (text, tokens, depth), depth being the share of the filler's tokens that come before the fact."""
    budget = length - _count(tokenizer, fact)  # the fact with the special tokens around it
    parts: list[str] = []
    used = 0
    start = rng.randrange(len(filler.pieces))
    for step in range(len(filler.pieces)):
        index = (start + step) % len(filler.pieces)
        if used + filler.counts[index] > budget:
            # The rest of the budget from the first words of the piece that no longer fits whole.
            words = filler.pieces[index].split()
            low, high = 0, len(words)
            while low < high:  # the most words whose tokens fit
                middle = (low + high + 1) // 2
                piece = " " + " ".join(words[:middle])
                if len(tokenizer(piece, add_special_tokens=False)["input_ids"]) <= budget - used:
                    low = middle
                else:
                    high = middle - 1
            if low:
                parts.append(" ".join(words[:low]))
            break
        parts.append(filler.pieces[index])
        used += filler.counts[index]
    depth_draw = rng.random()
    sizes = [len(ids) for ids in tokenizer([" " + part for part in parts], add_special_tokens=False)["input_ids"]]
    while True:
        # The fact goes between two pieces, at the boundary nearest to the drawn depth (in filler tokens).
        total = sum(sizes) or 1
        before = [0]
        for size in sizes:
            before.append(before[-1] + size)
        boundary = min(range(len(before)), key=lambda b: abs(before[b] - depth_draw * total))
        text = " ".join([*parts[:boundary], fact, *parts[boundary:]])
        tokens = _count(tokenizer, text)
        if tokens <= length or not parts:
            return text, tokens, before[boundary] / total
        sizes.pop()
        parts.pop()  # joining can merge or split tokens at the seams: drop filler until it fits


def make_long_eval(
    tokenizer: PreTrainedTokenizerBase | str,
    output_dir: str | os.PathLike,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    documents: int = DEFAULT_DOCUMENTS,
    text_file: str | os.PathLike | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic passkey retrieval set: one BEIR folder per length under `output_dir`.

    Args:
        tokenizer: the evaluated model's tokenizer (object, folder or Hub name): lengths are in its tokens.
        output_dir: the parent folder to write (`passkey-<length>/` for each length, and `long_eval.json`);
            written beside it and renamed into place, refused if it holds anything unless `overwrite`.
        lengths: document lengths in tokens, special tokens included (each at least 64).
        documents: documents (and queries) per length, at most 2,304 (the synthetic names).
        text_file: a UTF-8 text file to build the documents from; default: the standard library's docstrings.
        seed: the seed of every draw (filler stretch, person, pass key, depth); each length draws from its own
            generator seeded with (seed, length).
        overwrite: replace an existing `output_dir`.

    Returns:
        `output_dir`.

    Raises:
        LongEvalError: a length below 64, duplicate lengths, fewer than 2 or too many documents, or too little text.
        MissingInputError: `text_file` does not exist.
        OutputExistsError: `output_dir` holds something (without `overwrite`), or is an input.
    """
    from .outputs import check_output, staged_output

    lengths = list(lengths)
    if not lengths:
        raise LongEvalError("no lengths given (--lengths): give one or more lengths in tokens, e.g. 256 512 8192")
    short = [length for length in lengths if length < MIN_LENGTH]
    if short:
        raise LongEvalError(
            f"lengths {short} (--lengths) are too short: a document needs at least {MIN_LENGTH} tokens to hold the "
            "fact, the special tokens and some text around it"
        )
    if len(set(lengths)) != len(lengths):
        raise LongEvalError(f"--lengths lists a length twice: {lengths}")
    most = len(_FIRST_NAMES) * len(_SURNAMES)
    if not 2 <= documents <= most:
        raise LongEvalError(f"--documents must be between 2 and {most} (the synthetic names), got {documents}")
    inputs = [text_file] + ([tokenizer] if isinstance(tokenizer, str | os.PathLike) else [])
    check_output(output_dir, overwrite=overwrite, inputs=inputs, what="long-document set (--output-dir)", command="make-long-eval")
    sentences, source = source_sentences(text_file)
    if isinstance(tokenizer, str | os.PathLike):
        from transformers import AutoTokenizer

        from .errors import remote_resource

        with remote_resource("tokenizer", str(tokenizer), "--tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    filler = _filler(tokenizer, sentences)
    names = _unused_names(" ".join(filler.pieces), documents)  # once: the text is the same for every length
    if sum(filler.counts) < 2 * max(lengths):
        raise LongEvalError(
            f"the text ({source}) has {sum(filler.counts)} tokens, too little to fill documents of {max(lengths)} "
            "tokens with different stretches of it; give a longer text (--text), at least twice the longest length"
        )

    from tqdm.auto import tqdm

    manifest = {
        "kind": "passkey",
        "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        "lengths": lengths,
        "documents": documents,
        "seed": seed,
        "text": source,
        "text_sha256": hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest(),
        "folders": {str(length): f"{FOLDER_PREFIX}{length}" for length in lengths},
        "evaluate": "retromae-hf evaluate MODEL --tasks <this folder>  (or one length: --tasks <this folder>/"
        f"{FOLDER_PREFIX}<length>)",
    }
    with staged_output(
        output_dir, overwrite=overwrite, inputs=inputs, what="long-document set (--output-dir)", command="make-long-eval"
    ) as staging:
        for length in tqdm(lengths, desc="Long-document set", unit="length"):
            rng = random.Random(f"retromae-hf passkey {seed} {length}")
            folder = staging / f"{FOLDER_PREFIX}{length}"
            (folder / "qrels").mkdir(parents=True)
            corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
            for i, person in enumerate(rng.sample(names, documents)):
                key = rng.randrange(10_000, 100_000)
                fact = f"The pass key of {person} is {key}. Remember it."
                text, tokens, depth = _document(tokenizer, filler, length, fact, rng)
                corpus.append({"_id": f"d{i}", "title": "", "text": text, "tokens": tokens, "depth": round(depth, 4)})
                queries.append({"_id": f"q{i}", "text": f"What is the pass key of {person}?"})
                qrels.append(f"q{i}\td{i}\t1")
            for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
                lines = [json.dumps(row, ensure_ascii=False) for row in rows]
                (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
            (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
            counts = [row["tokens"] for row in corpus]
            logger.info("%s: %d documents of %d..%d tokens", folder.name, len(corpus), min(counts), max(counts))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(output_dir)


__all__ = ["DEFAULT_LENGTHS", "LongEvalError", "make_long_eval", "source_sentences"]
