"""Pre-training at scale: resume after a 2-process run, prepared corpora, sharded streaming, tokenizer training that
streams. The 2-process tests run `retromae-hf train` under torchrun (gloo, CPU) through `distributed_training.py`."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, project_lines, run_cli, run_torchrun

TINY_MODEL = (
    "model_config={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, "
    "max_position_embeddings: 64}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(wordpiece_tokenizer) -> Path:
    return Path(wordpiece_tokenizer.name_or_path)


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory) -> Path:
    """Four files: four shards when streamed (two per rank)."""
    folder = tmp_path_factory.mktemp("corpus")
    lines = project_lines(240)
    for index in range(4):
        (folder / f"part{index}.txt").write_text("\n".join(lines[index::4]) + "\n", encoding="utf-8")
    return folder


def train_args(corpus: Path, output_dir: Path, tokenizer: Path, max_steps: int, *extra: str) -> list[str]:
    return [
        "train", "--stage", "1", "--model", "scratch", "--tokenizer", str(tokenizer), "--corpus", str(corpus),
        "--max-length", "64", "--output-dir", str(output_dir), "--no-evaluate", "--set", TINY_MODEL,
        "--set", f"training.max_steps={max_steps}", "--set", "training.per_device_train_batch_size=4",
        "--set", "training.logging_steps=1", "--set", "training.save_steps=2", "--set", "training.seed=5",
        "--set", "training.dataloader_num_workers=0", *extra,
    ]  # fmt: skip


def losses(folder: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines() if line.strip()]
    return {record["step"]: record["loss"] for record in records if "loss" in record}


def batches(record_dir: Path, rank: int) -> list[list[list[int]]]:
    lines = (record_dir / f"batches-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# A text corpus tokenized by the run resumes as a prepared one does (both are map-style datasets, read through the
# same DistributedSampler); the prepared case also shows that no rank tokenizes.
@pytest.mark.parametrize("corpus", ["prepared", "streamed"])
def test_two_process_run_resumes_with_plain_resume_exactly(corpus, tmp_path, corpus_folder, wordpiece_tokenizer):
    from retromae_hf.prepare import prepare_corpus

    tokenizer_dir = Path(wordpiece_tokenizer.name_or_path)
    streaming = corpus == "streamed"
    extra = ("--streaming",) if streaming else ()
    if corpus == "prepared":
        prepare_corpus(wordpiece_tokenizer, [corpus_folder], tmp_path / "prepared", max_length=64, num_proc=1)
        corpus_folder = tmp_path / "prepared"
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    output = run_torchrun(
        "distributed_training.py", str(tmp_path / "rec-reference"), "--",
        *train_args(corpus_folder, reference, tokenizer_dir, 6, *extra), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert output.count("DDP over gloo") == 2  # no GPU here: real DDP, said so by each process
    if corpus == "prepared":  # no rank tokenizes: both read the prepared shards at once
        assert output.count("(no tokenizing)") == 2 and "Tokenizing" not in output
    run_torchrun(
        "distributed_training.py", str(tmp_path / "rec-killed"), "4", "--",
        *train_args(corpus_folder, killed, tokenizer_dir, 6, *extra), cwd=REPO, timeout=300, expect_success=False,
    )  # fmt: skip
    assert (killed / "checkpoint-4").is_dir() and not (killed / "final").exists()
    records = {json.loads((path / "retromae_run.json").read_text())["run_id"] for path in killed.glob("checkpoint-*")}
    assert records == {json.loads((killed / "retromae_run.json").read_text())["run_id"]}  # one run, one record
    output = run_torchrun(
        "distributed_training.py", str(tmp_path / "rec-resumed"), "--",
        *train_args(corpus_folder, killed, tokenizer_dir, 6, *extra), "--resume", cwd=REPO, timeout=300,
    )  # fmt: skip
    assert f"resuming from {killed / 'checkpoint-4'}" in output
    if streaming:  # each rank continued its stream where it stood: nothing read and collated again to skip it
        assert output.count("continuing the stream where checkpoint") == 2
        assert all((killed / "checkpoint-4" / f"stream_state_rank{rank}.json").is_file() for rank in (0, 1))
        for rank in (0, 1):  # the first-batch check, steps 5 and 6, and the loader's one batch of read-ahead
            assert len(batches(tmp_path / "rec-resumed", rank)) == 4
    expected, got = losses(reference), losses(killed)
    assert sorted(got) == sorted(expected) == list(range(1, 7))
    for step in (5, 6):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    for rank in (0, 1):  # each rank collated its own batches, the same ones as without the interruption
        assert batches(tmp_path / "rec-resumed", rank)[-3:] == batches(tmp_path / "rec-reference", rank)[-3:]
    own = [{tuple(row) for batch in batches(tmp_path / "rec-reference", rank)[1:] for row in batch} for rank in (0, 1)]
    assert own[0] and own[1] and not own[0] & own[1]  # the ranks read disjoint data


def test_streamed_local_corpus_feeds_two_workers_on_two_ranks_disjoint_data(tmp_path):
    """One file, split into byte ranges: each of 2 ranks x 2 DataLoader workers reads its own lines, all of them."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader, get_worker_info

    from retromae_hf.data import load_corpus

    path = tmp_path / "one.txt"
    lines = [f"line {index} of a corpus that streams in shards " + "x" * 200 for index in range(20_000)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # ~4.6 MB: four ranges of >= 1 MiB
    stream = load_corpus(str(path), streaming=True, num_shards=4)
    assert stream.num_shards == 4

    def collate(rows):
        return get_worker_info().id, [row["text"] for row in rows]

    seen: dict[tuple[int, int], list[str]] = {}
    for rank in (0, 1):  # what the Trainer's accelerate does with dispatch_batches off (retromae-hf's setting)
        loader = DataLoader(stream, batch_size=64, num_workers=2, collate_fn=collate)
        loader = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
        for worker, texts in loader:
            seen.setdefault((rank, worker), []).extend(texts)
    assert sorted(seen) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    everything = [text for texts in seen.values() for text in texts]
    assert len(everything) == len(set(everything)) == len(lines)  # disjoint, and nothing lost
    assert sorted(everything) == sorted(lines)


def test_line_ranges_read_every_line_once(tmp_path):
    from retromae_hf.data import _iter_line_range, line_ranges

    path = tmp_path / "lines.txt"
    text = "".join(f"{'é' * (index % 7)}line {index}\n" for index in range(500)) + "last line without newline"
    path.write_text("\ufeff" + text, encoding="utf-8")
    for count in (1, 2, 3, 7, 50):
        ranges = line_ranges(path, count, min_bytes=1)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size and len(ranges) == count
        read = [line for start, end in ranges for _, line in _iter_line_range(str(path), start, end)]
        assert "".join(read) == text, count


# ---------------------------------------------------------------------------------------------- prepared corpora
def prepared_and_tokenized(tokenizer, corpus: Path, folder: Path, **options):
    from retromae_hf.data import load_corpus, tokenize_corpus
    from retromae_hf.prepare import load_prepared, prepare_corpus

    prepare_corpus(tokenizer, [corpus], folder, max_length=64, num_proc=1, **options)
    prepared = load_prepared(folder, tokenizer, max_length=64, packing=True)
    reference = tokenize_corpus(load_corpus(str(corpus)), tokenizer, max_length=64)
    return prepared, reference


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_prepared_corpus_gives_the_blocks_and_masks_of_tokenize_corpus(kind, trained_tokenizer, tmp_path):
    """WordPiece: only input_ids are stored (words from spelling); byte-level BPE: word_ids too. Masks are the same."""
    from retromae_hf.collator import RetroMAECollator

    tokenizer = trained_tokenizer(kind, "bert" if kind == "wordpiece" else "roberta")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(project_lines(300)) + "\n", encoding="utf-8")
    prepared, reference = prepared_and_tokenized(tokenizer, corpus, tmp_path / "prepared")
    stored = {"wordpiece": ["input_ids"], "bpe": ["input_ids", "word_ids"]}[kind]
    assert prepared.column_names == stored
    assert str(prepared.features["input_ids"].feature.dtype) == "uint16"
    assert prepared["input_ids"] == reference["input_ids"]
    collator = RetroMAECollator(tokenizer, max_length=64, seed=11)
    for start in range(0, len(reference), 16):
        rows = range(start, min(start + 16, len(reference)))
        ours, theirs = collator([prepared[i] for i in rows]), collator([reference[i] for i in rows])
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            same = torch.equal(ours[key], value) if isinstance(value, torch.Tensor) else ours[key] == value
            assert same, (key, start)


