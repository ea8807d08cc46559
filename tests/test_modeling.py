"""The model: exact parity with the official RetroMAE code, attention back-ends, Auto classes, save/load, and the
same properties for every tested encoder architecture (BERT, RoBERTa, XLM-R, ModernBERT)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, reference_fixture, saved_shapes
from encoders_for_tests import (
    ARCHITECTURES,
    MAX_LENGTH,
    rewrite_in_the_0_1_layout,
    save_tiny_masked_lm,
    tiny_encoder_config,
)
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from retromae_hf import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining, RetroMAEModel
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

    assert norm("lm.bert.embeddings.word_embeddings.weight") == pytest.approx(
        norms["encoder_word_embeddings"], rel=1e-4
    )
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
    if hasattr(model, "activation_checkpointing_enable"):  # the name in recent transformers 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # earlier transformers 5 (e.g. 5.17)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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
    encoder_fields = tiny_config.encoder.to_dict()
    bert = BertModel(
        BertConfig(
            **{
                k: encoder_fields[k]
                for k in BertConfig().to_dict()
                if k in encoder_fields and k not in ("architectures", "model_type", "transformers_version", "dtype")
            }
        ),
        add_pooling_layer=False,
    ).eval()
    missing, unexpected = bert.load_state_dict(ours.get_encoder().state_dict(), strict=False)
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
    assert loaded.lm.cls.predictions.decoder.weight is loaded.lm.bert.embeddings.word_embeddings.weight
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
    expected = model.encode(ids).sentence_embedding
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


# --------------------------------------------------------------------------------------------------- any encoder
ARCHITECTURE_NAMES = list(ARCHITECTURES)
SENTENCES = [
    "RetroMAE pre-trains retrieval-oriented encoders with a masked auto-encoder.",
    "The decoder rebuilds the sentence from its embedding and a heavily masked copy.",
    "Short text.",
]


@pytest.fixture
def architecture_setup(request, trained_tokenizer):
    """(architecture, tokenizer, RetroMAEConfig) for a tiny encoder of the parametrised architecture."""
    architecture = request.param
    tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
    return architecture, tokenizer, RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))


def collated(tokenizer, seed=0):
    # The official layout, explicitly: several tests read or replace the [B, L, L] decoder mask.
    collator = RetroMAECollator(
        tokenizer, max_length=MAX_LENGTH, generator=torch.Generator().manual_seed(seed), decoder_mask="dense"
    )
    return collator(SENTENCES)


def perturbed(model):
    """Large random parameters, so that a wrong wiring changes the numbers visibly (as the fixtures do)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_every_architecture_trains_forward_backward_finite(architecture_setup):
    architecture, tokenizer, config = architecture_setup
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(config).train()
    assert model.config.decoder_positions == ("learned" if architecture == "modernbert" else "encoder")
    assert type(model.lm).__name__.endswith("ForMaskedLM") and type(model.get_encoder()).__module__.startswith(
        "transformers.models."
    )
    output = model(**collated(tokenizer))
    assert torch.isfinite(output.encoder_loss) and torch.isfinite(output.decoder_loss)
    output.loss.backward()
    for name, parameter in model.named_parameters():
        if "pooler" in name:
            continue
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    decoder_grad = model.decoder.layers[0].attention.self.query.weight.grad
    assert decoder_grad.abs().sum() > 0


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_every_architecture_eager_and_sdpa_agree(architecture_setup):
    _, tokenizer, config = architecture_setup
    config.num_decoder_layers = 2
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).eval()
    batch = collated(tokenizer)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == model.config.encoder._attn_implementation == implementation
        outputs[implementation] = model(**batch)
    real = batch["encoder_attention_mask"].bool()
    eager, sdpa = outputs["eager"], outputs["sdpa"]
    torch.testing.assert_close(eager.loss, sdpa.loss, atol=1e-5, rtol=0)
    for key in ("encoder_last_hidden_state", "decoder_last_hidden_state"):
        torch.testing.assert_close(eager[key][real], sdpa[key][real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_labelled_only_logits_equal_the_architectures_full_logits(architecture_setup):
    """The loss projects labelled positions only; the numbers are those of the architecture's own MLM forward."""
    _, tokenizer, config = architecture_setup
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).eval()
    batch = collated(tokenizer)
    with torch.no_grad():
        full = model.lm(input_ids=batch["encoder_input_ids"], attention_mask=batch["encoder_attention_mask"]).logits
        hidden = model(**batch).encoder_last_hidden_state
        labels = batch["encoder_labels"]
        selected = labels != -100
        torch.testing.assert_close(model.mlm_logits(hidden[selected]), full[selected], atol=1e-4, rtol=1e-5)
        expected_loss = torch.nn.functional.cross_entropy(full[selected].float(), labels[selected])
        assert model(**batch).encoder_loss.item() == pytest.approx(expected_loss.item(), abs=1e-5)


def test_roberta_query_positions_are_those_of_an_unpadded_row(trained_tokenizer):
    """RoBERTa and XLM-R number positions from padding_idx + 1: the query stream uses the same rows."""
    for architecture in ("roberta", "xlm-roberta"):
        tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
        model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer)))
        embeddings = model.get_encoder().embeddings
        ids = torch.full((1, MAX_LENGTH), 7)
        position_ids = embeddings.create_position_ids_from_input_ids(ids, embeddings.padding_idx)
        assert int(position_ids[0, 0]) == tokenizer.pad_token_id + 1
        expected = embeddings.position_embeddings(position_ids)
        torch.testing.assert_close(model.encoder_position_embeddings(MAX_LENGTH), expected)
        assert model.max_sequence_length() == MAX_LENGTH
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model.encode(torch.full((1, MAX_LENGTH + 1), 7))


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_every_architecture_round_trips_save_load_and_auto_classes(architecture_setup, tmp_path):
    architecture, tokenizer, config = architecture_setup
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "retromae" and saved["encoder"]["model_type"] == architecture
    assert saved["decoder_positions"] == model.config.decoder_positions
    batch = collated(tokenizer)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded.lm) is type(model.lm)
    output = loaded(**batch)
    torch.testing.assert_close(output.loss, model(**batch).loss)
    embedding = model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"]).sentence_embedding
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(encoder, RetroMAEModel) and not any(n.startswith("decoder.") for n in encoder.state_dict())
    got = encoder(batch["encoder_input_ids"], batch["encoder_attention_mask"]).sentence_embedding
    torch.testing.assert_close(got, embedding)


