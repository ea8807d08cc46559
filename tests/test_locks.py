"""One run per folder: `RunLock` refuses a second holder at once, names the first, and leaves no file behind."""

import json

import pytest

from retromae_hf.locks import LOCK_FILE, LOCK_INFO, FolderLockedError, RunLock


def test_a_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    with RunLock(run, what="output_dir (--output-dir)"):
        info = json.loads((run / LOCK_INFO).read_text())
        with pytest.raises(FolderLockedError, match=rf"run is in use by process {info['pid']} on {info['host']}"):
            RunLock(run).acquire()
    assert sorted(path.name for path in run.iterdir()) == ["checkpoint-1"]  # the lock files are gone
    with RunLock(run):  # and the folder can be locked again
        pass


def test_a_folder_the_lock_created_is_removed_when_nothing_was_written(tmp_path):
    with RunLock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / LOCK_FILE).exists()
    assert not (tmp_path / "new" / "run").exists()


def test_only_the_main_process_of_a_distributed_run_locks(tmp_path, monkeypatch):
    """Under torchrun every rank runs `train`: the other ranks must not refuse the folder their own run holds."""
    with RunLock(tmp_path):
        monkeypatch.setenv("RANK", "1")
        with RunLock(tmp_path) as other:
            assert not other.held
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(FolderLockedError):
            RunLock(tmp_path).acquire()
