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
    # Like every command that writes: an existing destination is refused (without --overwrite), the source always.
    for destination in ("new", "old"):
        refused = subprocess.run(
            [sys.executable, "-m", "retromae_hf", "convert", str(tmp_path / "old"), str(tmp_path / destination)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        assert ("already exists" if destination == "new" else "is the input") in refused.stderr
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected = json.loads((folder / "expected.json").read_text())["losses"]["total_loss"]
    for checkpoint in ("old", "new"):
        loaded = AutoModelForPreTraining.from_pretrained(tmp_path / checkpoint).eval()
        assert loaded(**inputs).loss.item() == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------------------------------- --max-positions
@pytest.mark.parametrize(
    "architecture, kind", [("bert", "wordpiece"), ("roberta", "bpe"), ("xlm-roberta", "unigram")]
)
def test_extend_positions_copies_the_learned_table_and_runs_at_the_new_length(
    architecture, kind, trained_tokenizer, tmp_path
):
    """New rows repeat the learned ones (Longformer); RoBERTa's padding rows stay; buffers, config and the decoder's
    positions (the encoder's table) follow; a saved extended model loads and encodes the same."""
    from encoders_for_tests import MAX_LENGTH, tiny_encoder_config

    from retromae_hf import RetroMAEConfig
    from retromae_hf.convert import extend_positions

    tokenizer = trained_tokenizer(kind)
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))).eval()
    offset = tokenizer.pad_token_id + 1 if architecture != "bert" else 0
    old = model.get_encoder().embeddings.position_embeddings.weight.detach().clone()
    assert model.max_sequence_length() == MAX_LENGTH
    length = 3 * MAX_LENGTH + 5
    extend_positions(model, length)

    embeddings = model.get_encoder().embeddings
    new = embeddings.position_embeddings.weight
    assert model.max_sequence_length() == length
    assert model.config.encoder.max_position_embeddings == length + offset == new.shape[0]
    assert embeddings.position_ids.shape == embeddings.token_type_ids.shape == (1, length + offset)
    torch.testing.assert_close(new[: offset + MAX_LENGTH], old, atol=0, rtol=0)  # the learned rows, unchanged
    for start in range(offset + MAX_LENGTH, length + offset, MAX_LENGTH):  # then the learned rows again, in turn
        block = new[start : start + MAX_LENGTH]
        torch.testing.assert_close(block, old[offset : offset + block.shape[0]], atol=0, rtol=0)
    torch.testing.assert_close(model.encoder_position_embeddings(length)[0], new[offset:], atol=0, rtol=0)

    ids = torch.randint(len(tokenizer.all_special_ids), len(tokenizer), (2, length))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    with torch.no_grad():
        expected = model.encode(ids, torch.ones_like(ids)).sentence_embedding
        decoder_mask = torch.ones(2, length, length, dtype=torch.long)
        output = model(
            encoder_input_ids=ids, encoder_attention_mask=torch.ones_like(ids), encoder_labels=ids,
            decoder_input_ids=ids, decoder_attention_mask=decoder_mask, decoder_labels=ids,
        )  # fmt: skip
    assert torch.isfinite(output.loss)
    model.save_pretrained(tmp_path / "extended")
    loaded = RetroMAEForPreTraining.from_pretrained(tmp_path / "extended").eval()
    assert loaded.max_sequence_length() == length
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(ids, torch.ones_like(ids)).sentence_embedding, expected)


def test_extend_positions_extends_a_learned_decoder_table_and_refuses_rotary_or_shorter(trained_tokenizer):
    from encoders_for_tests import MAX_LENGTH, tiny_encoder_config

    from retromae_hf import RetroMAEConfig
    from retromae_hf.convert import PositionExtensionError, extend_positions

    tokenizer = trained_tokenizer("wordpiece")
    config = RetroMAEConfig(encoder=tiny_encoder_config("bert", tokenizer), decoder_positions="learned")
    model = RetroMAEForPreTraining(config)
    old = model.decoder.position_embeddings.weight.detach().clone()
    extend_positions(model, 2 * MAX_LENGTH)
    torch.testing.assert_close(model.decoder.position_embeddings.weight, torch.cat([old, old]), atol=0, rtol=0)
    assert model.decoder.learned_positions(2 * MAX_LENGTH).shape == (1, 2 * MAX_LENGTH, 32)

    with pytest.raises(PositionExtensionError, match="already takes 128 tokens"):
        extend_positions(model, 100)
    modernbert = RetroMAEForPreTraining(
        RetroMAEConfig(encoder=tiny_encoder_config("modernbert", trained_tokenizer("bpe", "bert")))
    )
    with pytest.raises(PositionExtensionError, match=r"no absolute position table.*ModernBERT"):
        extend_positions(modernbert, 4 * MAX_LENGTH)


def test_command_line_convert_max_positions(tmp_path, trained_tokenizer, capfd):
    """`convert MASKED_LM OUT --max-positions N` (a saved XLMRobertaForMaskedLM) and `convert RETROMAE OUT
    --max-positions N`; a rotary encoder is refused with exit code 2 before any weight is loaded."""
    from conftest import run_cli
    from encoders_for_tests import save_tiny_masked_lm
    from transformers import AutoTokenizer

    tokenizer = trained_tokenizer("unigram")
    masked_lm = save_tiny_masked_lm("xlm-roberta", tokenizer, tmp_path / "xlmr-mlm")
    code, err = run_cli(["convert", str(masked_lm), str(tmp_path / "xlmr-256"), "--max-positions", "256"], capfd)
    assert code == 0, err
    model = RetroMAEForPreTraining.from_pretrained(tmp_path / "xlmr-256")
    assert model.max_sequence_length() == 256 and model.config.encoder.max_position_embeddings == 258
    assert AutoTokenizer.from_pretrained(tmp_path / "xlmr-256").model_max_length == 256
    # A RetroMAE checkpoint keeps its decoder and grows again.
    argv = ["convert", str(tmp_path / "xlmr-256"), str(tmp_path / "xlmr-512"), "--max-positions", "512"]
    code, err = run_cli(argv, capfd)
    assert code == 0, err
    again = RetroMAEForPreTraining.from_pretrained(tmp_path / "xlmr-512")
    assert again.max_sequence_length() == 512
    torch.testing.assert_close(again.decoder.state_dict(), model.decoder.state_dict(), atol=0, rtol=0)

    modernbert = save_tiny_masked_lm("modernbert", trained_tokenizer("bpe", "bert"), tmp_path / "mb-mlm")
    code, err = run_cli(["convert", str(modernbert), str(tmp_path / "mb-out"), "--max-positions", "4096"], capfd)
    assert code == 2 and "no absolute position table" in err and not (tmp_path / "mb-out").exists()


def test_which_sources_convert_max_positions_reads_as_masked_lm_checkpoints(tmp_path, monkeypatch):
    from retromae_hf.convert import is_masked_lm_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert is_masked_lm_source("bert-base-uncased") and is_masked_lm_source("FacebookAI/xlm-roberta-base")  # Hub
    assert not is_masked_lm_source("runs/missing") and not is_masked_lm_source("state.safetensors")  # local paths
    official = tmp_path / "official"
    official.mkdir()
    BertConfig(**TINY_BERT).save_pretrained(official)
    save_file({"c_head.output.dense.bias": torch.zeros(4)}, str(official / "model.safetensors"))
    assert not is_masked_lm_source(official)  # an official state dict: from_official, as without --max-positions
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)}, str(official / "model.safetensors"))
    assert is_masked_lm_source(official)