def test_every_architecture_loads_through_remote_code_without_the_package(trained_tokenizer, tmp_path):
    """One clean interpreter loads a checkpoint of each architecture with trust_remote_code alone."""
    expected = {}
    for architecture, (kind, layout) in ARCHITECTURES.items():
        tokenizer = trained_tokenizer(kind, layout)
        torch.manual_seed(0)
        model = perturbed(RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))))
        model.eval().save_pretrained(tmp_path / architecture)
        batch = collated(tokenizer)
        expected[architecture] = (
            batch,
            model(**batch).loss,
            model.encode(batch["encoder_input_ids"]).sentence_embedding,
        )
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["retromae_hf"] = None  # any import of the package now fails
        import torch
        from transformers import AutoModel, AutoModelForPreTraining
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=False)
        for architecture, (batch, loss, embedding) in expected.items():
            folder = {str(tmp_path)!r} + "/" + architecture
            full = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
            assert "retromae_hf" not in type(full).__module__, type(full).__module__
            assert torch.allclose(full(**batch).loss, loss, atol=1e-5), architecture
            encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            got = encoder(batch["encoder_input_ids"]).sentence_embedding
            assert torch.allclose(got, embedding, atol=1e-5, rtol=0), architecture
        print("ok", sorted(expected))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok ['bert', 'modernbert', 'roberta', 'xlm-roberta']" in result.stdout


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
def test_from_masked_lm_keeps_the_checkpoints_encoder_and_head(architecture, trained_tokenizer, tmp_path):
    tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
    folder = save_tiny_masked_lm(architecture, tokenizer, tmp_path / "mlm")
    model = RetroMAEForPreTraining.from_masked_lm(folder, num_decoder_layers=2).eval()
    assert model.config.num_decoder_layers == 2 and model.config.encoder.model_type == architecture
    from transformers import AutoModelForMaskedLM

    reference = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert set(model.lm.state_dict()) == set(reference.state_dict())
    for key, tensor in reference.state_dict().items():
        assert torch.equal(model.lm.state_dict()[key], tensor), key
    batch = collated(tokenizer)
    with torch.no_grad():
        expected = reference(input_ids=batch["encoder_input_ids"], attention_mask=batch["encoder_attention_mask"])
        hidden = model(**batch).encoder_last_hidden_state
    real = batch["encoder_attention_mask"].bool()
    torch.testing.assert_close(model.mlm_logits(hidden)[real], expected.logits[real], atol=1e-4, rtol=1e-5)


