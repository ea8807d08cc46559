"""RetroMAE as a sentence-transformers loss: tiny models built here, tokenizers trained in the session, offline CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_torchrun, saved_shapes
from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from tokenizers_for_tests import project_text
from transformers import BertConfig, BertModel

from retromae_hf import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining
from retromae_hf.collator import COMPACT_DECODER_MASK_KEYS, FORWARD_KEYS, expand_decoder_mask
from retromae_hf.sentence_transformers import CHECKPOINT_SUBFOLDER, MaskedLMLoss, RetroMAELoss, RetroMAELossError

HIDDEN = 32
TEXTS = [line for line in project_text() if 40 < len(line) < 300][:64]


def tiny_bert(folder: Path, tokenizer, **overrides) -> Path:
    """A 2-layer BERT sized to the tokenizer, saved with it (dropout off: tests compare exact values)."""
    torch.manual_seed(0)
    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    config = BertConfig(**{**settings, **overrides})
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentence_model(folder: Path, pooling: str, normalize: bool = False, dense: int | None = None):
    modules = [Transformer(str(folder), max_seq_length=64), Pooling(HIDDEN, pooling)]
    if dense:
        modules.append(Dense(HIDDEN, dense))
    if normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory, trained_tokenizer):
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), trained_tokenizer("wordpiece"))


@pytest.fixture(params=["cls", "mean"])
def model(request, bert_folder):
    # Mean pooling as the common sentence models do it: averaged, then L2-normalised.
    return sentence_model(bert_folder, request.param, normalize=request.param == "mean")


def features(model, texts):
    return model.preprocess(list(texts))


def training_args(tmp_path, **overrides) -> SentenceTransformerTrainingArguments:
    settings = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 30,
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    settings.update(overrides)
    return SentenceTransformerTrainingArguments(**settings)


def logged(trainer, key: str) -> list[float]:
    return [record[key] for record in trainer.state.log_history if key in record]


# ----------------------------------------------------------------------------------------------- the loss itself


def test_loss_is_finite_with_gradients_in_encoder_and_decoder(model):
    loss = RetroMAELoss(model)
    terms = loss([features(model, TEXTS[:6])])
    assert set(terms) == {"encoder_loss", "decoder_loss"}
    vocab = len(model.tokenizer)
    for value in terms.values():  # a fresh head predicts close to uniformly: about ln(V)
        assert torch.isfinite(value) and abs(value.item() - torch.log(torch.tensor(vocab)).item()) < 1.0
    sum(terms.values()).backward()
    backbone = model[0].auto_model
    for name, parameter in [
        ("encoder layer 0", backbone.encoder.layer[0].attention.self.query.weight),
        ("word embeddings (tied head)", backbone.embeddings.word_embeddings.weight),
        ("decoder", loss.decoder.layers[0].attention.self.query.weight),
        ("head transform", loss.head.cls.predictions.transform.dense.weight),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # The head's projection onto the vocabulary is the model's word-embedding matrix itself, and its bias is the
    # head's one bias (the ties BERT's masked-LM model makes), so none of them counts as the loss's own.
    predictions = loss.head.cls.predictions
    assert predictions.decoder.weight is backbone.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    assert not any(p is backbone.embeddings.word_embeddings.weight for p in loss.own_parameters())
    if model[1].pooling_mode == "mean":
        assert loss.normalize_embedding and isinstance(loss.embedding_adapter[0], torch.nn.LayerNorm)
    else:
        assert not loss.normalize_embedding and len(loss.embedding_adapter) == 0


def test_decoder_sees_the_models_own_sentence_embedding(bert_folder):
    """The decoder is fed `model(features)["sentence_embedding"]`: a different pooling changes the decoder loss
    while the encoder's masked-LM term, which does not depend on pooling, stays the same."""
    cls_model, max_model = sentence_model(bert_folder, "cls"), sentence_model(bert_folder, "max")
    batch = features(cls_model, TEXTS[:4])
    cls_loss = RetroMAELoss(cls_model, normalize_embedding=False)
    max_loss = RetroMAELoss(max_model, normalize_embedding=False)
    max_loss.load_state_dict(cls_loss.state_dict())
    inputs = cls_loss.retromae_inputs(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = cls_loss.compute_losses(batch, inputs), max_loss.compute_losses(batch, inputs)
    assert torch.equal(a["encoder_loss"], b["encoder_loss"])
    assert not torch.equal(a["decoder_loss"], b["decoder_loss"])


def test_same_computation_as_retromae_for_pretraining(tmp_path, trained_tokenizer):
    """On a CLS-pooled BERT, with the same weights and masks, the loss computes exactly what the package's
    `RetroMAEForPreTraining` does: one implementation of enhanced decoding."""
    tokenizer = trained_tokenizer("wordpiece")
    torch.manual_seed(0)
    encoder = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    reference = RetroMAEForPreTraining(RetroMAEConfig(encoder=encoder)).eval()
    reference.get_encoder().save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    model = sentence_model(tmp_path / "bert", "cls")
    loss = RetroMAELoss(model)
    with torch.no_grad():
        loss.head.cls.load_state_dict(reference.lm.cls.state_dict())
        loss.decoder.load_state_dict(reference.decoder.state_dict())
    batch = features(model, TEXTS[:5])
    inputs = loss.retromae_inputs(batch, torch.Generator().manual_seed(0))
    ours = loss.compute_losses(batch, inputs)
    theirs = reference(**inputs)
    torch.testing.assert_close(ours["encoder_loss"], theirs.encoder_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["decoder_loss"], theirs.decoder_loss, rtol=1e-5, atol=1e-6)


def test_masks_are_the_collators(model):
    """From sentence-transformers' tokenized batch, the loss draws exactly the tensors `RetroMAECollator` draws
    from the same token ids with the same random numbers (WordPiece: spelling and word_ids() agree)."""
    tokenizer = model.tokenizer
    batch = features(model, TEXTS[:8])
    loss = RetroMAELoss(model, decoder_pool_size=16)
    ours = loss.retromae_inputs(batch, torch.Generator().manual_seed(3))
    ids = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    collator = RetroMAECollator(
        tokenizer, max_length=64, decoder_pool_size=16, generator=torch.Generator().manual_seed(3), decoder_mask="dense"
    )
    theirs = collator([{"input_ids": row} for row in ids])
    for key in FORWARD_KEYS:
        assert torch.equal(ours[key].long(), theirs[key].long()), key
    # The compact form the loss trains with: the compact collator's pool and picks, from the same draws.
    compact = loss.retromae_inputs(batch, torch.Generator().manual_seed(3), decoder_mask="compact")
    collator = RetroMAECollator(
        tokenizer, max_length=64, decoder_pool_size=16, decoder_mask="compact", generator=torch.Generator().manual_seed(3)
    )
    theirs = collator([{"input_ids": row} for row in ids])
    assert "decoder_attention_mask" not in compact
    for key in set(FORWARD_KEYS) - {"decoder_attention_mask"} | set(COMPACT_DECODER_MASK_KEYS):
        assert torch.equal(compact[key].long(), theirs[key].long()), key


def long_texts(count: int) -> list[str]:
    """Texts filling the 64-token window (several blocks of a small decoder block size)."""
    return [" ".join(TEXTS[i : i + 4]) for i in range(count)]


def test_compact_decoder_masks_give_the_dense_losses_and_gradients(bert_folder):
    """The loss's forward (compact masks, expanded 8 query rows at a time, blocks recomputed in backward) gives
    the losses and gradients of the dense `[B, L, L]` masks drawn from the same random state."""
    model = sentence_model(bert_folder, "mean", normalize=True)
    loss = RetroMAELoss(model, decoder_attention_block_size=8)
    batch = features(model, long_texts(4))
    seq_len = batch["input_ids"].shape[1]
    assert seq_len > 2 * 8, seq_len
    dense = loss.retromae_inputs(batch, torch.Generator().manual_seed(1))
    compact = loss.retromae_inputs(batch, torch.Generator().manual_seed(1), decoder_mask="compact")
    real = batch["attention_mask"].bool()
    expanded = expand_decoder_mask(compact["decoder_mask_pool"], compact["decoder_mask_pick"], real)
    assert torch.equal(expanded, dense["decoder_attention_mask"])
    named = [(n, p) for n, p in [*model.named_parameters(), *loss._own_named_parameters().items()] if p.requires_grad]
    parameters = [p for _, p in named]

    def step(run):
        terms = run()
        grads = torch.autograd.grad(sum(terms.values()), parameters, allow_unused=True)
        return {k: v.detach() for k, v in terms.items()}, dict(zip([n for n, _ in named], grads, strict=True))

    torch.manual_seed(5)
    reference = step(lambda: loss.compute_losses(batch, loss.retromae_inputs(batch)))
    torch.manual_seed(5)
    trained = step(lambda: loss([batch]))  # the forward the trainer calls: compact
    assert set(reference[0]) == {"encoder_loss", "decoder_loss"}
    for key in reference[0]:
        torch.testing.assert_close(trained[0][key], reference[0][key], rtol=1e-5, atol=1e-6)
    assert reference[1]["decoder.layers.0.attention.self.query.weight"].abs().sum() > 0
    for name, expected in reference[1].items():
        got = trained[1][name]
        assert (got is None) == (expected is None), name
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_compact_decoder_masks_keep_no_length_squared_tensor_for_backward(bert_folder):
    """On the compact path the decoder keeps for backward no mask or scores with more query rows than a block."""
    model = sentence_model(bert_folder, "cls")
    block = 8
    loss = RetroMAELoss(model, decoder_attention_block_size=block)
    loss.config._attn_implementation = "eager"  # eager keeps its [B, heads, rows, L] weights: the worst case
    # A length no layer width shares (the tiny model's are 32 and 64), so that a shape ending in L is a length.
    model.max_seq_length = 60
    batch = features(model, long_texts(3))
    seq_len = batch["input_ids"].shape[1]
    assert seq_len == 60 and seq_len > 2 * block, seq_len
    dense = loss.retromae_inputs(batch, torch.Generator().manual_seed(0))
    compact = loss.retromae_inputs(batch, torch.Generator().manual_seed(0), decoder_mask="compact")
    embedding = torch.randn(batch["input_ids"].shape[0], HIDDEN, requires_grad=True)
    ids = batch["input_ids"]

    def long_in_rows_and_keys(shapes):
        return [s for s in shapes if len(s) >= 2 and s[-1] == seq_len and s[-2] > block]

    # The check can see them: the dense mask keeps [B, heads, L, L] scores.
    assert long_in_rows_and_keys(saved_shapes(lambda: loss.decode(embedding, ids, dense["decoder_attention_mask"])))
    mask = loss._decoder_mask(compact)
    assert mask.block_size == block
    assert not long_in_rows_and_keys(saved_shapes(lambda: loss.decode(embedding, ids, mask)))


def test_masked_lm_loss_is_the_encoder_term_alone(model):
    """The masked-LM baseline uses the same masks and head as RetroMAE's encoder term."""
    retromae, baseline = RetroMAELoss(model), MaskedLMLoss(model)
    baseline.head.load_state_dict(retromae.head.state_dict())
    batch = features(model, TEXTS[:4])
    torch.manual_seed(5)
    expected = retromae.compute_losses(batch, retromae.retromae_inputs(batch))["encoder_loss"]
    torch.manual_seed(5)
    assert torch.equal(baseline([batch])["masked_lm_loss"], expected)
    assert not [name for name, _ in baseline.named_parameters() if name.startswith("decoder.")]


def test_dense_projection_and_decoder_layers(bert_folder):
    """A Dense module changing the embedding size: the loss projects the embedding back to the hidden size."""
    model = sentence_model(bert_folder, "mean", dense=16, normalize=True)
    loss = RetroMAELoss(model, num_decoder_layers=2, encoder_mlm_weight=0.0)
    assert isinstance(loss.embedding_adapter[0], torch.nn.Linear) and loss.embedding_adapter[0].in_features == 16
    assert len(loss.decoder.layers) == 2
    terms = loss([features(model, TEXTS[:4])])
    assert set(terms) == {"decoder_loss"}  # weight 0: the encoder's masked-LM term is not even computed
    terms["decoder_loss"].backward()
    assert model[2].linear.weight.grad.abs().sum() > 0  # reconstruction trains through the Dense module


# ----------------------------------------------------------------------------------------------- with the trainer


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_trainer_30_steps_decrease_the_loss_and_the_saved_model_is_plain(tmp_path, bert_folder, pooling):
    model = sentence_model(bert_folder, pooling, normalize=pooling == "mean")
    probe = TEXTS[:6]
    untrained = model.encode(probe, convert_to_tensor=True)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args(tmp_path),
        train_dataset=Dataset.from_dict({"text": TEXTS}),
        loss=RetroMAELoss(model),
    )
    trainer.train()
    for key in ("encoder_loss", "decoder_loss"):
        values = logged(trainer, key)
        assert len(values) == 30
        first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
        assert last < first - 0.5, (key, values)

    trained = model.encode(probe, convert_to_tensor=True)
    assert not torch.allclose(trained, untrained, atol=1e-3)
    saved = tmp_path / "adapted"
    model.save_pretrained(str(saved))
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
    assert not list(saved.glob("*.py")) and not list(saved.glob("retromae_loss*"))
    torch.save(trained, tmp_path / "trained.pt")
    # A fresh interpreter in which retromae_hf cannot be imported: sentence-transformers alone loads the model.
    script = f"""
        import sys
        sys.modules["retromae_hf"] = None
        import torch
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(saved)!r}, device="cpu")
        print([type(m).__name__ for m in model])
        torch.save(model.encode({probe!r}, convert_to_tensor=True), {str(tmp_path / "reloaded.pt")!r})
    """
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    expected_modules = ["Transformer", "Pooling"] + (["Normalize"] if pooling == "mean" else [])
    assert result.stdout.strip().splitlines()[-1] == str(expected_modules)
    reloaded = torch.load(tmp_path / "reloaded.pt")
    torch.testing.assert_close(reloaded, trained, rtol=1e-4, atol=1e-5)


