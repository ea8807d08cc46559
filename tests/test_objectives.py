"""Stage-2 objectives: InfoNCE by hand, cross-device InfoNCE under torchrun, DupMAE's bag of words, stage_loss."""

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import REPO, run_torchrun
from torch.nn import functional as F

from retromae_hf import RetroMAECollator, RetroMAEForPreTraining
from retromae_hf.objectives import (
    DupMAEBagOfWordsLoss,
    InfoNCELoss,
    ObjectiveWeights,
    all_gather_with_grad,
    stage_loss,
)

QUERIES = ["what is dense retrieval?", "who wrote hamlet", "boiling point of water"]
PASSAGES = [
    # per query: positive, then one hard negative
    "Dense retrieval encodes queries and passages into vectors and matches them by similarity.",
    "Sparse retrieval such as BM25 counts exact term matches in an inverted index.",
    "Hamlet is a tragedy written by William Shakespeare around 1600.",
    "Macbeth is a tragedy about a Scottish general who becomes king.",
    "At sea level water boils at one hundred degrees Celsius.",
    "Water freezes at zero degrees Celsius under standard pressure.",
]


# ---------------------------------------------------------------------------- InfoNCE by hand
def hand_infonce(queries: list[list[float]], passages: list[list[float]], temperature: float, cosine: bool) -> float:
    """Plain-Python InfoNCE: mean over queries of -log softmax(scores / t)[positive]."""

    def normalise(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v] if cosine else v

    queries, passages = [normalise(q) for q in queries], [normalise(p) for p in passages]
    group = len(passages) // len(queries)
    total = 0.0
    for i, q in enumerate(queries):
        scores = [sum(a * b for a, b in zip(q, p, strict=True)) / temperature for p in passages]
        log_norm = math.log(sum(math.exp(s) for s in scores))
        total += log_norm - scores[i * group]
    return total / len(queries)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_infonce_matches_hand_computation(similarity, hard_negatives):
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    passages = torch.randn(3 * (1 + hard_negatives), 4, generator=generator, dtype=torch.float64)
    temperature = 0.7
    loss = InfoNCELoss(temperature=temperature, similarity=similarity)(queries, passages)
    expected = hand_infonce(queries.tolist(), passages.tolist(), temperature, similarity == "cosine")
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_infonce_tiny_case_exact_value():
    # One query, positive [1, 0] and negative [0, 1]: loss = log(1 + exp((0 - 1) / t)).
    loss = InfoNCELoss(temperature=0.5)(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)


def test_infonce_rejects_bad_shapes_and_arguments():
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="groups of"):
        loss(torch.randn(3, 4), torch.randn(7, 4))
    with pytest.raises(ValueError, match="differ in size"):
        loss(torch.randn(2, 4), torch.randn(4, 5))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.randn(0, 4), torch.randn(0, 4))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0.0)
    with pytest.raises(ValueError, match="similarity"):
        InfoNCELoss(similarity="l2")


def test_all_gather_is_identity_without_process_group():
    assert not dist.is_initialized()
    tensor = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(tensor) is tensor


# ---------------------------------------------------------------------------- torchrun, 2 ranks
def single_process(name: str) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of the scenario's loss on the whole global batch, in one process."""
    import distributed_contrastive as dc

    _counts, similarity, _mode = dc.SCENARIOS[name]
    model = dc.build_model()
    queries, passages = dc.DualEncoder(model)(**dc.global_batch())
    loss = InfoNCELoss(dc.TEMPERATURE, similarity)(queries, passages)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def max_grad_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n] - b[n]).abs().max().item() for n in a)


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("distributed")
    run_torchrun("distributed_contrastive.py", str(out_dir), cwd=REPO, timeout=120)
    return torch.load(Path(out_dir) / "results.pt", weights_only=True)


@pytest.mark.parametrize("name", ["gather_dot", "gather_cosine_unequal"])
def test_gathered_infonce_matches_single_process(torchrun_results, name):
    result = torchrun_results[name]
    counts = torch.tensor(result["counts"], dtype=torch.float64)
    # Each rank's loss is a mean over its own queries: weighting by the local sizes gives the global mean
    # (a plain mean of the per-rank losses when the sizes are equal).
    distributed_loss = (result["losses"] * counts).sum().item() / counts.sum().item()
    if counts[0] == counts[1]:
        assert distributed_loss == pytest.approx(result["losses"].mean().item(), abs=1e-12)
    loss, grads = single_process(name)
    assert distributed_loss == pytest.approx(loss, abs=1e-6)
    assert max_grad_difference(result["grads"], grads) < 1e-6