def test_unsupported_architectures_fail_at_once_naming_the_supported_ones():
    from transformers import AutoConfig

    from retromae_hf import UnsupportedEncoderError
    from retromae_hf.modeling_retromae import check_encoder_supported

    tiny = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    gpt2 = AutoConfig.for_model("gpt2", vocab_size=99, n_embd=32, n_layer=1, n_head=4)
    with pytest.raises(UnsupportedEncoderError, match=r"no masked-LM model.*bert, roberta, xlm-roberta, modernbert"):
        RetroMAEForPreTraining(RetroMAEConfig(encoder=gpt2))
    # BART has a "masked-LM" entry in transformers, but it is an encoder-decoder: no embedding block to share.
    bart = AutoConfig.for_model("bart", vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1,
                                encoder_attention_heads=4, decoder_attention_heads=4)  # fmt: skip
    with pytest.raises(UnsupportedEncoderError, match="bert, roberta, xlm-roberta, modernbert"):
        check_encoder_supported(bart)
    modernbert = AutoConfig.for_model(
        "modernbert", pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, **tiny
    )
    with pytest.raises(ValueError, match="decoder_positions='learned'"):
        RetroMAEForPreTraining(RetroMAEConfig(encoder=modernbert, decoder_positions="encoder"))


def test_config_is_composite_and_upgrades_the_flat_bert_layout(tiny_config):
    assert tiny_config.encoder.model_type == "bert" and tiny_config.hidden_size == 32
    # Decoder sizes follow the encoder's unless given.
    assert tiny_config.decoder_num_attention_heads == 4 and tiny_config.decoder_intermediate_size == 64
    assert tiny_config.decoder_layer_norm_eps == tiny_config.encoder.layer_norm_eps
    saved = tiny_config.to_dict()
    assert "hidden_size" not in saved and saved["encoder"]["hidden_size"] == 32
    assert RetroMAEConfig(**saved).to_dict() == saved
    # With an encoder, its sizes given at the top level are the encoder's; other fields stay at the top level.
    config = RetroMAEConfig(
        encoder={"model_type": "bert", "num_attention_heads": 4}, hidden_size=64, layer_norm_eps=1.0
    )
    assert config.encoder.hidden_size == 64 and config.decoder_num_attention_heads == 4
    assert config.layer_norm_eps == 1.0 and config.encoder.layer_norm_eps != 1.0
    with pytest.raises(ValueError, match="model_type"):
        RetroMAEConfig(encoder={"hidden_size": 64})
    with pytest.raises(ValueError, match="decoder_positions"):
        RetroMAEConfig(decoder_positions="rotary")


def test_checkpoint_of_the_0_1_layout_still_loads(tiny_config, tmp_path):
    """retromae-hf 0.1 wrote BERT fields at the config's top level and `bert.*` / `cls.*` / `decoder.*` keys."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(tiny_config)).eval()
    model.save_pretrained(tmp_path)
    rewrite_in_the_0_1_layout(tmp_path)
    assert any(k.startswith("bert.") for k in load_file(str(tmp_path / "model.safetensors")))
    assert "hidden_size" in json.loads((tmp_path / "config.json").read_text())
    batch = random_batch(tiny_config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss)
    encoder_only = AutoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        encoder_only(batch["encoder_input_ids"]).sentence_embedding,
        model.encode(batch["encoder_input_ids"]).sentence_embedding,
    )


def test_standalone_decoder_reproduces_the_models_decoding(trained_tokenizer):
    """The decoder API other training set-ups reuse: same numbers as inside RetroMAEForPreTraining."""
    from retromae_hf import RetroMAEDecoder

    for architecture in ("bert", "modernbert"):
        tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
        torch.manual_seed(0)
        model = perturbed(RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))))
        model.eval()
        batch = collated(tokenizer)
        output = model(**batch)
        decoder = RetroMAEDecoder(model.config)
        decoder.init_weights()
        decoder.load_state_dict(model.decoder.state_dict())
        content = model.get_encoder().embeddings(input_ids=batch["decoder_input_ids"])
        positions = None if architecture == "modernbert" else model.encoder_position_embeddings(content.shape[1])
        hidden = decoder(output.sentence_embedding, content, positions, batch["decoder_attention_mask"])
        torch.testing.assert_close(hidden, output.decoder_last_hidden_state)


@pytest.mark.parametrize("architecture", ["bert", "xlm-roberta"])
def test_unpadded_batches_run_the_encoder_without_a_mask(architecture, trained_tokenizer, monkeypatch):
    """Packed pre-training blocks have no padding: SDPA then gets no mask (its fastest kernels), padded ones do."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    tokenizer = trained_tokenizer(*ARCHITECTURES[architecture])
    model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))).eval()
    model.set_attn_implementation("sdpa")
    masks = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def spy(module, query, key, value, attention_mask, **kwargs):
        if not type(module).__name__.startswith("RetroMAE"):
            masks.append(attention_mask)
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", spy)
    ids = torch.full((2, 12), 7)
    model.encode(ids, torch.ones(2, 12, dtype=torch.long))
    assert len(masks) == 2 and all(mask is None for mask in masks)
    masks.clear()
    padded = torch.ones(2, 12, dtype=torch.long)
    padded[1, 8:] = 0
    model.encode(ids, padded)
    assert len(masks) == 2 and all(mask is not None for mask in masks)


