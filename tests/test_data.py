"""Tests for `retromae_hf.data`: corpus/pair loading, tokenization with packing and word ids, BEIR pairs.

Most tests build small files in `tmp_path`; those touching the real data in `../shared` skip when it is absent.
"""

import csv
import gzip
import itertools
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED, project_lines
from datasets import Dataset, IterableDataset

from retromae_hf import data as data_module
from retromae_hf.data import (
    DataError,
    DataFileNotFoundError,
    load_beir_training_pairs,
    load_corpus,
    load_pairs,
    tokenize_corpus,
)

DATA = SHARED / "data"
LOGGER = "retromae_hf.data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (expected beside the repository in ../shared)")
    return path


@pytest.fixture(scope="module")
def bpe_tokenizer() -> Any:
    """A tiny byte-level BPE (RoBERTa-style `<s> ... </s>`) trained offline, to show word ids beyond WordPiece."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = ["the quick brown fox jumps over the lazy dog", "hello world, hello there", "retrieval oriented encoders"]
    backend.train_from_iterator(lines * 5, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", backend.token_to_id("<s>")), ("</s>", backend.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "hf_cache")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _texts(dataset: Iterable[dict[str, Any]]) -> list[str]:
    return [row["text"] for row in dataset]


def _project_corpus(target: Path, count: int = 200) -> Path:
    """Lines of the project's own prose; every tenth joined with the next two, longer than a 64-token block."""
    lines = project_lines(count)
    rows = [" ".join(lines[i : i + 3]) if i % 10 == 0 else line for i, line in enumerate(lines)]
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return target


def _head_lines(source: Path, target: Path, count: int) -> Path:
    with source.open(encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(count)]
    target.write_text("".join(lines), encoding="utf-8")
    return target


# ------------------------------------------------------------------------------------------------------ load_corpus
def test_txt_strips_lines_and_logs_empty_line_count(tmp_path: Path, cache_dir: str, caplog) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbffirst line  \r\n\n   \n\tsecond line\n\n third\n")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        corpus = load_corpus(path, cache_dir=cache_dir)
    assert isinstance(corpus, Dataset)
    assert corpus.column_names == ["text"]
    assert _texts(corpus) == ["first line", "second line", "third"]
    assert f"skipped 3 empty lines in {path.resolve()}" in caplog.messages


def test_non_utf8_line_raises_with_file_and_line(tmp_path: Path, cache_dir: str) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("one\ntwo\ncaf\xe9 au lait\nfour\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt, line 3: not valid UTF-8"):
        load_corpus(path, cache_dir=cache_dir)
    stream = load_corpus(path, streaming=True)
    with pytest.raises(DataError, match=r"latin1\.txt, line 3"):
        list(stream)


def test_non_utf8_in_csv_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b'text\nfine\n"quoted, ok"\nbad \xff byte\n')
    with pytest.raises(DataError, match=r"bad\.csv, line 4: not valid UTF-8"):
        list(load_corpus(path, streaming=True))
    with pytest.raises(DataError, match=r"bad\.csv, line 4: not valid UTF-8"):
        load_corpus(path, cache_dir=str(tmp_path / "cache"))


