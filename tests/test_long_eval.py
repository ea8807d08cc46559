"""The synthetic long-document retrieval set (`retromae_hf.long_eval`, `retromae-hf make-long-eval`) and its scoring
through `retromae_hf.evaluation`, offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import SHARED, run_cli, snapshot

from retromae_hf.evaluation import _resolve_task, evaluate, load_beir_folder
from retromae_hf.long_eval import LongEvalError, make_long_eval

MINILM = SHARED / "models" / "all-MiniLM-L6-v2"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_documents_fill_their_length_and_hide_one_fact_each(wordpiece_tokenizer, tmp_path):
    lengths = [64, 300, 1000]
    out = make_long_eval(wordpiece_tokenizer, tmp_path / "long", lengths=lengths, documents=12, seed=3)
    manifest = json.loads((out / "long_eval.json").read_text())
    assert manifest["lengths"] == lengths and manifest["seed"] == 3 and manifest["documents"] == 12
    depths = []
    for length in lengths:
        folder = out / f"passkey-{length}"
        data = load_beir_folder(folder)  # what `evaluate` reads: a valid BEIR folder
        assert len(data.corpus_ids) == len(data.query_ids) == 12
        corpus, queries = read_jsonl(folder / "corpus.jsonl"), read_jsonl(folder / "queries.jsonl")
        for document, query in zip(corpus, queries, strict=True):
            tokens = len(wordpiece_tokenizer(document["text"])["input_ids"])
            assert tokens == document["tokens"] and length - 40 <= tokens <= length  # measured in the tokenizer's tokens
            person = re.fullmatch(r"What is the pass key of (.+)\?", query["text"]).group(1)
            facts = re.findall(r"The pass key of ([A-Z][\w ]+?) is (\d{5})\.", document["text"])
            assert [name for name, _ in facts] == [person]  # its own fact, once, and no other
            assert data.qrels[query["_id"]] == {document["_id"]: 1}
            assert all(person not in other["text"] for other in corpus if other is not document)
            depths.append(document["depth"])
        assert len({document["text"][:80] for document in corpus}) == 12  # each from its own stretch of text
    assert min(depths) < 0.2 and max(depths) > 0.8  # facts at every depth, not only at the start


def test_same_seed_same_bytes_and_lengths_draw_independently(wordpiece_tokenizer, tmp_path):
    first = make_long_eval(wordpiece_tokenizer, tmp_path / "a", lengths=[128, 256], documents=5, seed=7)
    again = make_long_eval(wordpiece_tokenizer, tmp_path / "b", lengths=[256], documents=5, seed=7)
    other = make_long_eval(wordpiece_tokenizer, tmp_path / "c", lengths=[256], documents=5, seed=8)
    assert snapshot(first / "passkey-256") == snapshot(again / "passkey-256")
    assert snapshot(first / "passkey-256") != snapshot(other / "passkey-256")


def test_a_users_text_file_and_mistakes(wordpiece_tokenizer, tmp_path):
    text = tmp_path / "book.txt"
    # One long paragraph without sentence ends: cut into 48-word pieces.
    text.write_text(" ".join(f"word{i % 97} river stone" for i in range(1500)), encoding="utf-8")
    out = make_long_eval(wordpiece_tokenizer, tmp_path / "book", lengths=[200], documents=4, text_file=text)
    assert json.loads((out / "long_eval.json").read_text())["text"] == str(text)
    assert all("river stone" in row["text"] for row in read_jsonl(out / "passkey-200" / "corpus.jsonl"))
    with pytest.raises(LongEvalError, match="too little to fill documents of 8192"):
        make_long_eval(wordpiece_tokenizer, tmp_path / "x", lengths=[8192], text_file=text)
    with pytest.raises(LongEvalError, match="between 2 and 2304"):
        make_long_eval(wordpiece_tokenizer, tmp_path / "x", documents=1)
    with pytest.raises(LongEvalError, match="a length twice"):
        make_long_eval(wordpiece_tokenizer, tmp_path / "x", lengths=[256, 256])
    assert not (tmp_path / "x").exists()


def test_evaluate_scores_every_length_of_a_set_offline(trained_tokenizer, tmp_path, capfd):
    """`make-long-eval` then `evaluate MODEL --tasks DIR`: one result per length, in natural order, on a tiny
    8,192-position ModernBERT export (nothing truncates at 512)."""
    from encoders_for_tests import tiny_encoder_config

    from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining
    from retromae_hf.export import export_sentence_transformer

    tokenizer = trained_tokenizer("bpe", "bert")
    torch.manual_seed(0)
    encoder = tiny_encoder_config("modernbert", tokenizer, max_position_embeddings=8192)
    model = RetroMAEForPreTraining(RetroMAEConfig(encoder=encoder))
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    export = export_sentence_transformer(tmp_path / "ckpt", tmp_path / "st")
    argv = ["make-long-eval", "--tokenizer", str(export), "--lengths", "1024", "128", "--documents", "6",
            "--output-dir", str(tmp_path / "long")]  # fmt: skip
    code, err = run_cli(argv, capfd)
    assert code == 0, err
    code, err = run_cli(argv, capfd)
    assert code == 2 and "already exists" in err  # a second run never replaces the first

    summary = evaluate(export, [tmp_path / "long"], output_dir=tmp_path / "scores", show_progress_bar=False)
    assert [result["task"] for result in summary["results"]] == ["passkey-128", "passkey-1024"]
    assert summary["settings"]["max_length"] == 8192
    for result in summary["results"]:
        assert 0.0 <= result["main_score"] <= 1.0 and result["dataset"]["split"] == "test"


@pytest.mark.shared
@pytest.mark.skipif(not MINILM.is_dir(), reason=f"needs the all-MiniLM-L6-v2 model under {SHARED}, which is missing")
def test_a_short_model_loses_the_facts_it_cannot_reach(tmp_path):
    """all-MiniLM-L6-v2 reads 256 tokens: it finds the pass key in 128-token documents far more often than in
    1,024-token ones, where three facts in four lie beyond what it reads."""
    long = make_long_eval(str(MINILM), tmp_path / "long", lengths=[128, 1024], documents=20)
    summary = evaluate(str(MINILM), [long], output_dir=tmp_path / "scores", show_progress_bar=False)
    short_score, long_score = (result["main_score"] for result in summary["results"])
    assert short_score > long_score + 0.15, summary["results"]


def test_longembed_task_names_resolve_to_mteb_tasks_with_every_length():
    """Online, `evaluate --tasks LEMBPasskeyRetrieval` scores each LongEmbed length (no `test` split there);
    `--split test_8192` one of them. Resolving needs no network (mteb's task registry)."""
    every = _resolve_task("LEMBPasskeyRetrieval", "test")
    assert every.task.metadata.name == "LEMBPasskeyRetrieval"
    assert "test_256" in every.splits and "test_8192" in every.splits and every.split == every.splits[0]
    one = _resolve_task("LEMBNeedleRetrieval", "test_8192")
    assert one.splits == ("test_8192",) and list(one.task.eval_splits) == ["test_8192"]
    assert list(every.task.eval_splits) == list(every.splits)  # what mteb evaluates, one summary entry each


def test_a_task_scored_on_several_splits_gives_one_summary_entry_each():
    from types import SimpleNamespace

    from retromae_hf.evaluation import _summary_entry

    resolved = _resolve_task("LEMBPasskeyRetrieval", "test")
    scores = {split: [{"main_score": i / 10, "ndcg_at_1": i / 10}] for i, split in enumerate(resolved.splits)}
    entries = [_summary_entry(resolved, SimpleNamespace(scores=scores), split) for split in resolved.splits]
    assert [entry["dataset"]["split"] for entry in entries] == list(resolved.splits)
    assert [entry["main_score"] for entry in entries] == [i / 10 for i in range(len(resolved.splits))]
    assert {entry["main_metric"] for entry in entries} == {"ndcg_at_1"}
