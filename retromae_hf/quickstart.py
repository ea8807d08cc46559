"""Offline quickstart material: text and a tokenizer made from what ships with Python itself.

On a fresh machine with no network there is no corpus and no tokenizer to download. The standard library's
docstrings are a few hundred kilobytes of ordinary English prose, enough to train a small WordPiece tokenizer and
to show RetroMAE's losses fall, which is all a smoke test needs. Real recipes use real corpora and tokenizers.
"""

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

_STDLIB_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "gettext", "heapq", "html",
    "http.client", "imaplib", "inspect", "ipaddress", "itertools", "json", "locale", "logging", "mailbox",
    "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched",
    "shlex", "shutil", "smtplib", "socket", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "traceback", "turtle", "typing", "unittest", "urllib.parse",
    "uuid", "warnings", "wave", "weakref", "zipfile",
)  # fmt: skip


def python_sentences(min_words: int = 5, max_sentences: int | None = None) -> list[str]:
    """Sentences from the docstrings of the Python standard library, deduplicated, in a stable order."""
    seen: dict[str, None] = {}
    for name in _STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # a platform without the module (e.g. turtle without tkinter)
            continue
        docs = [inspect.getdoc(module) or ""]
        for _, member in sorted(vars(module).items()):
            if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(member, "__module__", "") == name:
                docs.append(inspect.getdoc(member) or "")
        for doc in docs:
            text = re.sub(r"\s+", " ", doc)
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                sentence = sentence.strip()
                words = sentence.split()
                if min_words <= len(words) <= 60 and not re.search(r"[>{}=\[\]]{2}|^\W", sentence):
                    seen.setdefault(sentence, None)
                    if max_sentences and len(seen) >= max_sentences:
                        return list(seen)
    return list(seen)


def _member_docstrings() -> list[tuple[str, str]]:
    docs, seen = [], set()
    for name in _STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        for attr, member in sorted(vars(module).items()):
            if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(member, "__module__", "") == name:
                doc = member.__doc__  # not inspect.getdoc: inherited docstrings would repeat
                if isinstance(doc, str) and doc.strip():
                    doc = re.sub(r"\s+", " ", doc).strip()
                    if doc not in seen:
                        seen.add(doc)
                        docs.append((f"{name}.{attr}", doc))
    return docs


def python_docstring_pairs(split: str = "train") -> list[dict[str, object]]:
    """(query, positive) pairs from the standard library: a docstring's first sentence and the rest of it.

    Every fifth pair (in a stable order) is held out as the `"test"` split, the others form `"train"`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pairs = []
    for _, doc in _member_docstrings():
        parts = re.split(r"(?<=[.!?])\s+", doc, maxsplit=1)
        if len(parts) == 2 and len(parts[0].split()) >= 4 and len(parts[1].split()) >= 8:
            pairs.append({"query": parts[0], "positive": parts[1][:1000], "negatives": []})
    held_out = {i for i in range(len(pairs)) if i % 5 == 4}
    return [pair for i, pair in enumerate(pairs) if (i in held_out) == (split == "test")]


def write_docstring_retrieval_task(folder: str | Path, overwrite: bool = False) -> Path:
    """Write the held-out docstring pairs as a BEIR-format folder (corpus, queries, qrels/test.tsv).

    The folder is written whole and renamed into place (`retromae_hf.outputs.staged_output`): an existing folder
    that holds anything is refused unless `overwrite`.
    """
    import json

    from .outputs import staged_output

    folder = Path(folder)
    pairs = python_docstring_pairs("test")
    with staged_output(folder, overwrite=overwrite, what="task folder") as staging:
        (staging / "qrels").mkdir()
        with (
            open(staging / "corpus.jsonl", "w", encoding="utf-8") as corpus,
            open(staging / "queries.jsonl", "w", encoding="utf-8") as queries,
        ):
            for i, pair in enumerate(pairs):
                corpus.write(json.dumps({"_id": f"d{i}", "title": "", "text": pair["positive"]}) + "\n")
                queries.write(json.dumps({"_id": f"q{i}", "text": pair["query"]}) + "\n")
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(len(pairs))]
        (staging / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def train_wordpiece_tokenizer(
    texts: "Sequence[str] | Callable[[], Iterable[str]]", vocab_size: int = 4000
) -> PreTrainedTokenizerFast:
    """A lower-cased BERT-style WordPiece tokenizer ([PAD]=0, [UNK], [CLS], [SEP], [MASK]) trained on `texts`.

    `texts` is a sequence, or a function returning a fresh iterator over the texts (called twice: the texts are
    read in two passes and never held in memory together), for corpora larger than memory.

    The same texts give the same vocabulary in every process. The `tokenizers` trainer alone does not: it gives
    the word-continuation pieces (`##e`, `##s`, ...) their ids in the iteration order of a hash map, which Rust
    seeds afresh in every process, and equal-count merges are decided by those ids, so two runs could learn
    different vocabularies (huggingface/tokenizers#1794). Every continuation piece is therefore put into the
    vocabulary up front, in sorted order (as reserved tokens during training, made ordinary entries afterwards),
    which leaves the trainer nothing to order by chance.
    """
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    passes = texts if callable(texts) else (lambda: texts)
    continuations: set[str] = set()
    for text in passes():
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            continuations.update(word[1:])
    reserved = ["##" + char for char in sorted(continuations)]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials + reserved, show_progress=False)
    backend.train_from_iterator(passes(), trainer)
    serialized = json.loads(backend.to_str())
    serialized["added_tokens"] = [token for token in serialized["added_tokens"] if token["content"] in specials]
    backend = Tokenizer.from_str(json.dumps(serialized))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def run_demo(
    output_dir: str | Path, steps: int = 30, batch_size: int = 16, seed: int = 0, overwrite: bool = False
) -> dict[str, float]:
    """Train a tiny RetroMAE for a few steps on Python's docstrings, save it, and report the losses.

    Returns the first and last step's losses. The saved folder loads with `AutoModel.from_pretrained`. It is
    written whole and renamed into place: an existing folder that holds anything is refused unless `overwrite`.

    Raises:
        ValueError: `steps` or `batch_size` is not a positive integer.
        OutputExistsError: `output_dir` holds something and `overwrite` is false.
    """
    from . import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining
    from .outputs import check_output, staged_output

    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    check_output(output_dir, overwrite=overwrite, command="demo")  # before the training, not after it
    torch.manual_seed(seed)
    sentences = python_sentences()
    logger.info("demo corpus: %d sentences from the Python standard library's docstrings", len(sentences))
    tokenizer = train_wordpiece_tokenizer(sentences, vocab_size=2000)
    config = RetroMAEConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    model = RetroMAEForPreTraining(config).train()
    collator = RetroMAECollator(tokenizer, max_length=64, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for step in range(steps):
        start = (step * batch_size) % max(1, len(sentences) - batch_size)
        output = model(**collator(sentences[start : start + batch_size]))
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append((output.loss.item(), output.encoder_loss.item(), output.decoder_loss.item()))
        logger.info("step %d/%d loss %.3f (encoder %.3f, decoder %.3f)", step + 1, steps, *history[-1])
    with staged_output(output_dir, overwrite=overwrite, command="demo") as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return {"first_loss": history[0][0], "last_loss": history[-1][0], "sentences": len(sentences)}
