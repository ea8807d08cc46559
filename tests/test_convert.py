"""Converting official and encoder-only checkpoints, from Python and from the command line."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, reference_fixture
from safetensors.torch import load_file, save_file
from transformers import AutoModelForPreTraining, BertConfig, BertForMaskedLM

import retromae_hf  # noqa: F401  (registers the Auto classes)
from retromae_hf import RetroMAEForPreTraining
from retromae_hf.convert import CheckpointError, from_official

TINY_BERT = dict(
    vocab_size=1024,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def test_encoder_only_bert_for_masked_lm_checkpoint(tmp_path):
    """A released RetroMAE model is a BertForMaskedLM: encoder and MLM head load, the decoder is fresh."""
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(**TINY_BERT)).eval()
    model = from_official(bert.state_dict(), bert.config, "staoxiao")
    ids = torch.randint(5, 1024, (2, 12))
    expected = bert(input_ids=ids, output_hidden_states=True)
    ours = model.encode(ids)
    torch.testing.assert_close(ours.last_hidden_state, expected.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.mlm_logits(ours.last_hidden_state), expected.logits, atol=1e-4, rtol=0)
    assert model.lm.cls.predictions.decoder.weight is model.lm.bert.embeddings.word_embeddings.weight


def test_missing_encoder_tensor_and_unknown_key_fail_clearly():
    bert = BertForMaskedLM(BertConfig(**TINY_BERT))
    state = bert.state_dict()
    del state["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        from_official(state, bert.config)
    state = {**bert.state_dict(), "roberta.something": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"roberta\.something"):
        from_official(state, bert.config)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        from_official(bert.state_dict(), {**TINY_BERT, "hidden_size": 32, "num_attention_heads": 4})


def test_official_checkpoint_round_trips_through_save_pretrained(tmp_path):
    folder = reference_fixture("flagembedding_perturbed")
    model = from_official(folder / "official_state_dict.safetensors", folder / "bert_config.json", "flagembedding")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, RetroMAEForPreTraining) and reloaded.config.query_stream == "embeddings"
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected = json.loads((folder / "expected.json").read_text())["losses"]["total_loss"]
    assert reloaded(**inputs).loss.item() == pytest.approx(expected, abs=1e-5)


def test_command_line_convert(tmp_path, wordpiece_tokenizer):
    folder = reference_fixture("staoxiao_perturbed")
    source = tmp_path / "official"
    source.mkdir()
    save_file(load_file(str(folder / "official_state_dict.safetensors")), str(source / "model.safetensors"))
    (source / "config.json").write_text((folder / "bert_config.json").read_text())
    wordpiece_tokenizer.save_pretrained(source)
    result = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "convert", str(source), str(tmp_path / "out"), "--variant", "staoxiao"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected = json.loads((folder / "expected.json").read_text())["losses"]["total_loss"]
    assert model(**inputs).loss.item() == pytest.approx(expected, abs=1e-5)
    assert (tmp_path / "out" / "tokenizer.json").is_file()

    missing = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "convert", str(tmp_path / "nowhere.safetensors"), str(tmp_path / "x")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert missing.returncode != 0 and "nowhere" in missing.stderr


def test_command_line_convert_upgrades_a_0_1_checkpoint(tmp_path, wordpiece_tokenizer):
    from encoders_for_tests import rewrite_in_the_0_1_layout

    folder = reference_fixture("staoxiao_perturbed")
    model = from_official(folder / "official_state_dict.safetensors", folder / "bert_config.json", "staoxiao")
    model.save_pretrained(tmp_path / "old")
    wordpiece_tokenizer.save_pretrained(tmp_path / "old")
    rewrite_in_the_0_1_layout(tmp_path / "old")
    result = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "convert", str(tmp_path / "old"), str(tmp_path / "new")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["encoder"]["model_type"] == "bert" and "hidden_size" not in config
    assert all(key.startswith(("lm.", "decoder.")) for key in load_file(str(tmp_path / "new" / "model.safetensors")))
    assert (tmp_path / "new" / "tokenizer.json").is_file()
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected = json.loads((folder / "expected.json").read_text())["losses"]["total_loss"]
    for checkpoint in ("old", "new"):
        loaded = AutoModelForPreTraining.from_pretrained(tmp_path / checkpoint).eval()
        assert loaded(**inputs).loss.item() == pytest.approx(expected, abs=1e-5)
