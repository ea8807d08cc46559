"""Export to sentence-transformers, and direct loading of RetroMAE checkpoints, in clean processes."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, reference_fixture

from retromae_hf import RetroMAEForPreTraining
from retromae_hf.convert import from_official
from retromae_hf.export import export_sentence_transformer, load_sentence_transformer

TEXTS = [
    "RetroMAE pre-trains retrieval-oriented language models.",
    "The sentence embedding is the [CLS] vector of the last layer.",
    "short",
]


@pytest.fixture
def checkpoint(tmp_path, tiny_config, wordpiece_tokenizer):
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(tiny_config).eval()
    with torch.no_grad():  # non-trivial norms so that dot and cosine differ
        model.get_input_embeddings().weight.mul_(30)
    model.save_pretrained(tmp_path / "checkpoint")
    wordpiece_tokenizer.save_pretrained(tmp_path / "checkpoint")
    return tmp_path / "checkpoint", model


def reference_embeddings(model, tokenizer, texts=TEXTS):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        return model.encode(**batch).sentence_embedding


def run_clean(script: str, tmp_path) -> subprocess.CompletedProcess:
    """Run in a fresh interpreter where `retromae_hf` cannot be imported."""
    prelude = 'import sys\nsys.modules["retromae_hf"] = None\n'
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_export_loads_without_the_package_and_matches(checkpoint, wordpiece_tokenizer, tmp_path, similarity):
    folder, model = checkpoint
    out = export_sentence_transformer(folder, tmp_path / f"st-{similarity}", similarity=similarity)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
    assert json.loads((out / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == similarity
    assert not list(out.glob("*.py"))  # no remote code
    expected = reference_embeddings(model, wordpiece_tokenizer)
    if similarity == "cosine":
        expected = torch.nn.functional.normalize(expected, dim=-1)
    torch.save(expected, tmp_path / "expected.pt")
    result = run_clean(
        f"""
        import torch
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(out)!r}, device="cpu")
        assert model.similarity_fn_name == {similarity!r}, model.similarity_fn_name
        got = model.encode({TEXTS!r}, convert_to_tensor=True, normalize_embeddings=False)
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_retromae_checkpoint_loads_directly_with_cls_pooling(checkpoint, wordpiece_tokenizer, tmp_path):
    folder, model = checkpoint
    expected = reference_embeddings(model, wordpiece_tokenizer)
    direct = load_sentence_transformer(folder, device="cpu")
    assert direct[1].pooling_mode == "cls"
    torch.testing.assert_close(direct.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)
    # Plain sentence-transformers with trust_remote_code, in a process without the package.
    torch.save(expected, tmp_path / "expected.pt")
    result = run_clean(
        f"""
        import torch
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(folder)!r}, trust_remote_code=True, device="cpu")
        assert "cls" in str(model[1]).lower(), model
        got = model.encode({TEXTS!r}, convert_to_tensor=True)
        assert torch.allclose(got, torch.load({str(tmp_path / "expected.pt")!r}), atol=1e-5, rtol=0)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_export_of_a_converted_official_checkpoint(tmp_path, wordpiece_tokenizer):
    fixture = reference_fixture("staoxiao_perturbed")
    model = from_official(fixture / "official_state_dict.safetensors", fixture / "bert_config.json", "staoxiao")
    from safetensors.torch import load_file

    inputs = load_file(str(fixture / "inputs.safetensors"))
    out = export_sentence_transformer(model, tmp_path / "st", tokenizer=wordpiece_tokenizer)
    from transformers import BertModel

    bert = BertModel.from_pretrained(out).eval()
    with torch.no_grad():
        got = bert(input_ids=inputs["encoder_input_ids"], attention_mask=inputs["encoder_attention_mask"])
    expected = load_file(str(fixture / "expected.safetensors"))["cls_embedding"]
    torch.testing.assert_close(got.last_hidden_state[:, 0], expected, atol=1e-5, rtol=0)


def test_export_errors_and_cli(checkpoint, tmp_path):
    folder, _ = checkpoint
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        export_sentence_transformer(tmp_path / "empty", tmp_path / "x")
    with pytest.raises(ValueError, match="similarity"):
        export_sentence_transformer(folder, tmp_path / "x", similarity="euclid")
    result = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "export", str(folder), str(tmp_path / "cli"), "--similarity", "cosine"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cli" / "2_Normalize").is_dir()


def test_every_architecture_exports_its_own_model_loadable_without_the_package(trained_tokenizer, tmp_path):
    """XLM-R exports as XLMRobertaModel, ModernBERT as ModernBertModel...: sentence-transformers alone loads each."""
    from encoders_for_tests import ARCHITECTURES, MAX_LENGTH, tiny_encoder_config

    from retromae_hf import RetroMAEConfig

    native = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel",
              "modernbert": "ModernBertModel"}  # fmt: skip
    expected = {}
    for architecture, (kind, layout) in ARCHITECTURES.items():
        tokenizer = trained_tokenizer(kind, layout)
        torch.manual_seed(0)
        model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))).eval()
        with torch.no_grad():  # large weights: a wrong layer or position shows up far above the tolerance
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.2)
        model.save_pretrained(tmp_path / "ckpt" / architecture)
        tokenizer.save_pretrained(tmp_path / "ckpt" / architecture)
        out = export_sentence_transformer(tmp_path / "ckpt" / architecture, tmp_path / "st" / architecture)
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == architecture and config["architectures"] == [native[architecture]]
        assert "auto_map" not in config and not list(out.glob("*.py"))
        batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        with torch.no_grad():
            expected[architecture] = model.encode(batch["input_ids"], batch["attention_mask"]).sentence_embedding
    torch.save(expected, tmp_path / "expected.pt")
    result = run_clean(
        f"""
        import torch
        from sentence_transformers import SentenceTransformer
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        for architecture, embeddings in expected.items():
            model = SentenceTransformer({str(tmp_path / "st")!r} + "/" + architecture, device="cpu")
            assert type(model[0].auto_model).__module__.startswith("transformers.models."), type(model[0].auto_model)
            assert model.max_seq_length == {MAX_LENGTH}, model.max_seq_length
            got = model.encode({TEXTS!r}, convert_to_tensor=True, normalize_embeddings=False)
            assert torch.allclose(got, embeddings, atol=1e-5, rtol=0), (architecture, (got - embeddings).abs().max())
            print(architecture, type(model[0].auto_model).__name__)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modernbert ModernBertModel" in result.stdout and "xlm-roberta XLMRobertaModel" in result.stdout


def test_export_keeps_the_encoders_own_length_not_the_tokenizers(trained_tokenizer, tmp_path):
    """An 8,192-position ModernBERT exports with max_seq_length 8192 and encodes an 8,000-token text whole in
    sentence-transformers, although its tokenizer says 512; an extended RoBERTa exports its new length (600)."""
    from encoders_for_tests import tiny_encoder_config
    from sentence_transformers import SentenceTransformer

    from retromae_hf import RetroMAEConfig
    from retromae_hf.convert import extend_positions
    from retromae_hf.hub import render_model_card

    tokenizer = trained_tokenizer("bpe", "bert")
    assert tokenizer.model_max_length == 512  # what a copied or freshly trained tokenizer often says
    torch.manual_seed(0)
    config = RetroMAEConfig(encoder=tiny_encoder_config("modernbert", tokenizer, max_position_embeddings=8192))
    model = RetroMAEForPreTraining(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    out = export_sentence_transformer(tmp_path / "ckpt", tmp_path / "st")
    assert "| Maximum sequence length | 8192 tokens" in str(render_model_card(out, repo_id="org/long"))

    pieces = tokenizer(" ".join(TEXTS * 800), add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(pieces[:7998])
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert 7990 < ids.shape[1] <= 8192
    st = SentenceTransformer(str(out), device="cpu")
    assert st.max_seq_length == 8192
    assert st.preprocess([text])["input_ids"].shape == ids.shape  # nothing cut
    with torch.no_grad():
        expected = model.encode(ids, torch.ones_like(ids)).sentence_embedding
    torch.testing.assert_close(st.encode([text], convert_to_tensor=True), expected, atol=1e-5, rtol=0)

    roberta_tokenizer = trained_tokenizer("bpe")
    model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config("roberta", roberta_tokenizer)))
    extend_positions(model, 600)
    out = export_sentence_transformer(model, tmp_path / "roberta", tokenizer=roberta_tokenizer)
    assert SentenceTransformer(str(out), device="cpu").max_seq_length == 600
