"""The compact parity fixtures in `tests/fixtures/` rebuild the official-code originals exactly."""

import json

import pytest
import torch
from conftest import shared_path
from fixtures_reference import VARIANTS, expand_reference_fixture


@pytest.mark.parametrize("variant", VARIANTS)
def test_expanded_fixture_has_the_original_layout(variant):
    folder = expand_reference_fixture(variant)
    names = {"bert_config.json", "official_state_dict.safetensors", "inputs.safetensors", "expected.safetensors",
             "expected.json"}  # fmt: skip
    assert {path.name for path in folder.iterdir()} == names
    expected = json.loads((folder / "expected.json").read_text())
    assert set(expected["losses"]) >= {"encoder_mlm_loss", "decoder_loss", "total_loss"}


@pytest.mark.shared
@pytest.mark.parametrize("variant", VARIANTS)
def test_expanded_fixture_equals_the_shared_original(variant):
    from safetensors.torch import load_file

    original = shared_path("fixtures", "retromae_reference", variant)
    rebuilt = expand_reference_fixture(variant)
    for name in ("official_state_dict.safetensors", "inputs.safetensors"):
        want, got = load_file(str(original / name)), load_file(str(rebuilt / name))
        assert set(got) == set(want), name
        for key in want:
            assert torch.equal(got[key], want[key]), (name, key)
    want, got = load_file(str(original / "expected.safetensors")), load_file(str(rebuilt / "expected.safetensors"))
    for key in got:
        assert torch.equal(got[key], want[key]), key
    want, got = (
        json.loads((original / "expected.json").read_text()),
        json.loads((rebuilt / "expected.json").read_text()),
    )
    assert got["losses"] == want["losses"] and got["grad_norms"] == want["grad_norms"]
    assert (rebuilt / "bert_config.json").read_bytes() == (original / "bert_config.json").read_bytes()