class Interrupted(Exception):
    """Stands for a preparation stopped half-way (a kill, a full disk)."""


def test_prepare_resumes_keeping_finished_shards(wordpiece_tokenizer, tmp_path, monkeypatch):
    from retromae_hf import prepare

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = project_lines(300)
    for index in range(3):
        (corpus / f"part{index}.txt").write_text("\n".join(lines[index::3]) + "\n", encoding="utf-8")
    whole = prepare.prepare_corpus(wordpiece_tokenizer, [corpus], tmp_path / "whole", max_length=64, num_proc=1)

    calls = []
    original = prepare._prepare_piece

    def interrupted(piece):
        calls.append(piece.index)
        if calls == [0, 1]:
            raise Interrupted
        return original(piece)

    monkeypatch.setattr(prepare, "_prepare_piece", interrupted)
    folder = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        prepare.prepare_corpus(wordpiece_tokenizer, [corpus], folder, max_length=64, num_proc=1)
    assert not (folder / prepare.MANIFEST).exists()
    with pytest.raises(prepare.PreparedCorpusError, match="did not finish"):
        prepare.find_prepared([str(folder)])
    first = folder / "shards" / "shard-00000.arrow"
    stamp = first.stat().st_mtime_ns
    calls.clear()
    manifest = prepare.prepare_corpus(wordpiece_tokenizer, [corpus], folder, max_length=64, num_proc=1)
    assert calls == [1, 2] and first.stat().st_mtime_ns == stamp  # the finished shard was kept
    counts = ("texts", "blocks", "tokens", "text_bytes", "shard_bytes", "texts_without_tokens", "cut_sentences")
    assert [manifest["totals"][key] for key in counts] == [whole["totals"][key] for key in counts]
    for name in ("shard-00000.arrow", "shard-00001.arrow", "shard-00002.arrow"):
        assert (folder / "shards" / name).read_bytes() == (tmp_path / "whole" / "shards" / name).read_bytes()
    with pytest.raises(prepare.OutputExistsError, match="other settings"):
        prepare.prepare_corpus(wordpiece_tokenizer, [corpus], folder, max_length=32, num_proc=1)