# --------------------------------------------------------------------------------------------------- long inputs
def compact_collated(tokenizer, seed=0):
    collator = RetroMAECollator(
        tokenizer, max_length=MAX_LENGTH, generator=torch.Generator().manual_seed(seed), decoder_mask="compact"
    )
    return collator(SENTENCES)


def losses_and_gradients(model, batch):
    model.zero_grad()
    output = model(**batch)
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output, grads


def assert_same_step(first, second, real, atol=1e-5):
    (out_a, grads_a), (out_b, grads_b) = first, second
    for key in ("loss", "encoder_loss", "decoder_loss"):
        torch.testing.assert_close(out_a[key], out_b[key], atol=atol, rtol=0)
    torch.testing.assert_close(
        out_a.decoder_last_hidden_state[real], out_b.decoder_last_hidden_state[real], atol=atol, rtol=0
    )
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=1e-5, msg=name)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_compact_decoder_mask_gives_the_dense_losses_and_gradients(architecture_setup, implementation):
    """The decoder expands the compact mask block of query rows by block (several blocks here, each recomputed in
    backward): loss, decoder output and every gradient equal those of the dense `[B, L, L]` mask."""
    _, tokenizer, config = architecture_setup
    config.num_decoder_layers = 2
    config.decoder_attention_block_size = 5
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).train()  # the tiny configs have no dropout
    model.set_attn_implementation(implementation)
    dense, compact = collated(tokenizer), compact_collated(tokenizer)
    assert "decoder_attention_mask" not in compact and compact["decoder_mask_pool"].dtype == torch.bool
    real = dense["encoder_attention_mask"].bool()
    assert dense["encoder_input_ids"].shape[1] > 2 * config.decoder_attention_block_size
    assert_same_step(losses_and_gradients(model, dense), losses_and_gradients(model, compact), real)


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_chunked_cross_entropy_gives_the_unchunked_losses_and_gradients(architecture_setup):
    """Both losses over chunks of 7 tokens (each recomputed in backward) equal one unchunked projection, through
    each architecture's own head (BERT transform + decoder with bias, RoBERTa lm_head, ModernBERT head + decoder)."""
    _, tokenizer, config = architecture_setup
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).train()
    batch = collated(tokenizer)
    assert (batch["encoder_labels"] != -100).sum() > 2 * 7 and (batch["decoder_labels"] != -100).sum() > 2 * 7
    model.config.loss_chunk_size = 0
    unchunked = losses_and_gradients(model, batch)
    model.config.loss_chunk_size = 7
    chunked = losses_and_gradients(model, batch)
    assert_same_step(unchunked, chunked, batch["encoder_attention_mask"].bool())


