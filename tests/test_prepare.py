"""`retromae-hf prepare` (retromae_hf/prepare.py): the lock and its workers, inputs recorded and compared, shard
checksums, failures that leave nothing behind (or a resumable folder), the [UNK] check, messages before loading.

The equality of prepared and `tokenize_corpus` blocks, resume after an interruption and the two-process training on
a prepared folder are in tests/test_scaling.py."""

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, project_lines, run_cli, snapshot

from retromae_hf import prepare
from retromae_hf.data import DataError
from retromae_hf.errors import DiskFullError, OutputExistsError, UserError
from retromae_hf.locks import FolderLockedError, RunLock


def write_corpus(folder: Path, parts: int = 3, lines: int = 300) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = project_lines(lines)
    for index in range(parts):
        (folder / f"part{index}.txt").write_text("\n".join(text[index::parts]) + "\n", encoding="utf-8")
    return folder


def word_level_tokenizer(folder: Path, words: list[str]):
    """A fast word-level tokenizer with BERT's special tokens and only `words`: most text becomes [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    tokenizer.save_pretrained(folder)
    tokenizer.name_or_path = str(folder)
    return tokenizer


def prepare_into(tokenizer, corpus, folder, **options):
    return prepare.prepare_corpus(tokenizer, [corpus], folder, max_length=64, num_proc=1, **options)


# ----------------------------------------------------------------------------------------------- lock and workers
def test_a_second_prepare_into_a_locked_folder_is_refused_naming_the_holder(wordpiece_tokenizer, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    folder = tmp_path / "prepared"
    with RunLock(folder, what="--output-dir", command="retromae-hf prepare"):
        with pytest.raises(FolderLockedError, match=rf"--output-dir {folder} is in use by process {os.getpid()}"):
            prepare_into(wordpiece_tokenizer, corpus, folder)
        assert not (folder / prepare.SHARDS_DIR).exists()  # the refused run wrote nothing
    manifest = prepare_into(wordpiece_tokenizer, corpus, folder)  # once released, it runs
    assert manifest["totals"]["blocks"] > 0 and not (folder / ".retromae.lock").exists()


def test_the_cheap_checks_name_a_running_prepare_before_the_tokenizer_loads(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    folder = tmp_path / "prepared"
    holder = f"in use by process {os.getpid()}.*{prepare.PREPARE_CLASH}"
    with RunLock(folder, what="--output-dir", command="retromae-hf prepare"), pytest.raises(FolderLockedError, match=holder):
        prepare.check_request([corpus], folder)
    prepare.check_request([corpus], folder)  # released: nothing to refuse


POOL_SCRIPT = """
import multiprocessing, os, sys, time
from retromae_hf.prepare import _init_worker

if __name__ == "__main__":
    watch = sys.argv[1] == "watch"
    pool = multiprocessing.get_context("spawn").Pool(2, _init_worker, (None, {}, os.getpid() if watch else None))
    pool.map(time.sleep, [1, 1])  # both workers have run their initializer
    pool.map_async(time.sleep, [60, 60])  # and are busy, as with a piece to tokenize (idle ones see EOF and leave)
    time.sleep(1)
    print(" ".join(str(child.pid) for child in multiprocessing.active_children()), flush=True)
    time.sleep(120)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed worker may wait a moment to be reaped by its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("watch", [True, False])