def test_without_gathering_loss_and_gradient_differ(torchrun_results):
    result = torchrun_results["local_dot"]
    loss, grads = single_process("local_dot")
    assert abs(result["losses"].mean().item() - loss) > 1e-2
    assert max_grad_difference(result["grads"], grads) > 1e-3


def test_detached_gather_shortcut_has_the_right_loss_but_a_wrong_gradient(torchrun_results):
    # Why all_gather_with_grad all-reduces in backward: with local queries, the shortcut loses the gradient that
    # the other rank's queries send to our passages.
    result = torchrun_results["naive_dot"]
    loss, grads = single_process("naive_dot")
    assert result["losses"].mean().item() == pytest.approx(loss, abs=1e-6)
    assert max_grad_difference(result["grads"], grads) > 1e-3


# ---------------------------------------------------------------------------- stage_loss and DupMAE on real text
@pytest.fixture
def model(tiny_config) -> RetroMAEForPreTraining:
    torch.manual_seed(0)
    return RetroMAEForPreTraining(tiny_config)


@pytest.fixture
def stage2_batch(wordpiece_tokenizer) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    queries = wordpiece_tokenizer(QUERIES, padding=True, return_tensors="pt")
    passages = wordpiece_tokenizer(PASSAGES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    retromae = RetroMAECollator(wordpiece_tokenizer, max_length=64)(PASSAGES[::2])  # the positives
    return {
        **retromae,
        "query_input_ids": queries["input_ids"],
        "query_attention_mask": queries["attention_mask"],
        "passage_input_ids": passages["input_ids"],
        "passage_attention_mask": passages["attention_mask"],
    }


def test_zero_contrastive_weight_is_exactly_the_retromae_loss(model, stage2_batch):
    retromae_only = {k: v for k, v in stage2_batch.items() if not k.startswith(("query", "passage"))}
    out = stage_loss(model, retromae_only, ObjectiveWeights(contrastive=0.0), infonce=None, bow=None)
    reference = model(**retromae_only)
    assert torch.equal(out["loss"], reference.loss)
    assert torch.equal(out["encoder_loss"], reference.encoder_loss)
    assert torch.equal(out["decoder_loss"], reference.decoder_loss)
    assert set(out) == {"loss", "retromae_loss", "encoder_loss", "decoder_loss"}


def test_zero_retromae_weight_is_exactly_infonce(model, stage2_batch):
    contrastive_only = {k: v for k, v in stage2_batch.items() if k.startswith(("query", "passage"))}
    infonce = InfoNCELoss(temperature=0.05, similarity="cosine")
    out = stage_loss(model, contrastive_only, ObjectiveWeights(retromae=0.0), infonce=infonce, bow=None)
    queries = model.encode(stage2_batch["query_input_ids"], stage2_batch["query_attention_mask"]).sentence_embedding
    passages = model.encode(
        stage2_batch["passage_input_ids"], stage2_batch["passage_attention_mask"]
    ).sentence_embedding
    assert torch.equal(out["loss"], infonce(queries, passages))
    assert set(out) == {"loss", "contrastive_loss"}


def test_weighted_sum_of_all_terms(model, stage2_batch, wordpiece_tokenizer):
    weights = ObjectiveWeights(retromae=0.5, contrastive=2.0, bag_of_words=0.3)
    out = stage_loss(
        model,
        stage2_batch,
        weights,
        InfoNCELoss(0.05, "cosine"),
        DupMAEBagOfWordsLoss(wordpiece_tokenizer.all_special_ids),
    )
    expected = 0.5 * out["retromae_loss"] + 0.3 * out["bag_of_words_loss"] + 2.0 * out["contrastive_loss"]
    torch.testing.assert_close(out["loss"], expected, atol=1e-6, rtol=0)


def test_missing_keys_and_modules_are_named(model, stage2_batch):
    retromae_only = {k: v for k, v in stage2_batch.items() if not k.startswith(("query", "passage"))}
    with pytest.raises(KeyError, match=r"contrastive.*query_input_ids.*passage_attention_mask"):
        stage_loss(model, retromae_only, ObjectiveWeights(), InfoNCELoss(), None)
    contrastive_only = {k: v for k, v in stage2_batch.items() if k.startswith(("query", "passage"))}
    with pytest.raises(KeyError, match=r"RetroMAE.*encoder_input_ids"):
        stage_loss(model, contrastive_only, ObjectiveWeights(), InfoNCELoss(), None)
    with pytest.raises(ValueError, match="InfoNCELoss"):
        stage_loss(model, stage2_batch, ObjectiveWeights(), None, None)
    with pytest.raises(ValueError, match="DupMAEBagOfWordsLoss"):
        stage_loss(model, stage2_batch, ObjectiveWeights(bag_of_words=1.0), InfoNCELoss(), None)
    with pytest.raises(ValueError, match="nothing to train"):
        ObjectiveWeights(retromae=0.0, contrastive=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        ObjectiveWeights(contrastive=-1.0)


def test_joint_loss_backpropagates_into_encoder_and_decoder(model, stage2_batch, wordpiece_tokenizer):
    bow = DupMAEBagOfWordsLoss(wordpiece_tokenizer.all_special_ids)
    out = stage_loss(model, stage2_batch, ObjectiveWeights(bag_of_words=0.1), InfoNCELoss(0.05, "cosine"), bow)
    assert {"retromae_loss", "contrastive_loss", "bag_of_words_loss"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    encoder_grad = model.lm.bert.encoder.layer[0].attention.self.query.weight.grad
    decoder_grad = model.decoder.layers[0].attention.self.query.weight.grad
    assert encoder_grad is not None and encoder_grad.abs().sum() > 0
    assert decoder_grad is not None and decoder_grad.abs().sum() > 0


# ---------------------------------------------------------------------------- DupMAE bag of words
def test_bag_of_words_matches_direct_formula(model, stage2_batch, wordpiece_tokenizer):
    bow = DupMAEBagOfWordsLoss(wordpiece_tokenizer.all_special_ids, chunk_size=5)  # several chunks, padded tail
    ids, mask = stage2_batch["decoder_input_ids"], stage2_batch["encoder_attention_mask"]
    hidden = model.encode(stage2_batch["encoder_input_ids"], mask).last_hidden_state
    loss = bow(model, hidden, ids, mask)

    # Unchunked reference, sentence by sentence: the official weights 1/n on each distinct ordinary token.
    logits = model.mlm_logits(hidden).float()
    special = set(wordpiece_tokenizer.all_special_ids)
    per_sentence = []
    for b in range(ids.shape[0]):
        positions = [i for i in range(1, ids.shape[1]) if mask[b, i] and int(ids[b, i]) not in special]
        log_p = F.log_softmax(logits[b, positions].amax(dim=0), dim=-1)
        tokens = {int(ids[b, i]) for i in positions}
        per_sentence.append(-sum(log_p[t] for t in tokens) / len(positions))
    torch.testing.assert_close(loss, torch.stack(per_sentence).mean(), atol=1e-5, rtol=0)


def test_bag_of_words_is_positive_finite_and_decreases_under_sgd(model, stage2_batch, wordpiece_tokenizer):
    bow = DupMAEBagOfWordsLoss(wordpiece_tokenizer.all_special_ids)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ids, mask = stage2_batch["decoder_input_ids"], stage2_batch["encoder_attention_mask"]
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        hidden = model.encode(stage2_batch["encoder_input_ids"], mask).last_hidden_state
        loss = bow(model, hidden, ids, mask)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    assert losses[0] > 0 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1, losses


def test_bag_of_words_without_ordinary_tokens_is_zero(model, wordpiece_tokenizer):
    bow = DupMAEBagOfWordsLoss(wordpiece_tokenizer.all_special_ids)
    ids = torch.tensor([[wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id, 0]])
    mask = torch.tensor([[1, 1, 0]])
    hidden = model.encode(ids, mask).last_hidden_state
    loss = bow(model, hidden, ids, mask)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph, so a step with such a batch does not crash