@pytest.mark.parametrize("with_projection", [False, True], ids=["checkpointed-chunks", "gradients-in-forward"])
def test_chunked_loss_keeps_no_full_logits_for_backward(with_projection):
    """Both chunked paths keep at most one chunk of [tokens, V] for backward (checkpointed chunks: none of more
    than a chunk; gradients taken in forward, with the projection known: none at all) and equal the unchunked
    loss and gradients."""
    from retromae_hf.modeling_retromae import chunked_cross_entropy

    torch.manual_seed(0)
    tokens, vocab, chunk = 50, 97, 8
    head = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(), torch.nn.Linear(16, vocab))
    projection = head[2] if with_projection else None
    hidden = torch.randn(tokens, 16, requires_grad=True)
    labels = torch.randint(vocab, (tokens,))
    full = saved_shapes(lambda: chunked_cross_entropy(hidden, labels, head, 0))
    assert any(len(s) == 2 and s[-1] == vocab and s[0] == tokens for s in full)  # the check can see them
    chunked = saved_shapes(lambda: chunked_cross_entropy(hidden, labels, head, chunk, projection))
    assert not any(len(s) == 2 and s[-1] == vocab and s[0] > (0 if with_projection else chunk) for s in chunked)

    reference = chunked_cross_entropy(hidden, labels, head, 0)
    reference_grads = torch.autograd.grad(reference, [hidden, *head.parameters()])
    loss = chunked_cross_entropy(hidden, labels, head, chunk, projection)
    grads = torch.autograd.grad(loss, [hidden, *head.parameters()])
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    for got, expected in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_compact_mask_keeps_no_length_squared_tensor_for_backward(trained_tokenizer):
    from retromae_hf.modeling_retromae import CompactDecoderMask

    tokenizer = trained_tokenizer(*ARCHITECTURES["bert"])
    config = RetroMAEConfig(encoder=tiny_encoder_config("bert", tokenizer), decoder_attention_block_size=8)
    model = RetroMAEForPreTraining(config).train()
    model.set_attn_implementation("eager")  # eager keeps its [B, heads, rows, L] weights: the worst case
    dense, compact = collated(tokenizer), compact_collated(tokenizer)
    seq_len = dense["decoder_input_ids"].shape[1]
    sentence = torch.randn(len(SENTENCES), config.hidden_size, requires_grad=True)
    ids, real = dense["decoder_input_ids"], dense["encoder_attention_mask"].bool()

    def long_in_rows_and_keys(shapes):
        return [s for s in shapes if len(s) >= 2 and s[-1] == seq_len and s[-2] > 8]

    assert long_in_rows_and_keys(saved_shapes(lambda: model.decode(sentence, ids, dense["decoder_attention_mask"])))
    mask = CompactDecoderMask(compact["decoder_mask_pool"], compact["decoder_mask_pick"], real, 8)
    assert not long_in_rows_and_keys(saved_shapes(lambda: model.decode(sentence, ids, mask)))


def test_compact_mask_inputs_are_checked(tiny_config):
    model = RetroMAEForPreTraining(tiny_config)
    batch = random_batch(tiny_config)
    pool = torch.zeros(3, 2, 12, dtype=torch.bool)
    pick = torch.zeros(3, 12, dtype=torch.int16)
    with pytest.raises(ValueError, match="not both"):
        model(**batch, decoder_mask_pool=pool, decoder_mask_pick=pick)
    del batch["decoder_attention_mask"]
    with pytest.raises(ValueError, match="needs both"):
        model(**batch, decoder_mask_pool=pool)
    with pytest.raises(ValueError, match="needs its mask"):
        model(**batch)
    with pytest.raises(ValueError, match=r"decoder_mask_pool must be \[batch, pool, seq\]"):
        model(**batch, decoder_mask_pool=pool[:, :, :5], decoder_mask_pick=pick)
    assert torch.isfinite(model(**batch, decoder_mask_pool=pool, decoder_mask_pick=pick).loss)


def _fused_kernel_or_skip():
    from retromae_hf.modeling_retromae import fused_linear_cross_entropy_kernel

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: the fused linear-cross-entropy kernels (liger-kernel, cut-cross-entropy) run on GPUs")
    if fused_linear_cross_entropy_kernel() is None:
        pytest.skip("needs liger-kernel or cut-cross-entropy (pip install retromae-hf[fused])")


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_fused_cross_entropy_gives_the_unchunked_losses_and_gradients(architecture_setup):
    _fused_kernel_or_skip()
    _, tokenizer, config = architecture_setup
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).train().cuda()
    batch = {key: value.cuda() for key, value in collated(tokenizer).items()}
    model.config.loss_chunk_size = 0
    unchunked = losses_and_gradients(model, batch)
    model.config.fused_cross_entropy = True
    fused = losses_and_gradients(model, batch)
    assert_same_step(unchunked, fused, batch["encoder_attention_mask"].bool())


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_head_features_then_the_output_projection_is_the_head(architecture_setup):
    """The fused path's split of each architecture's head (runs on CPU, without any fused kernel)."""
    from retromae_hf.modeling_retromae import head_features

    _, _, config = architecture_setup
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).eval()
    hidden = torch.randn(10, config.hidden_size)
    projection = model.get_output_embeddings()
    assert isinstance(projection, torch.nn.Linear)
    with torch.no_grad():
        features = head_features(model.mlm_logits, projection, hidden)
        assert features.shape == (10, config.hidden_size)
        torch.testing.assert_close(projection(features), model.mlm_logits(hidden), atol=1e-5, rtol=1e-5)