def test_all_file_formats_give_the_same_texts(tmp_path: Path, cache_dir: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ['He said "hi", then left.', "Second\tline with a tab", "Third, last"]
    rows = [{"body": t, "id": i} for i, t in enumerate(texts)]
    files = {}
    files["jsonl"] = _write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    files["json"] = _write(tmp_path / "a.json", json.dumps(rows, indent=2))
    with (tmp_path / "a.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "body"])
        writer.writeheader()
        writer.writerows(rows)
    files["csv"] = tmp_path / "a.csv"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    files["parquet"] = tmp_path / "a.parquet"
    for name, path in files.items():
        assert _texts(load_corpus(path, text_column="body", cache_dir=cache_dir)) == texts, name
    # TSV has no quoting: quotes are kept literally; tabs cannot appear inside a field.
    tsv_texts = ['He said "hi", then left.', '"quoted" start', "plain"]
    tsv = _write(tmp_path / "a.tsv", "id\tbody\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(tsv_texts)))
    assert _texts(load_corpus(tsv, text_column="body", cache_dir=cache_dir)) == tsv_texts
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress("\n".join(texts).encode()))
    assert _texts(load_corpus(gz, cache_dir=cache_dir)) == texts


def test_directory_and_sequence_sources_keep_order(tmp_path: Path, cache_dir: str) -> None:
    folder = tmp_path / "shards"
    _write(folder / "b.txt", "b1\nb2\n")
    _write(folder / "a.txt", "a1\n")
    _write(folder / "c.jsonl", '{"text": "c1"}\n')
    _write(folder / "notes.md", "ignored: not a data file\n")
    assert _texts(load_corpus(folder, cache_dir=cache_dir)) == ["a1", "b1", "b2", "c1"]
    extra = _write(tmp_path / "z.txt", "z1\n")
    assert _texts(load_corpus([extra, str(folder)], cache_dir=cache_dir)) == ["z1", "a1", "b1", "b2", "c1"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_missing_text_column_names_column_file_and_columns(tmp_path: Path, suffix: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / f"docs{suffix}"
    if suffix == ".jsonl":
        _write(path, '{"body": "x", "title": "t"}\n')
    elif suffix == ".csv":
        _write(path, "body,title\nx,t\n")
    else:
        pq.write_table(pa.Table.from_pylist([{"body": "x", "title": "t"}]), path)
    with pytest.raises(DataError) as caught:
        load_corpus(path)
    message = str(caught.value)
    assert "'text'" in message and str(path.name) in message and "body" in message and "title" in message


def test_jsonl_record_missing_column_later_reports_line(tmp_path: Path, cache_dir: str) -> None:
    path = _write(tmp_path / "docs.jsonl", '{"text": "ok"}\n{"txt": "typo"}\n')
    with pytest.raises(DataError, match=r"docs\.jsonl, line 2: column 'text' not found.*'txt'"):
        load_corpus(path, cache_dir=cache_dir)


def test_local_looking_missing_paths_never_reach_the_hub(tmp_path: Path, monkeypatch) -> None:
    def no_hub(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"sent to the Hub: {args}")

    monkeypatch.setattr(data_module.datasets, "load_dataset", no_hub)
    for source in ["missing_corpus.txt", "data.jsonl.gz", "./corpus", "~/nowhere", "a/b/c", tmp_path / "gone"]:
        with pytest.raises(DataFileNotFoundError) as caught:
            load_corpus(source)
        assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, DataError)
        assert str(source) in str(caught.value)


def test_unsupported_extension_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "notes.md", "text\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_corpus(path)


def test_hub_names_go_to_load_dataset(monkeypatch, caplog) -> None:
    calls = []

    def fake_load_dataset(name: str, config: str | None = None, *, split: str, streaming: bool) -> Any:
        calls.append((name, config, split, streaming))
        table = Dataset.from_dict({"id": [1, 2, 3, 4], "content": [" alpha ", "", "beta", "   "]})
        return table.to_iterable_dataset() if streaming else table

    monkeypatch.setattr(data_module.datasets, "load_dataset", fake_load_dataset)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        corpus = load_corpus("someone/corpus", text_column="content", dataset_config="en", split="validation")
    assert calls == [("someone/corpus", "en", "validation", False)]
    assert corpus.column_names == ["text"] and _texts(corpus) == ["alpha", "beta"]
    assert "skipped 2 empty texts in Hub dataset 'someone/corpus'" in caplog.messages
    stream = load_corpus("someone/corpus", text_column="content", streaming=True)
    assert isinstance(stream, IterableDataset) and _texts(stream) == ["alpha", "beta"]
    with pytest.raises(DataError, match=r"'body' not found in Hub dataset 'someone/corpus'.*'id', 'content'"):
        load_corpus("someone/corpus", text_column="body")


def test_streaming_and_non_streaming_give_the_same_examples(tmp_path: Path, cache_dir: str) -> None:
    txt = _write(tmp_path / "one.txt", "x\n\n y \nz\n")
    jsonl = _write(tmp_path / "two.jsonl", '{"text": "j1"}\n{"text": null}\n{"text": " j2"}\n')
    eager = load_corpus([txt, jsonl], cache_dir=cache_dir)
    lazy = load_corpus([txt, jsonl], streaming=True)
    assert isinstance(lazy, IterableDataset)
    assert list(lazy) == eager.to_list() == [{"text": t} for t in ["x", "y", "z", "j1", "j2"]]


def test_cached_dataset_is_rebuilt_when_the_file_changes(tmp_path: Path, cache_dir: str) -> None:
    path = _write(tmp_path / "corpus.txt", "old text\n")
    assert _texts(load_corpus(path, cache_dir=cache_dir)) == ["old text"]
    assert _texts(load_corpus(path, cache_dir=cache_dir)) == ["old text"]  # served from the cache
    _write(path, "new text\nand more\n")
    assert _texts(load_corpus(path, cache_dir=cache_dir)) == ["new text", "and more"]


def test_corpus_slices_stream_identically(tmp_path: Path, cache_dir: str) -> None:
    wiki = _project_corpus(tmp_path / "prose.txt", 300)
    eager = load_corpus(wiki, cache_dir=cache_dir)
    expected = [line.strip() for line in wiki.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert _texts(eager) == expected and len(expected) > 250
    assert _texts(load_corpus(wiki, streaming=True)) == expected


def test_a_corpus_folder_says_what_it_read_and_what_it_skipped(tmp_path: Path, cache_dir: str, caplog) -> None:
    """Sub-folders are not read (each is its own source); they and files of other types are counted by kind."""
    folder = tmp_path / "corpus"
    _write(folder / "a.txt", "a1\n")
    _write(folder / "b.txt.gz", "")
    (folder / "b.txt.gz").write_bytes(gzip.compress(b"b1\n"))
    _write(folder / "notes.md", "not a data file\n")
    _write(folder / "scan.pdf", "%PDF")
    _write(folder / "more" / "c.txt", "c1\n")
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert _texts(load_corpus(folder, cache_dir=cache_dir)) == ["a1", "b1"]
    assert (
        f"{folder}: reading 2 files (1 .txt, 1 .txt.gz); skipped 1 sub-folder (more) and 2 files of other types "
        "(1 .md, 1 .pdf)" in caplog.text
    )
    assert any(record.levelname == "WARNING" and "pass a sub-folder" in record.message for record in caplog.records)
    caplog.clear()
    assert _texts(load_corpus(folder / "more", cache_dir=cache_dir)) == ["c1"]
    assert f"{folder / 'more'}: reading 1 file (1 .txt)" in caplog.text and "skipped" not in caplog.text
    (folder / "a.txt").unlink()
    (folder / "b.txt.gz").unlink()
    with pytest.raises(DataError, match=r"holds no data files.*it holds 1 sub-folder \(more\) and 2 files of other"):
        load_corpus(folder, cache_dir=cache_dir)


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "not gzip"])
@pytest.mark.parametrize("streaming", [False, True])
def test_a_corrupt_gzip_corpus_is_named(tmp_path: Path, cache_dir: str, damage: str, streaming: bool) -> None:
    content = bytearray(gzip.compress(("\n".join(project_lines(200)) + "\n").encode()))
    if damage == "truncated":
        content = content[: len(content) // 2]
    elif damage == "overwritten":
        content[len(content) // 2 : len(content) // 2 + 64] = bytes(64)
    else:
        content = bytearray(b"plain text, named .gz by mistake\n" * 20)
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=rf"{path}: cannot be read as a gzip file.*gzip -t"):
        _texts(load_corpus(path, cache_dir=cache_dir, streaming=streaming))


# ------------------------------------------------------------------------------------------------ tokenize_corpus
def _content(example_ids: list[int], prefix: int = 1, suffix: int = 1) -> list[int]:
    return example_ids[prefix : len(example_ids) - suffix]


def test_packing_respects_max_length_and_never_splits_a_fitting_sentence(
    tmp_path: Path, cache_dir: str, wordpiece_tokenizer: Any, caplog
) -> None:
    source = _project_corpus(tmp_path / "prose.txt", 200)
    corpus = load_corpus(source, cache_dir=cache_dir)
    max_length = 64
    budget = max_length - 2
    with caplog.at_level(logging.INFO, logger=LOGGER):
        packed = tokenize_corpus(corpus, wordpiece_tokenizer, max_length=max_length)
    assert packed.column_names == ["input_ids", "word_ids"]
    cls, sep = wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id
    sentences = wordpiece_tokenizer(_texts(corpus), add_special_tokens=False)["input_ids"]
    blocks = [row["input_ids"] for row in packed]
    assert all(len(block) <= max_length for block in blocks)
    assert all(block[0] == cls and block[-1] == sep and cls not in block[1:-1] for block in blocks)
    # Nothing is lost or reordered: the block contents concatenate to the sentences' tokens.
    contents = [_content(block) for block in blocks]
    assert [t for c in contents for t in c] == [t for s in sentences for t in s]
    # Every block boundary is a sentence boundary, except inside sentences longer than a block.
    sentence_starts, position = {}, 0
    for index, sentence in enumerate(sentences):
        sentence_starts[position] = index
        position += len(sentence)
    position = 0
    long_sentences = sum(len(s) > budget for s in sentences)
    assert long_sentences > 0  # the slice has long paragraphs, so cutting is exercised too
    for content in contents[:-1]:
        position += len(content)
        if position in sentence_starts:
            # Greedy: the block was closed only because the next sentence did not fit.
            assert len(content) + len(sentences[sentence_starts[position]]) > budget
        else:
            # Inside a sentence: only in a sentence that alone exceeds the block, cut into full block-sized pieces.
            start = max(p for p in sentence_starts if p < position)
            assert len(sentences[sentence_starts[start]]) > budget
            assert len(content) == budget and (position - start) % budget == 0
    assert f"cut {long_sentences} sentences longer than a block of {budget} tokens into block-sized pieces" in (
        caplog.messages
    )
    # Word ids stay well formed in cut pieces too: specials -1, content numbered 0, 1, 2, ... without gaps.
    for row in packed:
        words = row["word_ids"]
        assert len(words) == len(row["input_ids"]) and words[0] == words[-1] == -1
        assert words[1] == 0 and all(b - a in (0, 1) for a, b in itertools.pairwise(words[1:-1]))


def test_word_ids_are_renumbered_densely() -> None:
    # A word that yields no token must not leave a gap; None (special token) becomes -1.
    assert data_module._dense_word_ids([None, 0, 0, 2, 5, 5, None]) == [-1, 0, 0, 1, 2, 2, -1]


def test_word_ids_follow_wordpiece_words(tmp_path: Path, cache_dir: str, wordpiece_tokenizer: Any) -> None:
    lines = ["Unaffable tokenizers misbehave, sometimes.", "Retrieval-oriented pretraining!", "Short one."] * 4
    corpus = load_corpus(_write(tmp_path / "words.txt", "\n".join(lines)), cache_dir=cache_dir)
    packed = tokenize_corpus(corpus, wordpiece_tokenizer, max_length=40)
    assert len(packed) > 1
    for row in packed:
        ids, words = row["input_ids"], row["word_ids"]
        assert len(ids) == len(words)
        assert words[0] == -1 and words[-1] == -1 and all(w >= 0 for w in words[1:-1])
        tokens = wordpiece_tokenizer.convert_ids_to_tokens(ids)
        content_words = words[1:-1]
        # Ids count whole words from 0 within the example, with no gaps or reuse.
        assert content_words[0] == 0
        assert all(b - a in (0, 1) for a, b in itertools.pairwise(content_words))
        for k in range(2, len(ids) - 1):
            # A WordPiece continuation ("##...") shares its word with the previous token, and only a continuation.
            assert (words[k] == words[k - 1]) == tokens[k].startswith("##"), (tokens[k - 1], tokens[k])
    # Distinct across packed sentences: a block holding two sentences has as many words as both together.
    first = packed[0]
    per_line = [
        max(w for w in wordpiece_tokenizer(line, add_special_tokens=False).word_ids() if w is not None) + 1
        for line in lines
    ]
    n_lines, covered = 0, 0
    while covered < len(first["input_ids"]) - 2:
        covered += len(wordpiece_tokenizer(lines[n_lines], add_special_tokens=False)["input_ids"])
        n_lines += 1
    assert n_lines >= 2 and max(first["word_ids"]) + 1 == sum(per_line[:n_lines])


def test_unpacked_matches_tokenizer_word_ids_and_counts_truncation(
    tmp_path: Path, cache_dir: str, wordpiece_tokenizer: Any, caplog
) -> None:
    lines = ["a short line", "a much longer line that will certainly not fit into twelve tokens at all", "tiny"]
    corpus = load_corpus(_write(tmp_path / "lines.txt", "\n".join(lines)), cache_dir=cache_dir)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        rows = tokenize_corpus(corpus, wordpiece_tokenizer, max_length=12, packing=False).to_list()
    assert len(rows) == len(lines)
    assert "truncated 1 texts to max_length=12 tokens" in caplog.messages
    for line, row in zip(lines, rows, strict=True):
        encoded = wordpiece_tokenizer(line, truncation=True, max_length=12)
        assert row["input_ids"] == encoded["input_ids"]
        assert row["word_ids"] == [-1 if w is None else w for w in encoded.word_ids()]
    assert len(rows[1]["input_ids"]) == 12 and rows[1]["input_ids"][-1] == wordpiece_tokenizer.sep_token_id


def test_texts_without_tokens_are_skipped_and_counted(wordpiece_tokenizer: Any, caplog) -> None:
    dataset = Dataset.from_dict({"text": ["hello there", "\u200b", "general kenobi"]})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        rows = tokenize_corpus(dataset, wordpiece_tokenizer, max_length=16, packing=False)
    assert len(rows) == 2
    assert "skipped 1 texts that produced no tokens" in caplog.messages


def test_tokenize_streaming_equals_non_streaming(tmp_path: Path, cache_dir: str, wordpiece_tokenizer: Any) -> None:
    source = _project_corpus(tmp_path / "prose.txt", 250)
    for packing in (True, False):
        eager = tokenize_corpus(
            load_corpus(source, cache_dir=cache_dir),
            wordpiece_tokenizer,
            max_length=48,
            packing=packing,
            batch_size=100,
        )
        lazy = tokenize_corpus(
            load_corpus(source, streaming=True), wordpiece_tokenizer, max_length=48, packing=packing, batch_size=100
        )
        assert isinstance(lazy, IterableDataset)
        assert list(lazy) == eager.to_list()
        assert len(eager) > 0


def test_word_ids_with_byte_level_bpe(tmp_path: Path, cache_dir: str, bpe_tokenizer: Any) -> None:
    lines = ["hello world, quickest foxes", "the lazy retrieval dog", "oriented brown encoders jump"]
    corpus = load_corpus(_write(tmp_path / "bpe.txt", "\n".join(lines)), cache_dir=cache_dir)
    packed = tokenize_corpus(corpus, bpe_tokenizer, max_length=64)
    assert len(packed) == 1  # everything fits in one block
    ids, words = packed[0]["input_ids"], packed[0]["word_ids"]
    tokens = bpe_tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and words[0] == words[-1] == -1
    # Tokens grouped by word id spell exactly the pre-tokenizer's words of each line, in order.
    pre_tokenizer = bpe_tokenizer.backend_tokenizer.pre_tokenizer
    expected_words = [piece for line in lines for piece, _ in pre_tokenizer.pre_tokenize_str(line)]
    grouped: dict[int, str] = {}
    for token, word in zip(tokens[1:-1], words[1:-1], strict=True):
        grouped[word] = grouped.get(word, "") + token
    assert list(grouped) == list(range(len(expected_words)))
    assert list(grouped.values()) == expected_words
    assert len(words) - 2 > len(expected_words)  # some words really are split into several BPE pieces


def test_tokenize_rejects_slow_tokenizer_small_max_length_and_missing_column(wordpiece_tokenizer: Any) -> None:
    class SlowTokenizer:
        is_fast = False

    dataset = Dataset.from_dict({"text": ["x"]})
    with pytest.raises(ValueError, match="fast tokenizer"):
        tokenize_corpus(dataset, SlowTokenizer(), max_length=16)
    with pytest.raises(ValueError, match="no room"):
        tokenize_corpus(dataset, wordpiece_tokenizer, max_length=2)
    with pytest.raises(DataError, match="'text' column"):
        tokenize_corpus(Dataset.from_dict({"sentence": ["x"]}), wordpiece_tokenizer, max_length=16)


# ------------------------------------------------------------------------------------------------------ load_pairs
def test_pairs_with_several_hard_negative_columns(tmp_path: Path, cache_dir: str, caplog) -> None:
    path = tmp_path / "triplets.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["anchor", "pos", "hard_neg", "neg_1", "label"])
        writer.writerow(["q one, with comma", "p one", "n a", "n b", "x"])
        writer.writerow(["q two", 'p "two"\nspanning lines', "", "n c", "y"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        pairs = load_pairs(
            path,
            query_column="anchor",
            positive_column="pos",
            negative_columns=["hard_neg", "neg_1"],
            cache_dir=cache_dir,
        )
    assert pairs.column_names == ["query", "positive", "negatives"]
    assert pairs.to_list() == [
        {"query": "q one, with comma", "positive": "p one", "negatives": ["n a", "n b"]},
        {"query": "q two", "positive": 'p "two"\nspanning lines', "negatives": ["n c"]},
    ]
    assert f"dropped 1 empty negative values in {path.resolve()}" in caplog.messages


def test_pairs_with_list_valued_negatives_and_none(tmp_path: Path, cache_dir: str) -> None:
    rows = [
        {"query": "q1", "positive": "p1", "negs": ["n1", "n2", "n3"]},
        {"query": "q2", "positive": "p2", "negs": []},
    ]
    path = _write(tmp_path / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    listed = load_pairs(path, negative_columns="negs", cache_dir=cache_dir)
    assert listed["negatives"] == [["n1", "n2", "n3"], []]
    plain = load_pairs(path, cache_dir=cache_dir)
    assert plain["negatives"] == [[], []] and plain["query"] == ["q1", "q2"]


def test_pairs_missing_columns_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.tsv", "sentence1\tsentence2\tscore\na\tb\t1\n")
    with pytest.raises(DataError) as caught:
        load_pairs(path, query_column="sentence1", positive_column="sentence2", negative_columns=["hard_neg", "neg"])
    message = str(caught.value)
    assert "'hard_neg', 'neg'" in message and "pairs.tsv" in message and "sentence2" in message
    with pytest.raises(DataError, match=r"'query', 'positive' not found"):
        load_pairs(path)


def test_pairs_empty_query_is_an_error_or_skipped_with_count(tmp_path: Path, cache_dir: str, caplog) -> None:
    path = _write(tmp_path / "pairs.tsv", "query\tpositive\nq1\tp1\n  \tp2\nq3\tp3\nq4\t\n")
    with pytest.raises(DataError, match=r"pairs\.tsv, row 2 \(line 3\): empty query \(column 'query'\)"):
        load_pairs(path, cache_dir=cache_dir)
    with pytest.raises(DataError, match=r"row 2 \(line 3\): empty query"):
        list(load_pairs(path, streaming=True))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        pairs = load_pairs(path, skip_empty=True, cache_dir=cache_dir)
    assert pairs["query"] == ["q1", "q3"]
    assert f"skipped 2 rows with an empty query or positive in {path.resolve()}" in caplog.messages


def test_pairs_tsv_rows_with_wrong_field_count_and_txt_sources(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.tsv", "query\tpositive\nq1\tp1\tstray\n")
    with pytest.raises(DataError, match=r"bad\.tsv, row 1 \(line 2\): 3 fields, but the header has 2"):
        list(load_pairs(bad, streaming=True))
    with pytest.raises(DataError, match="no columns"):
        load_pairs(_write(tmp_path / "p.txt", "q\tp\n"))


def test_real_snli_triplets_and_pairs(tmp_path: Path, cache_dir: str) -> None:
    triplets_path = _require(DATA / "pairs" / "snli_devtest" / "snli_devtest_triplets.csv")
    with triplets_path.open(encoding="utf-8", newline="") as handle:
        reference = [row for _, row in zip(range(200), csv.DictReader(handle), strict=False)]
    head = tmp_path / "triplets.csv"
    with head.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sent0", "sent1", "hard_neg"])
        writer.writeheader()
        writer.writerows(reference)
    kwargs = {"query_column": "sent0", "positive_column": "sent1", "negative_columns": "hard_neg"}
    triplets = load_pairs(head, cache_dir=cache_dir, **kwargs)
    assert triplets.to_list() == [
        {"query": r["sent0"], "positive": r["sent1"], "negatives": [r["hard_neg"]]} for r in reference
    ]
    assert list(load_pairs(head, streaming=True, **kwargs)) == triplets.to_list()

    tsv = _head_lines(DATA / "pairs" / "snli_devtest" / "snli_devtest_pairs.tsv", tmp_path / "pairs.tsv", 301)
    pairs = load_pairs(tsv, query_column="premise", positive_column="hypothesis", cache_dir=cache_dir)
    raw = [line.rstrip("\n").split("\t") for line in tsv.read_text(encoding="utf-8").splitlines()[1:]]
    assert len(pairs) == 300
    assert [(p["query"], p["positive"]) for p in pairs] == [(r[0], r[1]) for r in raw]


def test_hub_pairs(monkeypatch) -> None:
    table = Dataset.from_dict(
        {"anchor": ["a1", "a2"], "positive": ["p1", "p2"], "negative": ["n1", ""], "extra": [0, 1]}
    )
    monkeypatch.setattr(
        data_module.datasets,
        "load_dataset",
        lambda name, config=None, *, split, streaming: table.to_iterable_dataset() if streaming else table,
    )
    pairs = load_pairs("org/nli", query_column="anchor", negative_columns="negative")
    expected = [
        {"query": "a1", "positive": "p1", "negatives": ["n1"]},
        {"query": "a2", "positive": "p2", "negatives": []},
    ]
    assert pairs.to_list() == expected
    assert list(load_pairs("org/nli", query_column="anchor", negative_columns="negative", streaming=True)) == expected
    with pytest.raises(DataError, match=r"'query' not found in Hub dataset 'org/nli'.*'anchor'"):
        load_pairs("org/nli")


# ------------------------------------------------------------------------------------------------------------ BEIR
def _beir_folder(root: Path, qrels: str) -> Path:
    _write(root / "queries.jsonl", '{"_id": "q1", "text": "first query"}\n{"_id": "q2", "text": "second query"}\n')
    _write(
        root / "corpus.jsonl",
        '{"_id": "d1", "title": "Title One", "text": "body one"}\n{"_id": "d2", "title": "", "text": "body two"}\n',
    )
    _write(root / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_beir_pairs_from_a_small_folder(tmp_path: Path) -> None:
    folder = _beir_folder(tmp_path / "beir", "q1\td1\t1\nq2\td2\t2\nq2\td1\t0\n")
    pairs = load_beir_training_pairs(folder)
    assert pairs.to_list() == [
        {"query": "first query", "positive": "Title One body one", "negatives": []},
        {"query": "second query", "positive": "body two", "negatives": []},
    ]


def test_beir_unknown_ids_raise_or_are_skipped(tmp_path: Path, caplog) -> None:
    folder = _beir_folder(tmp_path / "beir", "q1\td1\t1\nq1\td404\t1\nq9\td2\t1\n")
    with pytest.raises(DataError, match=r"train\.tsv, line 3: corpus id 'd404' is not in .*corpus\.jsonl"):
        load_beir_training_pairs(folder)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        pairs = load_beir_training_pairs(folder, skip_unknown_ids=True)
    assert len(pairs) == 1
    assert any("skipped 2 judgements with unknown ids" in m for m in caplog.messages)
    with pytest.raises(DataFileNotFoundError, match=r"dev\.tsv"):
        load_beir_training_pairs(folder, split="dev")


def test_beir_training_pairs_on_real_scifact() -> None:
    folder = _require(DATA / "beir" / "scifact")
    queries = {json.loads(line)["_id"]: json.loads(line) for line in (folder / "queries.jsonl").open(encoding="utf-8")}
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")}
    judgements = [line.split("\t") for line in (folder / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    assert len(judgements) == 919
    usable = [(q, d) for q, d, score in judgements if int(score) > 0 and q in queries and d in corpus]
    pairs = load_beir_training_pairs(folder, split="train")
    assert len(pairs) == len(usable) == 919
    for index in (0, 500, len(usable) - 1):
        query_id, doc_id = usable[index]
        document = corpus[doc_id]
        assert pairs[index]["query"] == queries[query_id]["text"]
        assert pairs[index]["positive"] == f"{document['title'].strip()} {document['text'].strip()}".strip()
        assert pairs[index]["negatives"] == []


@pytest.mark.parametrize("packing", [True, False])
def test_a_long_line_is_tokenized_in_pieces_with_the_same_result(monkeypatch, wordpiece_tokenizer, packing) -> None:
    """A book on one line is tokenized piece by piece (bounded memory); the blocks are those of one whole pass."""
    text = " ".join(project_lines(200))
    others = ["a short line before", "and one after it"]
    dataset = Dataset.from_dict({"text": [others[0], text, others[1]]})
    whole = tokenize_corpus(dataset, wordpiece_tokenizer, max_length=32, packing=packing)
    monkeypatch.setattr(data_module, "PIECE_CHARS", 500)  # the text is several thousand characters
    assert len(text) > 4 * data_module.PIECE_CHARS
    pieces = tokenize_corpus(dataset, wordpiece_tokenizer, max_length=32, packing=packing)
    assert pieces["input_ids"] == whole["input_ids"]
    assert pieces["word_ids"] == whole["word_ids"]


def test_split_long_text_cuts_at_spaces_and_loses_nothing() -> None:
    text = "word " * 300 + "x" * 700
    pieces = list(data_module.split_long_text(text, size=100))
    assert "".join(pieces) == text and all(len(piece) <= 100 for piece in pieces)
    assert all(piece.startswith(" ") for piece in pieces[1:] if "word" in piece)  # words stay whole
    assert any(piece == "x" * 100 for piece in pieces)  # no space to cut at: cut at the size


# ------------------------------------------------------------------------------------ DPR and Tevatron training files
def dpr_rows(count: int = 6) -> list[dict[str, Any]]:
    """Rows in the layout of DPR's `biencoder-nq-train.json`: two positives, random and hard negatives with titles."""
    lines = project_lines(8 * count)
    return [
        {
            "dataset": "nq_train_psgs_w100",
            "question": f"question {i}: {lines[8 * i]}",
            "answers": [f"answer {i}"],
            "positive_ctxs": [
                {
                    "title": f"Title {i}",
                    "text": lines[8 * i + 1],
                    "score": 1000,
                    "title_score": 1,
                    "passage_id": str(i),
                },
                {"title": "", "text": lines[8 * i + 2], "score": 900, "title_score": 0, "passage_id": f"{i}b"},
            ],
            "negative_ctxs": [{"title": f"Random {i}", "text": lines[8 * i + 3], "score": 0, "passage_id": "r"}],
            "hard_negative_ctxs": [
                {"title": f"Hard {i}.{j}", "text": lines[8 * i + 4 + j], "score": 10 - j, "passage_id": "h"}
                for j in range(3)
            ],
        }
        for i in range(count)
    ]


def tevatron_rows(count: int = 6) -> list[dict[str, Any]]:
    """Rows in Tevatron's JSONL layout (`{query_id, query, positive_passages, negative_passages}`)."""
    lines = project_lines(4 * count)
    return [
        {
            "query_id": str(i),
            "query": lines[4 * i],
            "positive_passages": [{"docid": f"p{i}", "title": f"Doc {i}", "text": lines[4 * i + 1]}],
            "negative_passages": [{"docid": f"n{i}.{j}", "title": "", "text": lines[4 * i + 2 + j]} for j in range(2)],
        }
        for i in range(count)
    ]


def write_dpr(path: Path, rows: list[dict[str, Any]]) -> Path:
    text = json.dumps(rows, indent=2)  # DPR's files are one indented JSON array
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
        return path
    return _write(path, text)


def write_tevatron(path: Path, rows: list[dict[str, Any]]) -> Path:
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
        return path
    return _write(path, lines)


@pytest.mark.parametrize("name", ["nq-train.json", "nq-train.json.gz"])
def test_dpr_array_gives_question_first_positive_and_hard_negatives(tmp_path: Path, cache_dir: str, name) -> None:
    rows = dpr_rows()
    pairs = load_pairs(write_dpr(tmp_path / name, rows), cache_dir=cache_dir)
    assert len(pairs) == len(rows)
    for row, pair in zip(rows, pairs, strict=True):
        assert pair["query"] == row["question"]
        first = row["positive_ctxs"][0]
        assert pair["positive"] == f"{first['title']} {first['text']}"  # title + " " + text, as for BEIR
        assert pair["negatives"] == [f"{ctx['title']} {ctx['text']}" for ctx in row["hard_negative_ctxs"]]


def test_dpr_negative_kind_and_max_negatives(tmp_path: Path, cache_dir: str) -> None:
    rows = dpr_rows(3)
    path = write_dpr(tmp_path / "dpr.json", rows)
    random_only = load_pairs(path, negative_kind="random", cache_dir=cache_dir)
    assert [p["negatives"] for p in random_only] == [
        [f"Random {i} {rows[i]['negative_ctxs'][0]['text']}"] for i in range(3)
    ]
    both = load_pairs(path, negative_kind="both", max_negatives=2, cache_dir=cache_dir)
    hard = rows[0]["hard_negative_ctxs"]
    assert both[0]["negatives"] == [
        f"{hard[0]['title']} {hard[0]['text']}",
        f"{hard[1]['title']} {hard[1]['text']}",
        f"Random 0 {rows[0]['negative_ctxs'][0]['text']}",
    ]  # at most 2 of each kind, the first in file order
    with pytest.raises(DataError, match="negative_kind must be one of 'hard', 'random', 'both'"):
        load_pairs(path, negative_kind="hardest")
    with pytest.raises(DataError, match="max_negatives must be a whole number >= 0"):
        load_pairs(path, max_negatives=-1)


def test_tevatron_jsonl_and_its_missing_random_negatives(tmp_path: Path, cache_dir: str) -> None:
    rows = tevatron_rows()
    for name in ("train.jsonl", "train.jsonl.gz"):
        pairs = load_pairs(write_tevatron(tmp_path / name, rows), cache_dir=cache_dir)
        assert pairs[2] == {
            "query": rows[2]["query"],
            "positive": f"Doc 2 {rows[2]['positive_passages'][0]['text']}",
            "negatives": [passage["text"] for passage in rows[2]["negative_passages"]],  # empty title: text alone
        }
    with pytest.raises(DataError, match="Tevatron rows have no random negatives"):
        load_pairs(tmp_path / "train.jsonl", negative_kind="random")


def test_dpr_and_tevatron_stream_as_they_load(tmp_path: Path, cache_dir: str) -> None:
    for path in (
        write_dpr(tmp_path / "dpr.json.gz", dpr_rows()),
        write_tevatron(tmp_path / "tev.jsonl", tevatron_rows()),
    ):
        streamed = load_pairs(path, streaming=True, negative_kind="both")
        assert isinstance(streamed, IterableDataset)
        assert list(streamed) == list(load_pairs(path, negative_kind="both", cache_dir=cache_dir))


def test_dpr_array_is_parsed_as_a_stream(tmp_path: Path) -> None:
    """Records before a broken one come out before the parser reaches it: the array is never read whole."""
    rows = dpr_rows(4)
    text = json.dumps(rows, indent=2)
    path = _write(tmp_path / "cut.json", text[: text.rindex('"hard_negative_ctxs"')] + '"hard_negative_ctxs": [}')
    streamed = iter(load_pairs(path, streaming=True))
    assert [next(streamed)["query"] for _ in range(3)] == [row["question"] for row in rows[:3]]
    with pytest.raises(DataError, match=r"cut\.json, record 4: invalid JSON"):
        next(streamed)


def test_broken_dpr_and_tevatron_rows_are_named(tmp_path: Path, caplog) -> None:
    rows = dpr_rows(4)
    rows[2]["positive_ctxs"] = "not a list"
    with pytest.raises(DataError, match=r"dpr\.json, record 3: 'positive_ctxs' holds a str, expected a list"):
        load_pairs(write_dpr(tmp_path / "dpr.json", rows))
    rows = dpr_rows(4)
    rows[1]["hard_negative_ctxs"][0] = {"title": "no text here"}
    with pytest.raises(DataError, match=r"record 2: hard_negative_ctxs\[0\] is keys \['title'\]; every passage needs"):
        load_pairs(write_dpr(tmp_path / "dpr2.json", rows))
    rows = dpr_rows(4)
    del rows[3]["question"]
    with pytest.raises(DataError, match=r"dpr3\.json, record 4: column 'question' not found"):
        load_pairs(write_dpr(tmp_path / "dpr3.json", rows))
    rows = tevatron_rows(4)
    rows[3] = {"query": "q", "positive": "a plain pair in a Tevatron file"}
    with pytest.raises(DataError, match=r"tev\.jsonl, line 4: a non-DPR, non-Tevatron row in a file whose first row"):
        load_pairs(write_tevatron(tmp_path / "tev.jsonl", rows))


def test_rows_without_positives_or_needed_negatives_are_skipped_and_counted(
    tmp_path: Path, cache_dir: str, caplog
) -> None:
    rows = dpr_rows(5)
    rows[1]["positive_ctxs"] = []  # DPR's own trainer drops these too
    rows[3]["hard_negative_ctxs"] = []
    path = write_dpr(tmp_path / "dpr.json", rows)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        kept = load_pairs(path, cache_dir=cache_dir)
    assert [p["query"] for p in kept] == [rows[i]["question"] for i in (0, 2, 3, 4)] and kept[2]["negatives"] == []
    assert "skipped 1 DPR rows without a positive passage" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        needed = load_pairs(path, require_negatives=True, cache_dir=cache_dir)
    assert [p["query"] for p in needed] == [rows[i]["question"] for i in (0, 2, 4)]
    assert "skipped 1 DPR rows without hard negatives" in caplog.text


def test_other_json_arrays_still_read_by_columns(tmp_path: Path, cache_dir: str) -> None:
    path = _write(tmp_path / "pairs.json", json.dumps([{"query": "q1", "positive": "p1", "neg": ["n1"]}]))
    assert load_pairs(path, negative_columns="neg", cache_dir=cache_dir)[0] == {
        "query": "q1", "positive": "p1", "negatives": ["n1"]
    }  # fmt: skip
    broken = _write(tmp_path / "broken.json", '[{"query": "q1", "positive": "p1"}, 7]')
    with pytest.raises(DataError, match=r"broken\.json, record 2: expected a JSON object, got int"):
        load_pairs(broken)


def test_hub_dataset_in_tevatron_layout(monkeypatch) -> None:
    rows = tevatron_rows(3)
    rows[1]["positive_passages"] = []
    table = Dataset.from_list(rows)
    monkeypatch.setattr(
        data_module.datasets,
        "load_dataset",
        lambda name, config=None, *, split, streaming: table.to_iterable_dataset() if streaming else table,
    )
    expected = [
        {
            "query": rows[i]["query"],
            "positive": f"Doc {i} {rows[i]['positive_passages'][0]['text']}",
            "negatives": [rows[i]["negative_passages"][0]["text"]],
        }
        for i in (0, 2)
    ]
    assert load_pairs("Tevatron/tiny", max_negatives=1).to_list() == expected
    assert list(load_pairs("Tevatron/tiny", max_negatives=1, streaming=True)) == expected
    with pytest.raises(DataError, match=r"Hub dataset 'Tevatron/tiny': Tevatron rows have no random negatives"):
        load_pairs("Tevatron/tiny", negative_kind="random")