def test_joint_training_with_a_contrastive_loss_and_an_evaluator(tmp_path, bert_folder):
    """A dict of datasets and losses: RetroMAE on texts beside MultipleNegativesRankingLoss on pairs, with an
    evaluator and a callback (the loss's checkpoint saver), all through the trainer's public API."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    model = sentence_model(bert_folder, "mean", normalize=True)
    calls = {"pairs": 0}

    class CountingRankingLoss(MultipleNegativesRankingLoss):
        def forward(self, *args, **kwargs):
            calls["pairs"] += 1
            return super().forward(*args, **kwargs)

    retromae = RetroMAELoss(model)
    pairs = Dataset.from_dict({"anchor": [t[:30] for t in TEXTS], "positive": TEXTS})
    evaluator = EmbeddingSimilarityEvaluator(TEXTS[:8], TEXTS[8:16], [0.1 * i for i in range(8)], name="toy")
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args(
            tmp_path, max_steps=8, eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4
        ),
        train_dataset=DatasetDict({"domain": Dataset.from_dict({"text": TEXTS}), "pairs": pairs}),
        eval_dataset=DatasetDict({"domain": Dataset.from_dict({"text": TEXTS[:8]}), "pairs": pairs.select(range(8))}),
        loss={"domain": retromae, "pairs": CountingRankingLoss(model)},
        evaluator=evaluator,
        callbacks=[retromae.checkpoint_callback()],
    )
    trainer.train()
    assert calls["pairs"] >= 2 and logged(trainer, "decoder_loss") and logged(trainer, "encoder_loss")
    assert all(torch.isfinite(torch.tensor(v)) for v in logged(trainer, "loss"))
    assert any(key.startswith("eval_toy") for record in trainer.state.log_history for key in record)
    # The evaluation loss of each eval dataset, the RetroMAE one with its two terms.
    eval_keys = {key for record in trainer.state.log_history for key in record if key.startswith("eval_")}
    assert {"eval_domain_loss", "eval_pairs_loss"} <= eval_keys, eval_keys
    # The checkpoint callback wrote the loss beside each checkpoint, and it loads back to continue training.
    saved = Path(trainer.args.output_dir) / "checkpoint-8" / CHECKPOINT_SUBFOLDER
    assert (saved / "retromae_loss.safetensors").is_file()
    reloaded = RetroMAELoss.from_pretrained(model, saved)
    for (name, a), (_, b) in zip(retromae.named_parameters(), reloaded.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_save_and_load_the_loss(tmp_path, bert_folder, trained_tokenizer):
    model = sentence_model(bert_folder, "mean", normalize=True)
    loss = RetroMAELoss(
        model, encoder_mask_ratio=0.2, decoder_mask_ratio=0.6, num_decoder_layers=2, decoder_attention_block_size=16
    )
    with torch.no_grad():
        for parameter in loss.own_parameters():
            parameter.add_(torch.randn_like(parameter))
    loss.save_pretrained(tmp_path / "loss")
    assert sorted(p.name for p in (tmp_path / "loss").iterdir()) == ["retromae_loss.json", "retromae_loss.safetensors"]
    reloaded = RetroMAELoss.from_pretrained(model, tmp_path / "loss")
    assert reloaded.get_config_dict() == loss.get_config_dict()
    assert reloaded.config.decoder_attention_block_size == 16
    for a, b in zip(loss.own_parameters(), reloaded.own_parameters(), strict=True):
        assert torch.equal(a, b)
    batch = features(model, TEXTS[:4])
    inputs = loss.retromae_inputs(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert loss.compute_losses(batch, inputs) == reloaded.compute_losses(batch, inputs)
    # Around a model of another size the saved weights do not fit: a clear error, not a silent partial load.
    other = SentenceTransformer(
        modules=[Transformer(str(tiny_bert(tmp_path / "wide", trained_tokenizer("wordpiece"), hidden_size=48)))],
        device="cpu",
    )
    other.append(Pooling(48, "mean"))
    with pytest.raises(RetroMAELossError, match="does not fit this model"):
        RetroMAELoss.from_pretrained(other, tmp_path / "loss")
    with pytest.raises(RetroMAELossError, match="holds no saved loss"):
        RetroMAELoss.from_pretrained(model, tmp_path)
    with pytest.raises(RetroMAELossError, match="saved by RetroMAELoss, not MaskedLMLoss"):
        MaskedLMLoss.from_pretrained(model, tmp_path / "loss")


# ----------------------------------------------------------------------------------------------- clear errors


def test_empty_text_is_a_clear_error(tmp_path, bert_folder):
    model = sentence_model(bert_folder, "cls")
    loss = RetroMAELoss(model)
    with pytest.raises(RetroMAELossError, match=r"text 1 of this batch has no token besides the special tokens"):
        loss([features(model, ["a real sentence here", "   "])])
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
        train_dataset=Dataset.from_dict({"text": ["one text", "", "another text", "a third"]}),
        loss=loss,
    )
    with pytest.raises(RetroMAELossError, match="empty or only whitespace"):
        trainer.train()


def test_dataset_without_a_text_column_is_a_clear_error(tmp_path, bert_folder):
    model = sentence_model(bert_folder, "cls")
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=1, per_device_train_batch_size=2),
        train_dataset=Dataset.from_dict({"label": [0, 1, 0, 1]}),
        loss=RetroMAELoss(model),
    )
    with pytest.raises(RetroMAELossError, match="got no text column"):
        trainer.train()
    two_columns = [features(model, ["a", "b"]), features(model, ["c", "d"])]
    with pytest.raises(RetroMAELossError, match="trains on one text column, but the dataset has 2"):
        RetroMAELoss(model)(two_columns)
    model.tokenizer.padding_side = "left"
    with pytest.raises(RetroMAELossError, match="right-padded"):
        RetroMAELoss(model)([features(model, ["a longer text of several words", "short"])])


def test_tokenizer_without_a_mask_token_is_a_clear_error(tmp_path, trained_tokenizer):
    tokenizer = trained_tokenizer("wordpiece")
    folder = tiny_bert(tmp_path / "no-mask", tokenizer)
    model = sentence_model(folder, "cls")
    model.tokenizer.mask_token = None
    with pytest.raises(RetroMAELossError, match=r"has no mask token.*add_special_tokens"):
        RetroMAELoss(model)


def test_other_bad_models_and_settings_are_clear_errors(bert_folder):
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    model = sentence_model(bert_folder, "cls")
    with pytest.raises(RetroMAELossError, match="decoder_mask_ratio must be in"):
        RetroMAELoss(model, decoder_mask_ratio=1.0)
    with pytest.raises(RetroMAELossError, match="mask ratio must be in"):
        RetroMAELoss(model, encoder_mask_ratio=0.0)
    with pytest.raises(RetroMAELossError, match="num_decoder_layers"):
        RetroMAELoss(model, num_decoder_layers=0)
    with pytest.raises(RetroMAELossError, match="decoder_attention_block_size must be at least 1"):
        RetroMAELoss(model, decoder_attention_block_size=0)
    static = SentenceTransformer(modules=[StaticEmbedding(model.tokenizer, embedding_dim=HIDDEN)], device="cpu")
    with pytest.raises(RetroMAELossError, match="first module is a Transformer"):
        RetroMAELoss(static)


# ----------------------------------------------------------------------------------------------- other backbones

# model type -> (test tokenizer kind, its special-token layout, where the decoder's positions come from)
BACKBONES = {
    "roberta": ("bpe", None, "encoder"),
    "xlm-roberta": ("unigram", None, "encoder"),
    "modernbert": ("bpe", "bert", "learned"),  # rotary: the decoder has a position table of its own
    "mpnet": ("wordpiece", None, "encoder"),
}


def tiny_backbone(folder: Path, model_type: str, tokenizer) -> Path:
    from transformers import AutoConfig, AutoModel

    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "pad_token_id": tokenizer.pad_token_id,
        # RoBERTa-style tables number positions from padding_idx + 1: two more rows for the same 128 tokens.
        "max_position_embeddings": 130 if model_type != "modernbert" else 128,
    }
    if model_type == "modernbert":
        ids = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
        settings.update(ids, cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(model_type, **settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_type", list(BACKBONES))
def test_other_backbones_train(tmp_path, trained_tokenizer, model_type):
    """RoBERTa, XLM-R, ModernBERT and MPNet backbones with their own tokenizer families: masks keep the words
    their spelling marks (Ġ / ▁ starts, ## continuations), the decoder takes the encoder's positions where it has
    an absolute table, and a few optimizer steps on one batch lower the loss."""
    kind, layout, positions = BACKBONES[model_type]
    tokenizer = trained_tokenizer(kind, layout)
    model = sentence_model(tiny_backbone(tmp_path / model_type, model_type, tokenizer), "mean", normalize=True)
    assert model[0].auto_model.config.model_type == model_type
    loss = RetroMAELoss(model)
    assert loss.config.decoder_positions == positions
    batch = features(model, TEXTS[:8])

    inputs = loss.retromae_inputs(batch)
    words = loss.boundaries.word_ids(batch["input_ids"], batch["attention_mask"].bool())
    selected = inputs["encoder_labels"] != -100
    for row in range(words.shape[0]):
        for word in words[row].unique():
            if word >= 0:
                chosen = selected[row][words[row] == word]
                assert chosen.all() or not chosen.any(), f"word {int(word)} of row {row} split"
    assert words.max() >= 5  # texts of several words: the check above is not vacuous

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(list(model.parameters()) + loss.own_parameters(), lr=3e-3)
    totals = []
    for _ in range(8):
        terms = loss([batch])
        total = sum(terms.values())
        optimizer.zero_grad()
        total.backward()
        if not totals:
            first_layer = next(model[0].auto_model.parameters())
            assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
            assert all(p.grad is not None for p in loss.decoder.parameters())
        optimizer.step()
        totals.append(total.item())
    assert all(torch.isfinite(torch.tensor(totals))) and totals[-1] < totals[0] - 0.3, totals


# ----------------------------------------------------------------------------------------------- several processes


@pytest.mark.slow
def test_ddp_keeps_the_decoders_of_all_processes_identical(tmp_path, bert_folder):
    """Two processes under torchrun (gloo, CPU) train with SentenceTransformerTrainer and DDP, unchanged. Their
    decoders start different on purpose; after training they are identical, as the models are."""
    model_dir = tmp_path / "model"
    sentence_model(bert_folder, "mean", normalize=True).save_pretrained(str(model_dir))
    run_torchrun("distributed_sentence_transformers.py", str(model_dir), str(tmp_path), cwd=tmp_path, timeout=240)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["world_size"] == 2
    initial_differ = any(
        not torch.equal(a, b) for a, b in zip(ranks[0]["loss_initial"], ranks[1]["loss_initial"], strict=True)
    )
    assert initial_differ, "the decoders were meant to start different"
    for a, b in zip(ranks[0]["loss"], ranks[1]["loss"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for name, value in ranks[0]["model"].items():
        torch.testing.assert_close(value, ranks[1]["model"][name], rtol=0, atol=1e-6)
    # Training moved the decoder away from rank 0's initialisation (what every rank started from after the sync).
    assert any(not torch.allclose(a, b) for a, b in zip(ranks[0]["loss"], ranks[0]["loss_initial"], strict=True))