def test_compact_mask_under_gradient_checkpointing(trained_tokenizer):
    """The decoder layer's own checkpoint (the Trainer's gradient_checkpointing) around the per-block ones."""
    tokenizer = trained_tokenizer(*ARCHITECTURES["bert"])
    config = RetroMAEConfig(encoder=tiny_encoder_config("bert", tokenizer), decoder_attention_block_size=8)
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).train()
    batch = compact_collated(tokenizer)
    reference = losses_and_gradients(model, batch)
    if hasattr(model, "activation_checkpointing_enable"):  # the name in recent transformers 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # earlier transformers 5 (e.g. 5.17)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert_same_step(reference, losses_and_gradients(model, batch), batch["encoder_attention_mask"].bool())


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_cross_entropy_gradients_taken_in_forward_equal_autograd(with_bias):
    """`LinearCrossEntropy` (gradients computed chunk by chunk in forward) equals one projection + cross-entropy,
    for the loss and the gradients of features, weight and bias, also when scaled by an outer factor."""
    from retromae_hf.modeling_retromae import LinearCrossEntropy

    torch.manual_seed(0)
    tokens, width, vocab = 37, 16, 53
    features = torch.randn(tokens, width, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, width, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(vocab, dtype=torch.float64, requires_grad=True) if with_bias else None
    labels = torch.randint(vocab, (tokens,))
    leaves = [t for t in (features, weight, bias) if t is not None]

    expected = 3.0 * torch.nn.functional.cross_entropy(torch.nn.functional.linear(features, weight, bias), labels)
    expected_grads = torch.autograd.grad(expected, leaves)
    got = 3.0 * LinearCrossEntropy.apply(features, weight, bias, labels, 8)
    got_grads = torch.autograd.grad(got, leaves)
    torch.testing.assert_close(got.to(expected.dtype), expected, atol=1e-6, rtol=1e-6)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------------------------------- like any model
# What transformers' generic tests (tests/test_transformers_conformance.py) check, kept here for every tested
# architecture and for machines where that suite cannot be had.


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_fields_set_on_the_top_level_config_survive_save_load(architecture_setup, tmp_path):
    _, tokenizer, config = architecture_setup
    config.layer_norm_eps = 1.0  # as transformers' tests and PEFT set fields on a model's top-level config
    config.tie_word_embeddings = False
    config.vocab_size = len(tokenizer) + 8  # a property: it sets the encoder's
    assert config.encoder.vocab_size == len(tokenizer) + 8
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "vocab_size" not in saved and saved["encoder"]["vocab_size"] == len(tokenizer) + 8
    loaded = RetroMAEConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert (loaded.layer_norm_eps, loaded.tie_word_embeddings) == (1.0, False)
    assert RetroMAEConfig.from_pretrained(tmp_path, vocab_size=20).encoder.vocab_size == 20


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
@pytest.mark.parametrize("device_map", ["auto", "balanced", "sequential"])
def test_named_device_maps_load_the_plain_weights(architecture_setup, device_map, tmp_path):
    config = architecture_setup[2]
    torch.manual_seed(0)
    perturbed(RetroMAEForPreTraining(config)).save_pretrained(tmp_path)
    for model_class in (RetroMAEForPreTraining, RetroMAEModel):
        plain = model_class.from_pretrained(tmp_path).state_dict()
        mapped = model_class.from_pretrained(tmp_path, device_map=device_map, dtype="auto").state_dict()
        assert plain.keys() == mapped.keys()
        for name, value in plain.items():
            torch.testing.assert_close(mapped[name], value, atol=0, rtol=0, msg=f"{model_class.__name__} {name}")


def test_a_device_map_split_across_cpu_and_disk_keeps_blocks_whole_and_outputs_equal(tmp_path):
    encoder = AutoConfig.for_model(
        "bert", vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37
    )
    encoder.max_position_embeddings = 64
    config = RetroMAEConfig(encoder=encoder)
    torch.manual_seed(0)
    model = perturbed(RetroMAEForPreTraining(config)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    size = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    budget = {"cpu": size // 2}  # about half the weights fit: the rest is offloaded to disk
    layout = RetroMAEForPreTraining.infer_device_map(tmp_path / "ckpt", "auto", max_memory=budget)
    assert set(layout.values()) == {"cpu", "disk"}
    assert layout["decoder"] == layout["lm.bert.embeddings"]  # the decoder runs on the embeddings' output
    assert not any(".layer.0." in name or name.endswith((".query", ".key", ".value")) for name in layout)
    loaded = RetroMAEForPreTraining.from_pretrained(
        tmp_path / "ckpt", device_map="auto", max_memory=budget, offload_folder=tmp_path / "offload"
    ).eval()
    batch = random_batch(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss)


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_device_map_keeps_the_encoders_blocks_whole(architecture_setup):
    config = architecture_setup[2]
    for model in (RetroMAEModel(config), RetroMAEForPreTraining(config)):
        held = {type(module).__name__ for module in model.modules()}
        encoder_blocks = set(type(model.get_encoder())._no_split_modules or ())
        assert encoder_blocks and encoder_blocks <= set(model._no_split_modules)
        assert set(model._no_split_modules) <= held, "names a class the model does not hold"
    assert "RetroMAELayer" in model._no_split_modules


def test_get_encoder_of_another_modality_is_the_model_itself(tiny_config):
    for model in (RetroMAEModel(tiny_config), RetroMAEForPreTraining(tiny_config)):
        assert model.get_encoder() is model.lm.bert
        for modality in ("image", "video", "audio"):
            assert model.get_encoder(modality=modality) is model
        with pytest.raises(ValueError, match="modality"):
            model.get_encoder(modality="smell")
        try:
            from transformers.exporters.utils import is_multimodal
        except ImportError:  # transformers releases before the exporters
            continue
        assert not is_multimodal(model)


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_output_flags_are_honoured(architecture_setup):
    _, tokenizer, config = architecture_setup
    batch = collated(tokenizer)
    layers = config.encoder.num_hidden_layers
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(config).eval()
    model.set_attn_implementation("eager")  # attention weights need the eager kernel (SDPA returns none)
    encoder = RetroMAEModel(config).eval()
    encoder.load_state_dict(model.state_dict(), strict=False)
    inputs = {"input_ids": batch["encoder_input_ids"], "attention_mask": batch["encoder_attention_mask"]}
    everything = encoder(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(everything.hidden_states) == layers + 1 and len(everything.attentions) == layers
    assert everything.attentions[0].shape[-2:] == (batch["encoder_input_ids"].shape[1],) * 2
    # Indices select what the encoder itself selects for them (transformers releases count them differently).
    some = encoder(**inputs, output_hidden_states=[0]).hidden_states
    own = encoder.get_encoder()(**inputs, output_hidden_states=[0]).hidden_states
    assert len(some) == len(own) and [state is None for state in some] == [state is None for state in own]
    assert any(state is None for state in some) and any(state is not None for state in some)
    for ours, theirs in zip(some, own, strict=True):
        if theirs is not None:
            torch.testing.assert_close(ours, theirs)
    plain = encoder(**inputs)
    assert plain.hidden_states is None and plain.attentions is None
    full = model(**batch, output_hidden_states=True, output_attentions=True)
    assert len(full.hidden_states) == layers + 1 and len(full.attentions) == layers
    torch.testing.assert_close(full.hidden_states[-1], full.encoder_last_hidden_state)
    model.config.output_hidden_states = True  # the config's flag, as in transformers' models
    assert len(model(**batch).hidden_states) == layers + 1


def test_pretraining_main_input_is_its_first_forward_input(tiny_config):
    import inspect

    model = RetroMAEForPreTraining(tiny_config)
    first = next(iter(inspect.signature(model.forward).parameters))
    assert model.main_input_name == first == "encoder_input_ids"
    assert RetroMAEModel(tiny_config).main_input_name == "input_ids"


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_resizing_the_vocabulary_reaches_the_encoder_and_the_head(architecture_setup):
    _, tokenizer, config = architecture_setup
    model = RetroMAEForPreTraining(config)
    size = len(tokenizer) + 5
    model.resize_token_embeddings(size)
    assert model.config.vocab_size == model.config.encoder.vocab_size == size
    assert model.get_input_embeddings().weight.shape[0] == model.get_output_embeddings().weight.shape[0] == size
    output = model(**collated(tokenizer))
    assert torch.isfinite(output.loss)


@pytest.mark.parametrize("architecture_setup", ARCHITECTURE_NAMES, indirect=True)
def test_attention_implementation_switched_after_loading(architecture_setup, tmp_path):
    _, tokenizer, config = architecture_setup
    torch.manual_seed(0)
    perturbed(RetroMAEForPreTraining(config)).save_pretrained(tmp_path)
    batch = collated(tokenizer)
    model = RetroMAEForPreTraining.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    before = model(**batch)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == model.get_encoder().config._attn_implementation == "eager"
    after = model(**batch)
    torch.testing.assert_close(after.loss, before.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after.sentence_embedding, before.sentence_embedding, atol=1e-5, rtol=1e-5)


def test_feature_extraction_pipeline_on_a_remote_code_checkpoint(trained_tokenizer, tmp_path):
    """`pipeline("feature-extraction")` on a `RetroMAEModel` checkpoint, in a process where only the code saved
    beside the weights can provide the model (the package is not importable there)."""
    tokenizer = trained_tokenizer(*ARCHITECTURES["bert"])
    config = RetroMAEConfig(encoder=tiny_encoder_config("bert", tokenizer))
    torch.manual_seed(0)
    model = RetroMAEModel(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["retromae_hf"] = None  # any import of the package now fails
        import torch
        from transformers import pipeline
        extractor = pipeline("feature-extraction", model={str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        assert type(extractor.model).__name__ == "RetroMAEModel", type(extractor.model)
        torch.save(torch.tensor(extractor({SENTENCES[0]!r})[0]), {str(tmp_path / "out.pt")!r})
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = model(**tokenizer(SENTENCES[0], return_tensors="pt")).last_hidden_state[0]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture_setup", ["bert", "modernbert"], indirect=True)
def test_lora_on_the_encoder_trains_only_the_adapters(architecture_setup):
    peft = pytest.importorskip("peft", reason="PEFT is optional (pip install retromae-hf[peft])")
    architecture, tokenizer, config = architecture_setup
    targets = {"bert": ["query", "value"], "modernbert": ["Wqkv"]}[architecture]
    torch.manual_seed(0)
    model = RetroMAEModel(config)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    trainable = [name for name, parameter in lora.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch.pop("token_type_ids", None)
    lora(**batch).sentence_embedding.pow(2).sum().backward()
    assert all(parameter.grad is not None for _, parameter in lora.named_parameters() if parameter.requires_grad)
    merged = lora.merge_and_unload()
    assert isinstance(merged, RetroMAEModel) and not any("lora_" in name for name, _ in merged.named_parameters())


class VocabularyProducts(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the matrix products that touch a `vocab`-wide dimension, by kind: `projection` (`[n, H] x [H, V]`,
    logits), `gradient` (`[n, V] x [V, H]` for the features' gradient, or a `[V, H]` result for the weight's)."""

    PRODUCTS = ("mm.default", "addmm.default", "matmul.default", "bmm.default", "linear.default")

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.counts = {"projection": 0, "gradient": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func).removeprefix("aten.")
        if name == "linear.default":  # not decomposed into addmm under inference_mode
            self.counts["projection"] += out.shape[-1] == self.vocab
        elif name in self.PRODUCTS:
            left, right = [a for a in args if isinstance(a, torch.Tensor)][-2:]
            if left.shape[-1] == self.vocab or out.shape[-2:] == (self.vocab, right.shape[-1]):
                self.counts["gradient"] += 1
            elif out.shape[-1] == self.vocab:
                self.counts["projection"] += 1
        return out


@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
def test_chunked_loss_takes_no_gradients_without_grad_mode(grad_mode):
    """Under `torch.no_grad()` / `torch.inference_mode()` (evaluation) the chunked loss projects each chunk once
    and computes no gradient, though its inputs require them; with grad mode the same counter sees the two gradient
    products per chunk that `LinearCrossEntropy` takes in forward. The value is the same either way."""
    from retromae_hf.modeling_retromae import chunked_cross_entropy

    torch.manual_seed(0)
    tokens, vocab, chunk = 50, 97, 8
    chunks = -(-tokens // chunk)
    head = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(), torch.nn.Linear(16, vocab))
    hidden = torch.randn(tokens, 16, requires_grad=True)
    labels = torch.randint(vocab, (tokens,))

    with VocabularyProducts(vocab) as training:
        trained = chunked_cross_entropy(hidden, labels, head, chunk, head[2])
    assert training.counts == {"projection": chunks, "gradient": 2 * chunks}  # the counter sees gradient work
    with getattr(torch, grad_mode)(), VocabularyProducts(vocab) as evaluation:
        evaluated = chunked_cross_entropy(hidden, labels, head, chunk, head[2])
    assert evaluation.counts == {"projection": chunks, "gradient": 0}
    assert not evaluated.requires_grad
    torch.testing.assert_close(evaluated, trained.detach(), atol=1e-6, rtol=1e-6)


def test_model_evaluation_with_labels_takes_no_loss_gradients(tiny_config):
    """A labelled forward under `torch.no_grad()` (the Trainer's evaluation loop) does no gradient work in either
    loss, with chunks small enough that both go through the chunked path; the losses equal those of training."""
    tiny_config.loss_chunk_size = 4
    model = RetroMAEForPreTraining(tiny_config).eval()
    batch = random_batch(tiny_config)
    with VocabularyProducts(tiny_config.vocab_size) as training:
        trained = model(**batch)
    assert training.counts["gradient"] > 0
    with torch.no_grad(), VocabularyProducts(tiny_config.vocab_size) as evaluation:
        evaluated = model(**batch)
    assert evaluation.counts["gradient"] == 0 and evaluation.counts["projection"] == training.counts["projection"]
    torch.testing.assert_close(evaluated.loss, trained.loss.detach())
