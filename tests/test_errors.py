"""One family of user errors; the Hub's absence is recognised at once and named with the way around it."""

import pytest
from huggingface_hub import constants

from retromae_hf import errors
from retromae_hf.errors import (
    MissingInputError,
    NetworkError,
    UserError,
    as_user_error,
    hub_unreachable_reason,
    looks_like_local_path,
    remote_resource,
)


def test_the_package_errors_are_one_family():
    from retromae_hf.convert import CheckpointError
    from retromae_hf.data import DataError
    from retromae_hf.evaluation import EvaluationDataError
    from retromae_hf.hub import HubPushError
    from retromae_hf.recipe import RecipeError

    for error in (CheckpointError, DataError, EvaluationDataError, HubPushError, RecipeError, NetworkError):
        assert issubclass(error, UserError), error
    assert issubclass(RecipeError, ValueError) and issubclass(HubPushError, RuntimeError)  # old except clauses work


def test_local_looking_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/base/fnial", "./model", "/abs/path", "~/model", "runs/final", "C:model"):
        assert looks_like_local_path(name), name
    for name in ("bert-base-uncased", "org/model", "wikipedia"):
        assert not looks_like_local_path(name), name


def test_offline_mode_fails_at_once_naming_the_resource_and_the_way_around(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NetworkError) as raised, remote_resource("tokenizer", "org/tok", "--tokenizer"):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    message = str(raised.value)
    assert "tokenizer 'org/tok' (--tokenizer)" in message and "HF_HUB_OFFLINE=1" in message
    assert "hf download org/tok" in message and "--tokenizer path/to/folder" in message


def test_a_missing_local_path_never_reaches_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reached = []
    with (
        pytest.raises(MissingInputError, match=r"'\./nowhere': no such file or folder"),
        remote_resource("model", "./nowhere"),
    ):
        reached.append(True)
    assert not reached


def test_an_unreachable_hub_is_probed_once_and_switches_to_the_cache(monkeypatch):
    """No network: one failed connection (not a minute of retries) turns offline mode on for the process."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    errors._probe_endpoint.cache_clear()
    monkeypatch.setattr(errors, "_went_offline", None)
    reason = hub_unreachable_reason("http://127.0.0.1:9")  # the discard port: nothing listens there
    assert reason is not None and "cannot reach http://127.0.0.1:9" in reason
    assert constants.HF_HUB_OFFLINE is True
    # Later messages give the probe's reason, not a HF_HUB_OFFLINE=1 the user never set.
    assert hub_unreachable_reason() == reason
    assert "HF_HUB_OFFLINE" not in errors.offline_fix()
    errors._probe_endpoint.cache_clear()


def test_other_libraries_errors_are_translated():
    class SafetensorError(Exception):
        pass

    class HTTPError(Exception):
        def __init__(self, status):
            super().__init__(f"{status} Client Error")
            self.response = type("Response", (), {"status_code": status})()

    assert "not a valid safetensors file" in str(as_user_error(SafetensorError("header too large")))
    assert "hf auth login" in str(as_user_error(HTTPError(401)))
    assert isinstance(as_user_error(ConnectionError("refused")), NetworkError)
    assert as_user_error(ValueError("bad value")) is not None
    assert as_user_error(KeyError("internal")) is None  # looks like a bug: reported as one, not as a mistake
