"""Long documents: the `stage1-long` recipe, lengths that nothing cuts to 512, and activation checkpointing of the
wrapped encoder and the decoder (the long recipe turns it on)."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import project_lines
from transformers import AutoConfig

from retromae_hf import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining
from retromae_hf.recipe import RecipeError, build_recipe, read_recipe_file


def test_stage1_long_recipe_trains_modernbert_at_its_native_length():
    raw, _ = read_recipe_file("stage1-long")
    recipe = build_recipe(raw, source="stage1-long")
    assert recipe.model == "answerdotai/ModernBERT-base" and recipe.max_length == 8192
    assert (recipe.encoder_mask_ratio, recipe.decoder_mask_ratio) == (0.3, 0.5)  # the paper's
    assert recipe.model_config["decoder_positions"] == "learned"
    assert recipe.training["activation_checkpointing"] is True and recipe.training["bf16"] is True
    assert recipe.training["per_device_train_batch_size"] * recipe.max_length == 32 * 512  # the paper's tokens
    assert {"LEMBPasskeyRetrieval", "LEMBNeedleRetrieval"} <= set(recipe.evaluation)


def test_nothing_cuts_an_8k_encoder_to_512(trained_tokenizer):
    """ModernBERT-base's config (8,192 positions, built offline from transformers' defaults): the length checked
    before loading is 8,192, stage-1 and stage-2 lengths keep it, and the collator makes 8,192-token rows."""
    from retromae_hf.training import _model_limits, effective_lengths

    encoder = AutoConfig.for_model("modernbert")
    assert encoder.max_position_embeddings == 8192
    positions, _ = _model_limits(RetroMAEConfig(encoder=encoder, decoder_positions="learned"))
    assert positions == 8192
    stage1 = build_recipe({"stage": 1, "corpus": ["c.txt"], "max_length": 8192})
    assert effective_lengths(stage1, positions) == {"max_length": 8192}
    stage2 = build_recipe(
        {"stage": 2, "pairs": ["p.jsonl"], "max_length": 8192, "query_max_length": 64, "passage_max_length": 8192}
    )
    assert effective_lengths(stage2, positions) == {
        "max_length": 8192, "query_max_length": 64, "passage_max_length": 8192
    }  # fmt: skip
    too_long = build_recipe({"stage": 2, "pairs": ["p.jsonl"], "passage_max_length": 10000})
    with pytest.raises(RecipeError, match=r"passage_max_length 10000 .* longer than the model's 8192 positions"):
        effective_lengths(too_long, positions)  # a length asked for beyond the model is refused, not cut

    tokenizer = trained_tokenizer("bpe", "bert")
    assert tokenizer.model_max_length == 512  # the collator truncates at its own max_length, not the tokenizer's
    text = " ".join(project_lines())
    batch = RetroMAECollator(tokenizer, max_length=8192, seed=0)([{"text": text}])
    assert batch["encoder_input_ids"].shape[1] == 8192


@pytest.mark.parametrize(
    "architecture, kind, layout", [("modernbert", "bpe", "bert"), ("xlm-roberta", "unigram", None)]
)
def test_activation_checkpointing_recomputes_encoder_and_decoder_with_the_same_gradients(
    architecture, kind, layout, trained_tokenizer, monkeypatch
):
    import transformers.modeling_utils as modeling_utils
    from encoders_for_tests import tiny_encoder_config

    tokenizer = trained_tokenizer(kind, layout)
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config(architecture, tokenizer))).train()
    batch = RetroMAECollator(tokenizer, max_length=64, seed=0)([{"text": line} for line in project_lines(4)])
    model(**batch).loss.backward()
    expected = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    model.zero_grad()

    recomputed = []
    original = modeling_utils.checkpoint

    def counting_checkpoint(function, *args, **kwargs):
        # transformers checkpoints partial(Layer.forward, layer, **kwargs): the layer is the partial's first argument
        layer = function.args[0] if isinstance(function, functools.partial) and function.args else function
        recomputed.append(layer)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counting_checkpoint)
    model.activation_checkpointing_enable()  # what the Trainer calls for `activation_checkpointing: true`
    loss = model(**batch).loss
    loss.backward()
    layers = {type(module).__name__ for module in recomputed}
    assert "RetroMAELayer" in layers and len(recomputed) == model.config.encoder.num_hidden_layers + 1, layers
    for name, parameter in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(parameter.grad, expected[name], atol=1e-6, rtol=1e-5, msg=name)
