"""The model: exact parity with the official RetroMAE code, attention back-ends, Auto classes, save/load."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, reference_fixture
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining, RetroMAEModel
from retromae_hf.convert import _rename, from_official

VARIANTS = ["staoxiao", "flagembedding", "staoxiao_perturbed", "flagembedding_perturbed"]
KEY_BIASES = ("attention.self.key.bias",)  # softmax-invariant: true gradient 0, see the fixture README


def load_fixture(variant: str):
    from safetensors.torch import load_file

    folder = reference_fixture(variant)
    expected = json.loads((folder / "expected.json").read_text())
    return (
        folder,
        load_file(str(folder / "official_state_dict.safetensors")),
        load_file(str(folder / "inputs.safetensors")),
        load_file(str(folder / "expected.safetensors")),
        expected,
    )


def run_official_step(variant: str, attn_implementation: str):
    folder, state_dict, inputs, tensors, expected = load_fixture(variant)
    model = from_official(state_dict, folder / "bert_config.json", variant.split("_")[0])
    model.set_attn_implementation(attn_implementation)
    output = model(**inputs)
    output.loss.backward()
    return model, inputs, output, tensors, expected


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_with_official_losses_and_embedding(variant, attn_implementation):
    _model, inputs, output, tensors, expected = run_official_step(variant, attn_implementation)
    losses = expected["losses"]
    assert output.encoder_loss.item() == pytest.approx(losses["encoder_mlm_loss"], abs=1e-5)
    assert output.decoder_loss.item() == pytest.approx(losses["decoder_loss"], abs=1e-5)
    assert output.loss.item() == pytest.approx(losses["total_loss"], abs=1e-5)
    torch.testing.assert_close(output.sentence_embedding, tensors["cls_embedding"], atol=1e-5, rtol=0)
    real = inputs["encoder_attention_mask"].bool()
    torch.testing.assert_close(
        output.encoder_last_hidden_state[real], tensors["encoder_last_hidden_state"][real], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        output.decoder_last_hidden_state[real], tensors["decoder_output"][real], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_with_official_gradient_norms(variant):
    model, _, _, _, expected = run_official_step(variant, "eager")
    norms = expected["grad_norms"]
    params = dict(model.named_parameters())

    def norm(name):
        return params[name].grad.double().norm().item()

    assert norm("bert.embeddings.word_embeddings.weight") == pytest.approx(norms["encoder_word_embeddings"], rel=1e-4)
    decoder = sum(p.grad.double().norm() ** 2 for n, p in params.items() if n.startswith("decoder.")) ** 0.5
    assert decoder.item() == pytest.approx(norms["c_head_total"], rel=1e-4)
    checked = 0
    for official_name, value in norms["per_parameter"].items():
        name = _rename(official_name)
        if official_name.endswith(KEY_BIASES):
            assert norm(name) == pytest.approx(value, abs=1e-6)
        else:
            assert norm(name) == pytest.approx(value, rel=1e-4), name
        checked += 1
    assert checked == len(params)  # every parameter of ours has an official counterpart


def test_the_two_query_streams_differ_on_perturbed_weights():
    # The fixture's sensitivity check: the other query rule moves the decoder loss by about 0.077.
    folder, state_dict, inputs, _, expected = load_fixture("staoxiao_perturbed")
    other = from_official(state_dict, folder / "bert_config.json", "flagembedding")
    other_loss = other(**inputs).decoder_loss.item()
    assert abs(other_loss - expected["losses"]["decoder_loss"]) > 0.05


def test_decoder_mask_matters_on_perturbed_weights():
    folder, state_dict, inputs, _, expected = load_fixture("staoxiao_perturbed")
    model = from_official(state_dict, folder / "bert_config.json", "staoxiao")
    padding_only = inputs["encoder_attention_mask"][:, None, :].expand_as(inputs["decoder_attention_mask"])
    loss = model(**{**inputs, "decoder_attention_mask": padding_only.contiguous()}).decoder_loss.item()
    assert abs(loss - expected["losses"]["decoder_loss"]) > 0.1


def random_batch(config, batch=3, seq_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([seq_len, seq_len - 3, 5])[:batch]
    real = torch.arange(seq_len)[None] < lengths[:, None]
    ids = torch.randint(5, config.vocab_size, (batch, seq_len), generator=g) * real
    labels = torch.where(torch.rand(batch, seq_len, generator=g) < 0.3, ids, -100).masked_fill(~real, -100)
    attention = (torch.rand(batch, seq_len, seq_len, generator=g) < 0.5) & real[:, :, None] & real[:, None, :]
    return {
        "encoder_input_ids": ids,
        "encoder_attention_mask": real.long(),
        "encoder_labels": labels,
        "decoder_input_ids": ids,
        "decoder_attention_mask": attention.long(),
        "decoder_labels": ids.masked_fill(~real, -100),
    }


@pytest.mark.parametrize("query_stream", ["position", "embeddings"])
def test_sdpa_and_eager_agree(tiny_config, query_stream):
    tiny_config.query_stream = query_stream
    tiny_config.num_decoder_layers = 2
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(tiny_config).eval()
    batch = random_batch(tiny_config)
    outputs = {}
    for impl in ("eager", "sdpa"):
        model.set_attn_implementation(impl)
        outputs[impl] = model(**batch)
    real = batch["encoder_attention_mask"].bool()
    torch.testing.assert_close(outputs["eager"].loss, outputs["sdpa"].loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        outputs["eager"].decoder_last_hidden_state[real],
        outputs["sdpa"].decoder_last_hidden_state[real],
        atol=1e-5,
        rtol=0,
    )


def test_no_labelled_token_gives_zero_loss_not_nan(tiny_config):
    model = RetroMAEForPreTraining(tiny_config)
    batch = random_batch(tiny_config)
    batch["encoder_labels"] = torch.full_like(batch["encoder_labels"], -100)
    output = model(**batch)
    assert output.encoder_loss.item() == 0.0
    assert torch.isfinite(output.loss)
    output.loss.backward()


def test_gradient_checkpointing_gives_same_loss_and_gradients(tiny_config):
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(tiny_config).train()
    batch = random_batch(tiny_config)
    reference = model(**batch).loss
    reference.backward()
    expected_grad = model.decoder.layers[0].attention.self.query.weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    loss = model(**batch).loss
    loss.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(model.decoder.layers[0].attention.self.query.weight.grad, expected_grad)


def test_too_long_input_fails_clearly(tiny_config):
    model = RetroMAEModel(tiny_config)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, tiny_config.max_position_embeddings + 1, dtype=torch.long))


def test_encoder_is_a_bert_encoder(tiny_config):
    """Same names and same numbers as transformers' BertModel, so the weights export to plain BERT."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    ours = RetroMAEModel(tiny_config).eval()
    bert = BertModel(
        BertConfig(
            **{
                k: getattr(tiny_config, k)
                for k in BertConfig().to_dict()
                if hasattr(tiny_config, k) and k not in ("architectures", "model_type", "transformers_version", "dtype")
            }
        ),
        add_pooling_layer=False,
    ).eval()
    missing, unexpected = bert.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and not unexpected
    ids = torch.randint(5, 1000, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    torch.testing.assert_close(ours(input_ids=ids, attention_mask=mask).sentence_embedding, expected, atol=1e-5, rtol=0)


def test_config_rejects_invalid_values():
    with pytest.raises(ValueError, match="query_stream"):
        RetroMAEConfig(query_stream="queries")
    with pytest.raises(ValueError, match="num_decoder_layers"):
        RetroMAEConfig(num_decoder_layers=0)
    with pytest.raises(ValueError, match="num_attention_heads"):
        RetroMAEConfig(hidden_size=100, num_attention_heads=12)


def test_auto_classes_and_tied_weights_survive_save_load(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(tiny_config).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "retromae"
    assert {"AutoConfig", "AutoModel", "AutoModelForPreTraining"} <= set(saved["auto_map"])
    assert (tmp_path / "modeling_retromae.py").is_file() and (tmp_path / "configuration_retromae.py").is_file()

    assert isinstance(AutoConfig.from_pretrained(tmp_path), RetroMAEConfig)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, RetroMAEForPreTraining)
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    batch = random_batch(tiny_config)
    torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(encoder, RetroMAEModel)
    torch.testing.assert_close(
        encoder(batch["encoder_input_ids"], batch["encoder_attention_mask"]).sentence_embedding,
        model(**batch).sentence_embedding,
    )


def test_trust_remote_code_loads_without_the_package(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(tiny_config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(5, 1000, (2, 9))
    expected = model.bert(ids).sentence_embedding
    torch.save(ids, tmp_path / "ids.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["retromae_hf"] = None  # any import of the package now fails
        try:
            import retromae_hf
        except ImportError:
            pass
        else:
            raise SystemExit("retromae_hf was importable")
        import torch
        from transformers import AutoModel, AutoModelForPreTraining
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "RetroMAEModel", type(model)
        assert "retromae_hf" not in type(model).__module__
        full = AutoModelForPreTraining.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        assert type(full).__name__ == "RetroMAEForPreTraining"
        ids = torch.load({str(tmp_path / "ids.pt")!r})
        torch.save(model(ids).sentence_embedding, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, atol=1e-6, rtol=0)
    assert str(REPO) not in result.stderr
