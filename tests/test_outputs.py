"""Staged writes: nothing is replaced unless asked, inputs are never written into, interruptions leave no mix."""

import pytest
from conftest import snapshot

from retromae_hf.errors import OutputExistsError
from retromae_hf.outputs import check_output, staged_output


def test_new_and_empty_destinations_are_written(tmp_path):
    with staged_output(tmp_path / "new") as staging:
        (staging / "a.txt").write_text("a")
    assert (tmp_path / "new" / "a.txt").read_text() == "a"
    (tmp_path / "empty").mkdir()
    with staged_output(tmp_path / "empty") as staging:
        (staging / "b.txt").write_text("b")
    assert (tmp_path / "empty" / "b.txt").read_text() == "b"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "new"]  # no staging folder left


def test_an_occupied_destination_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match=r"already exists.*--overwrite"), staged_output(out) as staging:
        (staging / "x").write_text("never written")
    assert snapshot(tmp_path) == before
    with staged_output(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(path.name for path in out.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # the replaced folder is gone too


def test_a_failure_while_writing_leaves_the_old_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), staged_output(out, overwrite=True) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert snapshot(tmp_path) == {"out/old.txt": snapshot(out)["old.txt"]}


def test_inputs_are_never_written_into_nor_deleted(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="is the input"):
        check_output(model, inputs=[model], overwrite=True)
    with pytest.raises(OutputExistsError, match="is inside the input"):
        check_output(model / "export", inputs=[str(model)])
    with pytest.raises(OutputExistsError, match=r"holds the input.*would delete"):
        check_output(tmp_path, inputs=[model], overwrite=True)
    check_output(tmp_path / "elsewhere", inputs=[model, "org/hub-id", None])  # Hub ids and None are not paths
    assert (model / "config.json").read_text() == "{}"


def test_a_file_is_not_replaced_by_a_folder_unless_asked(tmp_path):
    path = tmp_path / "result"
    path.write_text("a file")
    with pytest.raises(OutputExistsError, match="is a file"):
        check_output(path)
    with staged_output(path, overwrite=True) as staging:
        (staging / "x").write_text("x")
    assert (path / "x").is_file()
