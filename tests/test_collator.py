"""Masking collator: statistical and structural properties of the six forward tensors."""

import pytest
import torch
from conftest import project_lines, reference_fixture

from retromae_hf import RetroMAECollator
from retromae_hf.collator import FORWARD_KEYS, sample_whole_word_masks

TEXTS = [
    "Dense retrieval encodes queries and passages into vectors and compares them with an inner product.",
    "Unbelievably, the lighthouse keeper's granddaughter reorganised the encyclopaedias alphabetically.",
    "A short one.",
    "The masked auto-encoder reconstructs the sentence from its sentence embedding and a heavily masked copy of it.",
]



def dense_collator(*args, **kwargs) -> RetroMAECollator:
    """The official layout (`decoder_mask="dense"`): the `[B, L, L]` mask these tests inspect row by row."""
    return RetroMAECollator(*args, **{"decoder_mask": "dense", **kwargs})

def corpus_lines(count=64):
    return project_lines(count)


def words_of(tokenizer, batch_texts, max_length):
    encoded = tokenizer(batch_texts, truncation=True, max_length=max_length)
    return [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(batch_texts))]


def padded_word_ids(word_rows, seq_len):
    out = torch.full((len(word_rows), seq_len), -1)
    for i, row in enumerate(word_rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def assert_decoder_mask_structure(mask, word_ids, lengths):
    """Properties every decoder mask must have, official or ours."""
    batch, _seq_len, _ = mask.shape
    mask = mask.bool()
    for b in range(batch):
        n = int(lengths[b])
        assert not mask[b, n:].any() and not mask[b, :, n:].any(), "padding is attended"
        assert not mask[b, :n, :n].diagonal().any(), "a position sees itself"
        for i in range(1, n):
            assert mask[b, i, 0], "[CLS] hidden from another row"
        words = word_ids[b, :n]
        for i in range(n):
            row = mask[b, i, :n].clone()
            row[i] = not row[i]  # undo the forced self-mask, then whole words must be all-visible or all-hidden
            for w in words[words >= 0].unique():
                tokens = row[words == w]
                if words[i] == w:
                    tokens = row[(words == w) & (torch.arange(n) != i)]
                assert tokens.all() or not tokens.any(), f"word {int(w)} split in row {i}"


def test_the_default_decoder_mask_is_compact(wordpiece_tokenizer):
    """Built by hand, the collator gives what `train` uses: O(P x L) pool and picks, no `[B, L, L]` mask."""
    from retromae_hf.collator import COMPACT_DECODER_MASK_KEYS

    batch = RetroMAECollator(wordpiece_tokenizer, max_length=32)(TEXTS)
    assert "decoder_attention_mask" not in batch
    assert set(batch) == (set(FORWARD_KEYS) - {"decoder_attention_mask"}) | set(COMPACT_DECODER_MASK_KEYS)


def test_outputs_exactly_the_forward_keys(wordpiece_tokenizer):
    batch = dense_collator(wordpiece_tokenizer, max_length=32)(TEXTS)
    assert tuple(batch) == FORWARD_KEYS
    bsz, seq_len = batch["encoder_input_ids"].shape
    assert bsz == len(TEXTS) and seq_len <= 32
    assert batch["decoder_attention_mask"].shape == (bsz, seq_len, seq_len)
    assert torch.equal(batch["decoder_input_ids"].ne(0), batch["encoder_attention_mask"].bool())


def test_accepts_texts_mappings_and_tokenized_examples_alike(wordpiece_tokenizer):
    def collator():
        return dense_collator(wordpiece_tokenizer, max_length=40, generator=torch.Generator().manual_seed(0))

    from_texts = collator()(TEXTS)
    from_dicts = collator()([{"text": t} for t in TEXTS])
    encoded = wordpiece_tokenizer(TEXTS, truncation=True, max_length=40)
    from_ids = collator()([{"input_ids": ids} for ids in encoded["input_ids"]])  # words recovered from "##"
    for key in FORWARD_KEYS:
        assert torch.equal(from_texts[key], from_dicts[key]), key
        assert torch.equal(from_texts[key], from_ids[key]), key


def test_seeded_masks_depend_only_on_seed_epoch_and_content(wordpiece_tokenizer):
    collator = dense_collator(wordpiece_tokenizer, max_length=40, seed=5)
    first = collator(TEXTS)
    collator(TEXTS[:2])  # other calls in between do not shift anything
    again = dense_collator(wordpiece_tokenizer, max_length=40, seed=5)(TEXTS)
    assert all(torch.equal(first[k], again[k]) for k in FORWARD_KEYS)
    collator.set_epoch(1)
    next_epoch = collator(TEXTS)
    assert not torch.equal(first["decoder_attention_mask"], next_epoch["decoder_attention_mask"])
    other_seed = dense_collator(wordpiece_tokenizer, max_length=40, seed=6)(TEXTS)
    assert not torch.equal(first["decoder_attention_mask"], other_seed["decoder_attention_mask"])


def test_encoder_mask_ratio_replacement_and_special_tokens(wordpiece_tokenizer):
    lines = corpus_lines(64)
    collator = dense_collator(wordpiece_tokenizer, encoder_mask_ratio=0.3, max_length=128)
    selected = total = masked = unchanged = 0
    for _ in range(10):
        batch = collator(lines)
        labels = batch["encoder_labels"]
        chosen = labels != -100
        lengths = batch["encoder_attention_mask"].sum(1)
        originals = batch["decoder_input_ids"]
        assert not chosen[:, 0].any(), "[CLS] selected"
        assert not chosen[torch.arange(len(lines)), lengths - 1].any(), "[SEP] selected"
        assert not (chosen & ~batch["encoder_attention_mask"].bool()).any(), "padding selected"
        assert torch.equal(labels[chosen], originals[chosen])
        selected += chosen.sum().item()
        total += lengths.sum().item()
        inputs = batch["encoder_input_ids"][chosen]
        masked += (inputs == wordpiece_tokenizer.mask_token_id).sum().item()
        unchanged += (inputs == originals[chosen]).sum().item()
        assert torch.equal(batch["encoder_input_ids"][~chosen], originals[~chosen])
    assert selected / total == pytest.approx(0.3, abs=0.015)
    assert masked / selected == pytest.approx(0.8, abs=0.02)
    assert unchanged / selected == pytest.approx(0.1, abs=0.02)


def test_encoder_masks_whole_words(wordpiece_tokenizer):
    lines = corpus_lines(32)
    collator = dense_collator(wordpiece_tokenizer, max_length=96)
    word_rows = words_of(wordpiece_tokenizer, lines, 96)
    multi_piece_words_seen = 0
    for _ in range(5):
        batch = collator(lines)
        chosen = batch["encoder_labels"] != -100
        for b, row in enumerate(word_rows):
            words = torch.tensor(row)
            for w in words[words >= 0].unique():
                tokens = chosen[b, : len(row)][words == w]
                multi_piece_words_seen += int(len(tokens) > 1 and tokens.all())
                assert tokens.all() or not tokens.any()
    assert multi_piece_words_seen > 0  # the property was exercised on words of several pieces


def test_decoder_mask_rules_and_ratio(wordpiece_tokenizer):
    lines = corpus_lines(24)
    collator = dense_collator(wordpiece_tokenizer, decoder_mask_ratio=0.5, max_length=64)
    batch = collator(lines)
    lengths = batch["encoder_attention_mask"].sum(1)
    word_ids = padded_word_ids(words_of(wordpiece_tokenizer, lines, 64), lengths.max())
    assert_decoder_mask_structure(batch["decoder_attention_mask"], word_ids, lengths)
    hidden = visible = 0
    for _ in range(10):
        mask = collator(lines)["decoder_attention_mask"].bool()
        for b, n in enumerate(lengths.tolist()):
            body = mask[b, :n, :n]
            hidden += (~body).sum().item() - n  # minus the forced self-mask
            visible += body.sum().item()
    total_tokens = sum(n * n for n in lengths.tolist()) * 10
    special = sum(2 * n for n in lengths.tolist()) * 10  # [CLS] and [SEP] are never in the pool
    assert hidden / (total_tokens - special) == pytest.approx(0.5 * (total_tokens / (total_tokens - special)), abs=0.03)


def test_property_checker_accepts_the_official_collators_masks():
    """The structural checks hold on masks made by the official collator (the parity fixture)."""
    from safetensors.torch import load_file

    inputs = load_file(str(reference_fixture("staoxiao") / "inputs.safetensors"))
    ids, lengths = inputs["decoder_input_ids"], inputs["encoder_attention_mask"].sum(1)
    word_ids = torch.full_like(ids, -1)
    for b, n in enumerate(lengths.tolist()):
        current = -1
        for i in range(1, n - 1):
            current += int(ids[b, i] < 768)  # ids >= 768 are "##" continuations in the fixture's vocabulary
            word_ids[b, i] = current
    assert_decoder_mask_structure(inputs["decoder_attention_mask"], word_ids, lengths)


def test_decoder_labels_cover_every_real_token_but_cls_and_final_sep(wordpiece_tokenizer):
    batch = dense_collator(wordpiece_tokenizer, max_length=32)(TEXTS)
    lengths = batch["encoder_attention_mask"].sum(1)
    for b, n in enumerate(lengths.tolist()):
        labels = batch["decoder_labels"][b]
        assert labels[0] == -100 and labels[n - 1] == -100 and (labels[n:] == -100).all()
        assert torch.equal(labels[1 : n - 1], batch["decoder_input_ids"][b, 1 : n - 1])


def test_greedy_whole_word_rule_matches_the_official_walk():
    # One 5-piece word and two 1-piece words, budget 4: the 5-piece word never fits and is skipped, the two
    # short words are always taken (the official loop keeps trying after a word that overshoots).
    word_ids = torch.tensor([[-1, 0, 0, 0, 0, 0, 1, 2, -1]])
    masks = sample_whole_word_masks(word_ids, torch.tensor([4]), 500)
    assert (masks.sum(-1) == 2).all()
    # Words of 1, 2 and 3 pieces with budget 3: the walk takes {3}, {1,2}, or {2,1} (order-dependent).
    word_ids = torch.tensor([[0, 1, 1, 2, 2, 2]])
    masks = sample_whole_word_masks(word_ids, torch.tensor([3]), 3000)
    sizes = masks.sum(-1).flatten()
    assert set(sizes.tolist()) == {3}
    three_piece_first = masks[0, :, 3].float().mean().item()
    # The 3-piece word is taken only when it comes first in the random order: probability 1/3.
    assert three_piece_first == pytest.approx(1 / 3, abs=0.04)


def test_bpe_tokenizer_whole_words():
    """Byte-level BPE (RoBERTa-style) words are found from the fast tokenizer, and from "Ġ" spelling."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    backend.train_from_iterator(TEXTS * 5, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    collator = dense_collator(tokenizer, max_length=64)
    word_rows = words_of(tokenizer, TEXTS, 64)
    encoded = tokenizer(TEXTS, truncation=True, max_length=64)
    for i, ids in enumerate(encoded["input_ids"]):
        # Without word_ids, words are space-delimited ("Ġ" starts one): never finer than the tokenizer's words.
        spelled = collator._words_from_spelling(ids)
        assert [w < 0 for w in spelled] == [w < 0 for w in word_rows[i]]
        pairs = {(a, b) for a, b in zip(word_rows[i], spelled, strict=True) if a >= 0}
        assert len({a for a, _ in pairs}) == len(pairs)  # each tokenizer word lies inside one spelled word
    assert any(row.count(w) > 1 for row in word_rows for w in set(row) if w >= 0)  # some words have 2+ pieces
    for _ in range(5):
        batch = collator(TEXTS)
        chosen = batch["encoder_labels"] != -100
        for b, row in enumerate(word_rows):
            words = torch.tensor(row)
            for w in words[words >= 0].unique():
                tokens = chosen[b, : len(row)][words == w]
                assert tokens.all() or not tokens.any()
        lengths = batch["encoder_attention_mask"].sum(1)
        assert_decoder_mask_structure(
            batch["decoder_attention_mask"], padded_word_ids(word_rows, lengths.max()), lengths
        )


def test_over_long_inputs_are_truncated_keeping_the_final_separator(wordpiece_tokenizer):
    collator = dense_collator(wordpiece_tokenizer, max_length=16)
    long_ids = wordpiece_tokenizer(" ".join(["retrieval"] * 40))["input_ids"]
    batch = collator([{"input_ids": long_ids}, " ".join(["embedding"] * 40)])
    assert batch["encoder_input_ids"].shape[1] == 16
    assert (batch["decoder_input_ids"][:, -1] == wordpiece_tokenizer.sep_token_id).all()


def test_bad_input_fails_clearly(wordpiece_tokenizer):
    collator = dense_collator(wordpiece_tokenizer)
    with pytest.raises(ValueError, match="empty batch"):
        collator([])
    with pytest.raises(ValueError, match="example 1 has an empty"):
        collator(["fine", "   "])
    with pytest.raises(ValueError, match="example 0 must be"):
        collator([{"sentence": "wrong key"}])
    with pytest.raises(ValueError, match="word_ids has 2 entries"):
        collator([{"input_ids": [101, 2000, 102], "word_ids": [-1, 0]}])
    with pytest.raises(ValueError, match="encoder_mask_ratio"):
        dense_collator(wordpiece_tokenizer, encoder_mask_ratio=1.5)


def test_generator_makes_masks_reproducible(wordpiece_tokenizer):
    first = dense_collator(wordpiece_tokenizer, generator=torch.Generator().manual_seed(7))(TEXTS)
    second = dense_collator(wordpiece_tokenizer, generator=torch.Generator().manual_seed(7))(TEXTS)
    third = dense_collator(wordpiece_tokenizer, generator=torch.Generator().manual_seed(8))(TEXTS)
    assert all(torch.equal(first[k], second[k]) for k in FORWARD_KEYS)
    assert not torch.equal(first["decoder_attention_mask"], third["decoder_attention_mask"])


def test_batch_trains_the_model(wordpiece_tokenizer, tiny_config):
    from retromae_hf import RetroMAEForPreTraining

    model = RetroMAEForPreTraining(tiny_config)
    batch = dense_collator(wordpiece_tokenizer, max_length=tiny_config.max_position_embeddings)(TEXTS)
    output = model(**batch)
    assert torch.isfinite(output.loss) and output.encoder_loss > 0 and output.decoder_loss > 0
    output.loss.backward()


def test_contrastive_collator_groups_passages_per_query(wordpiece_tokenizer):
    from retromae_hf.collator import ContrastiveCollator

    examples = [
        {"query": "what is retromae", "positive": "RetroMAE is a pre-training method.", "negatives": ["a", "b", "c"]},
        {"query": "capital of france", "positive": "Paris is the capital of France.", "negatives": ["lyon", "nice"]},
    ]
    collator = ContrastiveCollator(
        wordpiece_tokenizer, num_negatives=2, retromae=dense_collator(wordpiece_tokenizer, max_length=32)
    )
    batch = collator(examples)
    assert set(FORWARD_KEYS) <= set(batch)
    assert batch["query_input_ids"].shape[0] == 2 and batch["passage_input_ids"].shape[0] == 6
    decoded = wordpiece_tokenizer.batch_decode(batch["passage_input_ids"], skip_special_tokens=True)
    assert decoded[0] == "retromae is a pre - training method." and decoded[3] == "paris is the capital of france."
    assert set(decoded[1:3]) <= {"a", "b", "c"} and len(set(decoded[1:3])) == 2  # without replacement
    assert sorted(decoded[4:6]) == ["lyon", "nice"]
    with pytest.raises(ValueError, match=r"example 1 has 1 hard negative\(s\) but num_negatives=2; each would be repeated"):
        collator([examples[0], {**examples[1], "negatives": ["lyon"]}])  # fewer than asked: never repeated
    # the RetroMAE keys are computed on the positives
    assert wordpiece_tokenizer.decode(batch["decoder_input_ids"][1], skip_special_tokens=True) == decoded[3]
    in_batch_only = ContrastiveCollator(wordpiece_tokenizer, num_negatives=0)(examples)
    assert in_batch_only["passage_input_ids"].shape[0] == 2 and "encoder_input_ids" not in in_batch_only
    with pytest.raises(ValueError, match="no hard negatives"):
        ContrastiveCollator(wordpiece_tokenizer, num_negatives=1)([{"query": "q", "positive": "p", "negatives": []}])
    with pytest.raises(ValueError, match="lacks a non-empty query"):
        ContrastiveCollator(wordpiece_tokenizer, num_negatives=0)([{"query": "", "positive": "p"}])


def test_plain_decoding_inputs(wordpiece_tokenizer, tiny_config):
    from retromae_hf import RetroMAEForPreTraining

    lines = corpus_lines(16)
    batch = dense_collator(wordpiece_tokenizer, max_length=64, decoding="plain", seed=0)(lines)
    real = batch["encoder_attention_mask"].bool()
    masked = batch["decoder_input_ids"] == wordpiece_tokenizer.mask_token_id
    labelled = batch["decoder_labels"] != -100
    assert torch.equal(masked, labelled)  # labels exactly where the decoder input is masked
    assert masked.sum() / real.sum() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(batch["decoder_attention_mask"].bool(), real[:, :, None] & real[:, None, :])
    tiny_config.decoding = "plain"
    output = RetroMAEForPreTraining(tiny_config)(**batch)
    assert torch.isfinite(output.loss) and output.decoder_loss > 0
    output.loss.backward()


@pytest.mark.parametrize(("kind", "layout"), [("wordpiece", None), ("bpe", None), ("unigram", None), ("bpe", "bert")])
def test_spelling_word_boundaries_on_a_padded_batch(trained_tokenizer, kind, layout):
    """The per-vocabulary table numbers the words of a whole padded batch at once, exactly as the collator's
    per-example rule does, and never splits a word the fast tokenizer's word_ids() keeps together."""
    from retromae_hf.collator import SpellingWordBoundaries

    tokenizer = trained_tokenizer(kind, layout)
    boundaries = SpellingWordBoundaries(tokenizer)
    assert boundaries.is_wordpiece == (kind == "wordpiece")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    words = boundaries.word_ids(batch["input_ids"], batch["attention_mask"].bool())
    collator = dense_collator(tokenizer)
    for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"], strict=True)):
        n = int(mask.sum())
        assert words[row, :n].tolist() == collator._words_from_spelling(ids[:n].tolist())
        assert (words[row, n:] == -1).all(), "padding is in no word"
        tokenizer_words = [-1 if w is None else w for w in batch.word_ids(row)][:n]
        assert [w < 0 for w in tokenizer_words] == (words[row, :n] < 0).tolist(), "special tokens are in no word"
        pairs = {(a, int(b)) for a, b in zip(tokenizer_words, words[row, :n], strict=True) if a >= 0}
        assert len({a for a, _ in pairs}) == len(pairs), "a tokenizer word spread over two spelled words"
    assert words.max() > 5 and not batch["attention_mask"].all(), "several words, and padding, were exercised"


@pytest.mark.parametrize(
    ("kind", "layout", "first", "last"),
    [("bpe", "roberta", "<s>", "</s>"), ("unigram", "roberta", "<s>", "</s>"), ("bpe", "bert", "[CLS]", "[SEP]")],
    ids=["roberta-bpe", "xlmr-unigram", "modernbert-bpe"],
)
def test_whole_words_and_special_tokens_with_real_subword_tokenizers(trained_tokenizer, kind, layout, first, last):
    """Byte-level BPE ("Ġ", RoBERTa and ModernBERT) and Unigram ("▁", XLM-R), each with its special-token layout."""
    tokenizer = trained_tokenizer(kind, layout)
    texts = TEXTS * 2
    encoded = tokenizer(texts, truncation=True, max_length=64)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert tokens[0] == first and tokens[-1] == last
    marker = "▁" if kind == "unigram" else "Ġ"
    assert any(token.startswith(marker) for token in tokens)
    word_rows = words_of(tokenizer, texts, 64)
    assert any(row.count(w) > 1 for row in word_rows for w in set(row) if w >= 0)  # words of several pieces exist
    collator = dense_collator(tokenizer, max_length=64, generator=torch.Generator().manual_seed(0))
    # Pre-tokenized examples without word_ids: words recovered from the spelling never split a tokenizer word.
    for i, ids in enumerate(encoded["input_ids"]):
        spelled = collator._words_from_spelling(ids)
        assert [w < 0 for w in spelled] == [w < 0 for w in word_rows[i]]
        pairs = {(a, b) for a, b in zip(word_rows[i], spelled, strict=True) if a >= 0}
        assert len({a for a, _ in pairs}) == len(pairs)
    multi_piece_selected = 0
    for _ in range(5):
        batch = collator(texts)
        lengths = batch["encoder_attention_mask"].sum(1)
        chosen = batch["encoder_labels"] != -100
        for b, row in enumerate(word_rows):
            n = int(lengths[b])
            assert not chosen[b, 0] and not chosen[b, n - 1]  # <s> / [CLS] and </s> / [SEP] are never masked
            assert batch["encoder_input_ids"][b, 0] == tokenizer.convert_tokens_to_ids(first)
            assert batch["encoder_input_ids"][b, n - 1] == tokenizer.convert_tokens_to_ids(last)
            labelled = batch["decoder_labels"][b, :n] != -100
            assert not labelled[0] and not labelled[n - 1] and labelled[1 : n - 1].all()
            words = torch.tensor(row)
            for w in words[words >= 0].unique():
                pieces = chosen[b, : len(row)][words == w]
                assert pieces.all() or not pieces.any()
                multi_piece_selected += int(len(pieces) > 1 and pieces.all())
        assert_decoder_mask_structure(
            batch["decoder_attention_mask"], padded_word_ids(word_rows, lengths.max()), lengths
        )
    assert multi_piece_selected > 0  # whole-word selection was exercised on words of several pieces


# --------------------------------------------------------------------------------------------------- compact masks
def test_compact_decoder_mask_expands_to_the_dense_mask_bit_for_bit(wordpiece_tokenizer):
    """Same seed and batch: the compact form, expanded (by the collator's helper and by the model's, block by
    block), is the dense `[B, L, L]` mask; every other key is identical."""
    from retromae_hf.collator import COMPACT_DECODER_MASK_KEYS, expand_decoder_mask
    from retromae_hf.modeling_retromae import expand_decoder_mask as model_expand

    lines = [*corpus_lines(12), "Short."]  # rows of different lengths: padding in the batch
    for pool_size in (256, 3):  # 3: rows pick among fewer members than their length
        dense = dense_collator(wordpiece_tokenizer, max_length=64, decoder_pool_size=pool_size, seed=3)(lines)
        compact = RetroMAECollator(
            wordpiece_tokenizer, max_length=64, decoder_pool_size=pool_size, seed=3, decoder_mask="compact"
        )(lines)
        assert "decoder_attention_mask" not in compact
        assert set(compact) == (set(FORWARD_KEYS) - {"decoder_attention_mask"}) | set(COMPACT_DECODER_MASK_KEYS)
        for key in set(FORWARD_KEYS) - {"decoder_attention_mask"}:
            assert torch.equal(dense[key], compact[key]), key
        pool, pick = compact["decoder_mask_pool"], compact["decoder_mask_pick"]
        real = compact["encoder_attention_mask"].bool()
        batch, seq_len = pick.shape
        assert pool.dtype == torch.bool and pick.dtype == torch.int16
        assert pool.shape == (batch, min(pool_size, seq_len), seq_len)
        assert (pick.long() < real.sum(1).clamp(max=pool_size)[:, None]).all()  # each row's own pool only
        assert torch.equal(expand_decoder_mask(pool, pick, real), dense["decoder_attention_mask"])
        blocks = [model_expand(pool, pick, real, start, start + 5) for start in range(0, seq_len, 5)]
        assert torch.equal(torch.cat(blocks, dim=1).to(torch.uint8), dense["decoder_attention_mask"])


def test_compact_pool_has_one_shape_per_length(wordpiece_tokenizer):
    """With `pad_to_multiple_of`, batches of one padded length may hold shorter sequences: the pool is padded to
    min(L, pool size) members (never picked), so every batch of that length has one shape and the expansion
    still equals the dense mask."""
    from retromae_hf.collator import expand_decoder_mask

    options = dict(max_length=64, pad_to_multiple_of=64, decoder_pool_size=256, seed=1)
    dense = dense_collator(wordpiece_tokenizer, **options)(TEXTS[2:3])
    compact = RetroMAECollator(wordpiece_tokenizer, decoder_mask="compact", **options)(TEXTS[2:3])
    real = compact["encoder_attention_mask"].bool()
    assert int(real.sum()) < 64 and compact["decoder_mask_pool"].shape == (1, 64, 64)
    assert torch.equal(expand_decoder_mask(compact["decoder_mask_pool"], compact["decoder_mask_pick"], real),
                       dense["decoder_attention_mask"])  # fmt: skip


def test_compact_decoder_mask_is_what_the_sentence_transformers_loss_draws(wordpiece_tokenizer):
    """`sample_decoder_attention` (the dense helper the loss calls) is the expansion of `sample_decoder_mask_pool`
    with the same generator state."""
    from retromae_hf.collator import expand_decoder_mask, sample_decoder_attention, sample_decoder_mask_pool

    lines = corpus_lines(6)
    word_ids = padded_word_ids(words_of(wordpiece_tokenizer, lines, 48), 48)
    lengths = (word_ids >= 0).sum(1) + 2
    real = torch.arange(48)[None] < lengths[:, None]
    dense = sample_decoder_attention(word_ids, lengths, real, 0.5, 256, torch.Generator().manual_seed(9))
    pool, pick = sample_decoder_mask_pool(word_ids, lengths, 0.5, 256, torch.Generator().manual_seed(9))
    assert torch.equal(expand_decoder_mask(pool, pick, real), dense)
    assert_decoder_mask_structure(dense, word_ids, lengths)


def test_compact_plain_decoding_sends_no_mask_and_the_same_loss(wordpiece_tokenizer, tiny_config):
    from retromae_hf import RetroMAEForPreTraining

    lines = [*corpus_lines(8), "Short."]
    dense = dense_collator(wordpiece_tokenizer, max_length=64, decoding="plain", seed=0)(lines)
    compact = RetroMAECollator(wordpiece_tokenizer, max_length=64, decoding="plain", seed=0, decoder_mask="compact")(
        lines
    )
    assert set(compact) == set(FORWARD_KEYS) - {"decoder_attention_mask"}
    tiny_config.decoding = "plain"
    torch.manual_seed(0)
    model = RetroMAEForPreTraining(tiny_config).eval()
    with torch.no_grad():
        expected, got = model(**dense), model(**compact)
    torch.testing.assert_close(got.decoder_loss, expected.decoder_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.encoder_loss, expected.encoder_loss, atol=0, rtol=0)


def test_decoder_mask_option_is_checked(wordpiece_tokenizer):
    with pytest.raises(ValueError, match="decoder_mask must be 'dense' or 'compact'"):
        RetroMAECollator(wordpiece_tokenizer, decoder_mask="packed")