def test_prepared_folder_is_refused_by_name_for_another_tokenizer_or_length(trained_tokenizer, tmp_path):
    from retromae_hf.prepare import PreparedCorpusError, load_prepared, prepare_corpus

    wordpiece, bpe = trained_tokenizer("wordpiece"), trained_tokenizer("bpe", "roberta")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(project_lines(50)) + "\n", encoding="utf-8")
    prepare_corpus(wordpiece, [corpus], tmp_path / "prepared", max_length=64, num_proc=1)
    with pytest.raises(PreparedCorpusError, match=r"max_length 64, this run uses 128.*--max-length 64"):
        load_prepared(tmp_path / "prepared", wordpiece, max_length=128, packing=True)
    with pytest.raises(PreparedCorpusError, match=rf"tokenized with '{wordpiece.name_or_path}'.*--tokenizer"):
        load_prepared(tmp_path / "prepared", bpe, max_length=64, packing=True)


def test_cli_prepare_then_train_on_the_prepared_folder(tmp_path, corpus_folder, tokenizer_dir, capfd, caplog):
    caplog.set_level("INFO")
    prepared = tmp_path / "prepared"
    code, err = run_cli(
        ["prepare", "--tokenizer", str(tokenizer_dir), "--corpus", str(corpus_folder), "--max-length", "64",
         "--output-dir", str(prepared), "--num-proc", "2"], capfd,
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((prepared / "prepared.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["columns"] == ["input_ids"]
    assert [f["path"] for f in manifest["files"]] == sorted(str(p.resolve()) for p in corpus_folder.glob("*.txt"))
    assert manifest["totals"]["shard_bytes"] <= manifest["totals"]["text_bytes"]
    code, err = run_cli(train_args(prepared, tmp_path / "run", tokenizer_dir, 2), capfd)
    assert code == 0, err
    assert "no tokenizing" in caplog.text and "Tokenizing" not in err + caplog.text
    code, err = run_cli([*train_args(prepared, tmp_path / "run-32", tokenizer_dir, 2), "--max-length", "32"], capfd)
    assert code == 2 and str(prepared) in err and "max_length 64, this run uses 32" in err


# ---------------------------------------------------------------------------------------------- tokenizer training
def test_tokenizer_training_streams_a_capped_corpus(tmp_path):
    from retromae_hf.quickstart import train_wordpiece_tokenizer
    from retromae_hf.training import build_recipe, tokenizer_training_texts

    corpus = tmp_path / "corpus.txt"
    lines = project_lines(200)
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for streaming in (False, True):
        recipe = build_recipe(
            {
                "stage": 1,
                "model": "scratch",
                "tokenizer": "train",
                "corpus": [str(corpus)],
                "streaming": streaming,
                "tokenizer_train_samples": 50,
            }
        )
        texts = tokenizer_training_texts(recipe)
        first = texts()
        assert not isinstance(first, list | tuple)  # an iterator, read as the trainer asks
        assert list(first) == [line.strip() for line in lines[:50]]
    from_iterator = train_wordpiece_tokenizer(texts, vocab_size=300)
    from_list = train_wordpiece_tokenizer([line.strip() for line in lines[:50]], vocab_size=300)
    assert from_iterator.get_vocab() == from_list.get_vocab()


def test_a_tokenizer_trained_on_a_prepared_corpus_is_refused(tmp_path, wordpiece_tokenizer, capfd):
    from retromae_hf.prepare import prepare_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(project_lines(20)) + "\n", encoding="utf-8")
    prepare_corpus(wordpiece_tokenizer, [corpus], tmp_path / "prepared", max_length=64, num_proc=1)
    args = train_args(tmp_path / "prepared", tmp_path / "run", Path("train"), 2)
    code, err = run_cli(args, capfd)
    assert code == 2 and "already tokenized" in err
    shutil.rmtree(tmp_path / "prepared")


# ---------------------------------------------------------------------------------------------- FSDP2 on the CPU
def test_fsdp2_fully_shard_matches_the_unsharded_model(tmp_path):
    """FSDP2 of RetroMAEForPreTraining over gloo: same loss, gradient norm and parameters after a step."""
    run_torchrun("distributed_fsdp.py", str(tmp_path), cwd=REPO, timeout=180)
    result = torch.load(tmp_path / "results.pt")
    assert result["sharded"]
    assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-10)
    assert result["grad_norm"] == pytest.approx(result["reference_grad_norm"], rel=1e-8)
    assert result["parameters"].keys() == result["reference_parameters"].keys()
    for name, value in result["parameters"].items():
        assert torch.allclose(value, result["reference_parameters"][name], atol=1e-10), name