def test_workers_end_when_prepare_is_killed(watch, tmp_path):
    """SIGKILL of the main process: its pool's busy workers end with it (the control, without the parent's pid,
    shows that they would otherwise finish their piece and write its shard into a folder nobody holds)."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script), "watch" if watch else "control"], env=env,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    workers = []
    try:
        workers = [int(pid) for pid in process.stdout.readline().split()]
        assert len(workers) >= 2
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        if watch:
            assert not any(_running(pid) for pid in workers)
        else:
            time.sleep(1)
            assert all(_running(pid) for pid in workers)
    finally:
        process.kill()
        for pid in workers:  # the control's orphans, which this test started
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- inputs recorded
def test_a_folder_prepared_from_other_or_changed_inputs_is_refused(wordpiece_tokenizer, tmp_path, caplog):
    corpus_a, corpus_b = write_corpus(tmp_path / "a"), write_corpus(tmp_path / "b", parts=2)
    folder = tmp_path / "prepared"
    first = prepare_into(wordpiece_tokenizer, corpus_a, folder)
    assert [f["path"] for f in first["files"]] == [str(p.resolve()) for p in sorted(corpus_a.glob("*.txt"))]
    assert all(f["size"] and f["mtime_ns"] for f in first["files"])
    before = snapshot(folder)
    with pytest.raises(
        OutputExistsError, match=r"other input files \(it was prepared from .*a/part0\.txt.*--overwrite"
    ):
        prepare_into(wordpiece_tokenizer, corpus_b, folder)
    assert prepare_into(wordpiece_tokenizer, corpus_a, folder)["seconds_this_session"] == 0  # same: nothing to do

    with open(corpus_a / "part1.txt", "a", encoding="utf-8") as handle:
        handle.write("one more line written after the preparation\n")
    with pytest.raises(OutputExistsError, match=r"input files changed on disk since they were read: .*part1\.txt"):
        prepare_into(wordpiece_tokenizer, corpus_a, folder)
    assert snapshot(folder) == before
    caplog.set_level("WARNING")
    prepare.load_prepared(folder, wordpiece_tokenizer, max_length=64, packing=True)  # training says so
    assert "was prepared from files that changed since" in caplog.text and "part1.txt" in caplog.text

    again = prepare_into(wordpiece_tokenizer, corpus_a, folder, overwrite=True)
    assert again["totals"]["texts"] == first["totals"]["texts"] + 1


def test_overwrite_replaces_only_a_preparation(wordpiece_tokenizer, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("my notes\n")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not a folder that `retromae-hf prepare` made"):
            prepare_into(wordpiece_tokenizer, corpus, users, overwrite=overwrite)
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]
    with pytest.raises(OutputExistsError, match="is inside the input"):
        prepare_into(wordpiece_tokenizer, corpus, corpus / "prepared")
    assert sorted(p.name for p in corpus.iterdir()) == ["part0.txt", "part1.txt", "part2.txt"]


class Interrupted(Exception):
    """Stands for a preparation stopped half-way."""


def interrupt_after(monkeypatch, finished: int) -> None:
    original, calls = prepare._prepare_piece, []

    def piece(item):
        calls.append(item.index)
        if len(calls) > finished:
            raise Interrupted
        return original(item)

    monkeypatch.setattr(prepare, "_prepare_piece", piece)


def test_an_unfinished_folder_resumes_only_with_its_inputs_and_reports_its_own_speed(
    wordpiece_tokenizer, tmp_path, monkeypatch
):
    corpus_a, corpus_b = write_corpus(tmp_path / "a"), write_corpus(tmp_path / "b", parts=2)
    folder = tmp_path / "prepared"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        prepare_into(wordpiece_tokenizer, corpus_a, folder)
    monkeypatch.undo()
    assert (folder / "shards" / "shard-00000.arrow").is_file()  # the finished shard is kept for the resume
    with pytest.raises(OutputExistsError, match=r"unfinished preparation .*other input files.*same ones"):
        prepare_into(wordpiece_tokenizer, corpus_b, folder)
    manifest = prepare_into(wordpiece_tokenizer, corpus_a, folder)
    assert manifest["shards_this_session"] == 2 and len(manifest["shards"]) == 3
    assert manifest["tokens_this_session"] == sum(s["tokens"] for s in manifest["shards"][1:])
    line = prepare.summary_line(manifest, folder)
    assert "tokens/s for the 2 shards prepared now; 1 were already prepared" in line


def test_a_failed_first_run_leaves_no_folder(wordpiece_tokenizer, tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    folder = tmp_path / "prepared"
    interrupt_after(monkeypatch, 0)
    with pytest.raises(Interrupted):
        prepare_into(wordpiece_tokenizer, corpus, folder)
    assert not folder.exists()


def _failing_write(error: OSError):
    def write(path, columns, dtypes):
        path.write_bytes(b"x" * 4096)  # part of a shard, then the failure
        raise error

    return write


@pytest.mark.parametrize("finished", [0, 1])
def test_a_full_disk_names_the_folder_and_gives_the_space_back(wordpiece_tokenizer, tmp_path, monkeypatch, finished):
    corpus = write_corpus(tmp_path / "corpus")
    folder = tmp_path / "prepared"
    original, calls = prepare._write_shard, []

    def write(path, columns, dtypes):
        calls.append(path)
        if len(calls) > finished:
            return _failing_write(OSError(errno.ENOSPC, "No space left on device"))(path, columns, dtypes)
        return original(path, columns, dtypes)

    monkeypatch.setattr(prepare, "_write_shard", write)
    with pytest.raises(DiskFullError, match=rf"--output-dir {folder}") as raised:
        prepare_into(wordpiece_tokenizer, corpus, folder)
    assert not list(folder.glob("shards/.shard-*"))  # no half-written shard left
    if finished:
        assert "1 finished shard" in str(raised.value) and "run the same command again" in str(raised.value)
        assert (folder / "shards" / "shard-00000.arrow").is_file()
    else:
        assert "nothing of this run was kept" in str(raised.value) and not folder.exists()


def test_an_unwritable_destination_is_named(wordpiece_tokenizer, tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    folder = tmp_path / "prepared"
    error = PermissionError(errno.EACCES, "Permission denied", str(folder / "shards" / ".shard-00000.arrow.tmp"))
    monkeypatch.setattr(prepare, "_write_shard", _failing_write(error))
    with pytest.raises(UserError, match=rf"--output-dir {folder} cannot be written: Permission denied"):
        prepare_into(wordpiece_tokenizer, corpus, folder)
    assert not folder.exists()


# ----------------------------------------------------------------------------------------------- damaged shards
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_damaged_shard_is_refused_by_name(where, wordpiece_tokenizer, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", parts=1, lines=600)
    folder = tmp_path / "prepared"
    manifest = prepare_into(wordpiece_tokenizer, corpus, folder)
    assert all(len(shard["sha256"]) == 64 for shard in manifest["shards"])
    prepare.load_prepared(folder, wordpiece_tokenizer, max_length=64, packing=True)  # intact: loads
    shard = folder / "shards" / "shard-00000.arrow"
    content = bytearray(shard.read_bytes())
    size = min(4096, len(content) // 4)
    offset = {"start": 0, "middle": len(content) // 2, "end": len(content) - size}[where]
    content[offset : offset + size] = bytes(b ^ 0xFF for b in content[offset : offset + size])  # same size
    shard.write_bytes(bytes(content))
    with pytest.raises(
        prepare.PreparedCorpusError, match=rf"shard {shard} does not have the content.*Prepare the corpus again"
    ):
        prepare.load_prepared(folder, wordpiece_tokenizer, max_length=64, packing=True)


# ----------------------------------------------------------------------------------------------- the vocabulary
def test_a_tokenizer_that_reads_the_corpus_as_unknown_is_refused_before_any_work(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    tiny = word_level_tokenizer(tmp_path / "tiny", ["the", "a"])
    folder = tmp_path / "prepared"
    with pytest.raises(DataError, match=r"turns (9\d|8\d)% of the first 300 texts of the corpus into its unknown "
                                        r"token \[UNK\].*--allow-unknown"):  # fmt: skip
        prepare_into(tiny, corpus, folder)
    assert not folder.exists()
    manifest = prepare_into(tiny, corpus, folder, allow_unknown=True)
    assert manifest["totals"]["unknown_tokens"] > 0.5 * manifest["totals"]["tokens"]


# ----------------------------------------------------------------------------------------------- command line
def test_cli_checks_the_corpus_before_loading_the_tokenizer(tmp_path, capfd):
    code, err = run_cli(["prepare", "--tokenizer", str(tmp_path / "no-such-tokenizer"), "--corpus",
                         str(tmp_path / "missing.txt"), "--max-length", "64", "--output-dir", str(tmp_path / "p")],
                        capfd)  # fmt: skip
    assert code == 2 and "missing.txt: no such file or folder" in err and "tokenizer" not in err.split("folder.")[0]
    assert not (tmp_path / "p").exists()


def test_cli_answers_a_missing_corpus_before_the_heavy_imports(tmp_path):
    """The check runs before `datasets`, torch and transformers are imported (they take seconds)."""
    code = (
        "import sys; from retromae_hf.cli import main; "
        f"rc = main(['prepare', '--tokenizer', 'bert-base-uncased', '--corpus', {str(tmp_path / 'gone.txt')!r}, "
        f"'--max-length', '64', '--output-dir', {str(tmp_path / 'p')!r}]); "
        "print(rc, *(name in sys.modules for name in ('datasets', 'torch', 'transformers')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.stdout.split() == ["2", "False", "False", "False"], result.stderr[-2000:]
    assert "gone.txt: no such file or folder" in result.stderr


def test_cli_prepare_of_a_corrupt_gzip_names_the_file(tmp_path, wordpiece_tokenizer, capfd):
    corpus = tmp_path / "corpus.txt.gz"
    content = bytearray(gzip.compress(("\n".join(project_lines(300)) + "\n").encode()))
    content[len(content) // 2 : len(content) // 2 + 64] = bytes(64)
    corpus.write_bytes(bytes(content))
    code, err = run_cli(["prepare", "--tokenizer", wordpiece_tokenizer.name_or_path, "--corpus", str(corpus),
                         "--max-length", "64", "--output-dir", str(tmp_path / "p")], capfd)  # fmt: skip
    assert code == 2 and f"{corpus}: cannot be read as a gzip file" in err and "probably a bug" not in err
    assert not (tmp_path / "p").exists()


def test_cli_prepare_says_what_a_folder_held(tmp_path, wordpiece_tokenizer, capfd, caplog):
    corpus = write_corpus(tmp_path / "corpus", parts=2)
    (corpus / "notes.pdf").write_bytes(b"%PDF")
    write_corpus(corpus / "more", parts=1)
    caplog.set_level("INFO")
    code, err = run_cli(["prepare", "--tokenizer", wordpiece_tokenizer.name_or_path, "--corpus", str(corpus),
                         "--max-length", "64", "--output-dir", str(tmp_path / "p")], capfd)  # fmt: skip
    assert code == 0, err
    assert "reading 2 files (2 .txt); skipped 1 sub-folder (more) and 1 file of other types (1 .pdf)" in caplog.text
    manifest = json.loads((tmp_path / "p" / "prepared.json").read_text())
    assert len(manifest["files"]) == 2
