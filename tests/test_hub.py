"""Model cards, push and pull, against a loopback fake Hub (`tests/hub_server.py`).

The in-process tests point `huggingface_hub` at the fake server by patching the constants it computed from the
environment at import time (`conftest.py` sets `HF_HUB_OFFLINE=1` before that happens). The round-trip tests then
load the pushed repos in fresh subprocesses that get `HF_ENDPOINT`, a fresh `HF_HOME` and the fake token through
their environment, exactly as a user's process would.

Those subprocesses run `python -I` from a temporary working directory: isolated mode drops the current directory,
`PYTHONPATH` and the user site from `sys.path`. As the package could still be installed into the venv (a wheel or an
editable install), the child also puts an import blocker first on `sys.meta_path` that refuses `retromae_hf` and
asserts `import retromae_hf` fails before loading anything. What loads the model there is therefore only the Hub
repo: its config, weights and remote code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from conftest import REPO
from hub_server import FakeHub
from huggingface_hub import HfApi, ModelCard, constants, metadata_load
from huggingface_hub.errors import RepositoryNotFoundError

from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining, RetroMAEModel
from retromae_hf import hub as hub_module
from retromae_hf.export import export_sentence_transformer
from retromae_hf.hub import HubPushError, detect_kind, pull_from_hub, push_to_hub, render_model_card

TOKEN = "hf_FakeTokenForTheLoopbackHub0123456789"
INPUT_IDS = [[101, 2054, 2003, 11867, 2128, 18886, 13331, 2140, 102], [101, 7592, 2088, 102, 0, 0, 0, 0, 0]]
TEXTS = ["what is dense retrieval?", "RetroMAE pre-trains the [CLS] vector with a masked auto-encoder."]

SUMMARY = {
    "model": "tiny-retromae",
    "mteb_version": "2.0.0",
    "retromae_hf_version": "0.1.0",
    "created": "2025-01-01T00:00:00",
    "settings": {"batch_size": 8, "max_length": 64},
    "results": [
        {
            "task": "SciFact",
            "task_type": "Retrieval",
            "dataset": {"name": "SciFact", "path_or_hub_id": "mteb/scifact", "split": "test"},
            "main_metric": "ndcg_at_10",
            "main_score": 0.6123,
            "metrics": {"ndcg_at_10": 0.6123, "recall_at_100": 0.9012, "map_at_10": 0.5561},
        },
        {
            "task": "STSBenchmark",
            "task_type": "STS",
            "dataset": {"name": "STSBenchmark", "path_or_hub_id": "mteb/stsbenchmark-sts", "split": "test"},
            "main_metric": "cosine_spearman",
            "main_score": 0.8034,
            "metrics": {"cosine_spearman": 0.8034, "cosine_pearson": 0.7921},
        },
    ],
}
RECIPE = {
    "model_name_or_path": "bert-base-uncased",
    "data": {"datasets": ["wikimedia/wikipedia", "bookcorpus/bookcorpus"], "max_length": 64},
    "training": {"learning_rate": 1e-4, "per_device_train_batch_size": 32, "num_train_epochs": 2},
    "masking": {"encoder_mlm_probability": 0.3, "decoder_mlm_probability": 0.5},
}

# Prepended to every subprocess: retromae_hf must be impossible to import there.
BLOCK_RETROMAE_HF = r"""
import importlib.abc, json, sys

class _BlockRetroMAEHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "retromae_hf" or name.startswith("retromae_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _BlockRetroMAEHF())
try:
    import retromae_hf
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("retromae_hf is importable in the subprocess: the test would prove nothing")
"""

REMOTE_CODE_CHILD = (
    BLOCK_RETROMAE_HF
    + r"""
import torch
from transformers import AutoModel

model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    output = model(input_ids=ids, attention_mask=(ids != 0).long())
result = {
    "class": type(model).__name__,
    "module": type(model).__module__,
    "embedding": output.sentence_embedding.tolist(),
}
if len(sys.argv) > 3:  # texts: the checkpoint also loads in sentence-transformers, through the same remote code
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(sys.argv[1], trust_remote_code=True)
    result["st_embedding"] = st_model.encode(json.loads(sys.argv[3]), convert_to_numpy=True).tolist()
print(json.dumps(result))
"""
)

SENTENCE_TRANSFORMERS_CHILD = (
    BLOCK_RETROMAE_HF
    + r"""
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1])
embeddings = model.encode(json.loads(sys.argv[2]), convert_to_numpy=True)
print(json.dumps({"embedding": embeddings.tolist(), "similarity": model.similarity_fn_name}))
"""
)


# ----------------------------------------------------------------------------------------------- fixtures


@functools.cache
def _tokenizer_dir() -> Path:
    """A WordPiece tokenizer trained from the project's text (BERT layout), saved once per session."""
    from tokenizers_for_tests import train_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="retromae-hub-tokenizer-"))
    train_tokenizer("wordpiece", folder)
    return folder


def _tiny_model(seed: int, vocab_size: int = 30522) -> RetroMAEForPreTraining:
    torch.manual_seed(seed)
    config = RetroMAEConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return RetroMAEForPreTraining(config).eval()


def _embed(model: RetroMAEForPreTraining | RetroMAEModel, ids: list[list[int]] = INPUT_IDS) -> torch.Tensor:
    tensor = torch.tensor(ids)
    mask = (tensor != 0).long()
    with torch.no_grad():
        if isinstance(model, RetroMAEForPreTraining):
            return model(encoder_input_ids=tensor, encoder_attention_mask=mask).sentence_embedding
        return model(input_ids=tensor, attention_mask=mask).sentence_embedding


def _save_checkpoint(model: RetroMAEForPreTraining, folder: Path, with_tokenizer: bool = False) -> Path:
    model.save_pretrained(folder)
    if with_tokenizer:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(_tokenizer_dir())).save_pretrained(folder)
    return folder


def _tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under `folder` (symlinks are not expected there)."""
    return {
        path.relative_to(folder).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def hub_env(hub, tmp_path_factory):
    """Point this process's `huggingface_hub` at the fake Hub; return the environment for child processes."""
    home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", hub.url)
        patch.setenv("HF_TOKEN", TOKEN)
        patch.setenv("HF_HOME", str(home))
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        # What huggingface_hub derives from those variables when it is imported, which already happened.
        patch.setattr(constants, "ENDPOINT", hub.url)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        yield


def child_env(hub: FakeHub, home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "PYTHON"))
    }
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_child(code: str, args: list[str], hub: FakeHub, tmp_path: Path) -> dict:
    workdir = tmp_path / "child"
    workdir.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, *args],
        cwd=workdir,
        env=child_env(hub, tmp_path / "child_hf_home"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"child failed:\n{result.stdout}\n{result.stderr}"
    assert TOKEN not in result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def base_model() -> RetroMAEForPreTraining:
    return _tiny_model(seed=0)


@pytest.fixture(scope="module")
def checkpoint(base_model, tmp_path_factory) -> Path:
    """A stage-1 checkpoint folder as `RetroMAEForPreTraining.save_pretrained` writes it, with a tokenizer."""
    folder = tmp_path_factory.mktemp("retromae-base") / "checkpoint"
    return _save_checkpoint(base_model, folder, with_tokenizer=True)


@pytest.fixture(scope="module")
def st_export(checkpoint, tmp_path_factory) -> Path:
    """A stage-2 sentence-transformers export (BERT + CLS pooling, dot product)."""
    _tokenizer_dir()  # the export needs the checkpoint's tokenizer
    root = tmp_path_factory.mktemp("retromae-st")
    export_sentence_transformer(checkpoint, root / "export", similarity="dot")
    return root / "export"


@pytest.fixture(scope="module")
def pushed_base(hub_env, checkpoint) -> str:
    return push_to_hub(checkpoint, "org/retromae-base", recipe=RECIPE)


@pytest.fixture(scope="module")
def pushed_st(hub_env, st_export) -> str:
    return push_to_hub(st_export, "org/retromae-msmarco", summary=SUMMARY)


# ----------------------------------------------------------------------------------------------- kinds and cards


def test_detect_kind(checkpoint, tmp_path):
    assert (checkpoint / "modules.json").is_file()  # a checkpoint also describes itself to sentence-transformers
    assert detect_kind(checkpoint) == "base"
    (tmp_path / "modules.json").write_text("[]")
    assert detect_kind(tmp_path) == "sentence-transformers"


def test_detect_kind_of_an_export(st_export):
    assert json.loads((st_export / "config.json").read_text())["model_type"] == "bert"
    assert detect_kind(st_export) == "sentence-transformers"


def test_detect_kind_rejects_other_folders(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"model of type 'bert'.*expected config.json with model_type 'retromae'"):
        detect_kind(bert)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*neither a RetroMAE checkpoint nor a sentence-transformers"):
        detect_kind(empty)
    with pytest.raises(ValueError, match="is not a folder"):
        push_to_hub(tmp_path / "missing", "org/x")


def test_base_card_metadata_and_content(checkpoint, tmp_path):
    card = render_model_card(checkpoint, summary=SUMMARY, recipe=RECIPE, repo_id="org/retromae-base")
    readme = tmp_path / "README.md"
    card.save(readme)

    metadata = metadata_load(readme)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "feature-extraction"
    assert metadata["base_model"] == "bert-base-uncased"
    assert metadata["datasets"] == ["wikimedia/wikipedia", "bookcorpus/bookcorpus"]
    assert metadata["license"] == "apache-2.0"
    assert metadata["language"] == "en"
    assert {"retromae", "dense-retrieval", "sentence-embeddings", "mteb"} <= set(metadata["tags"])

    parsed = ModelCard.load(readme)
    scores = {(r.task_name, r.metric_type): r.metric_value for r in parsed.data.eval_results}
    for result in SUMMARY["results"]:
        assert scores[(result["task"], result["main_metric"])] == result["main_score"]
        for name, value in result["metrics"].items():
            assert scores[(result["task"], name)] == value
    first = parsed.data.eval_results[0]
    assert (first.task_type, first.dataset_type, first.dataset_split) == ("Retrieval", "mteb/scifact", "test")
    assert parsed.data.model_name == "retromae-base"

    text = parsed.text
    assert "| `training.learning_rate` | 0.0001 |" in text
    assert "| `masking.decoder_mlm_probability` | 0.5 |" in text
    assert "| SciFact | Retrieval | mteb/scifact | test | ndcg_at_10 | 0.6123 |" in text
    assert 'AutoModel.from_pretrained("org/retromae-base", trust_remote_code=True)' in text
    assert "outputs.sentence_embedding" in text
    assert 'SentenceTransformer("org/retromae-base", trust_remote_code=True)' in text
    assert "Xiao, Shitao and Liu, Zheng and Shao, Yingxia and Cao, Zhao" in text
    assert "2205.12035" in text and "2208.00231" in text
    assert "{%" not in text and "{{ " not in text


def test_base_card_states_the_real_maximum_length(trained_tokenizer, tmp_path):
    """An XLM-R checkpoint whose table was extended to 600 tokens (602 rows): the card says 600, from the
    checkpoint's metadata and, without it, from the table less the padding offset."""
    from encoders_for_tests import tiny_encoder_config

    from retromae_hf.convert import extend_positions

    tokenizer = trained_tokenizer("unigram")
    model = RetroMAEForPreTraining(RetroMAEConfig(encoder=tiny_encoder_config("xlm-roberta", tokenizer)))
    extend_positions(model, 600)
    model.save_pretrained(tmp_path / "ckpt")
    text = str(render_model_card(tmp_path / "ckpt", repo_id="org/long"))
    assert "| Maximum input length | 600 tokens" in text and "longer than 600 tokens" in text
    (tmp_path / "ckpt" / "sentence_bert_config.json").unlink()
    assert "| Maximum input length | 600 tokens" in str(render_model_card(tmp_path / "ckpt", repo_id="org/long"))


def test_sentence_transformers_card(st_export, tmp_path):
    card = render_model_card(st_export, summary=SUMMARY, repo_id="org/retromae-msmarco", base_model="org/retromae-base")
    assert card.data.library_name == "sentence-transformers"
    assert card.data.pipeline_tag == "sentence-similarity"
    assert card.data.base_model == "org/retromae-base"
    assert "sentence-transformers" in card.data.tags
    assert [r.metric_value for r in card.data.eval_results if r.metric_type in ("ndcg_at_10", "cosine_spearman")] == [
        0.6123,
        0.8034,
    ]
    text = card.text
    assert 'SentenceTransformer("org/retromae-msmarco")' in text
    assert "`dot` (dot product), from `config_sentence_transformers.json`" in text
    assert "last_hidden_state[:, 0]" in text and "normalize(" not in text

    # The similarity shown is read from config_sentence_transformers.json.
    cosine = Path(shutil.copytree(st_export, tmp_path / "cosine"))
    config_path = cosine / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["similarity_fn_name"] = "cosine"
    config_path.write_text(json.dumps(config))
    text = render_model_card(cosine, repo_id="org/cosine").text
    assert "`cosine` (cosine similarity)" in text
    assert "torch.nn.functional.normalize(embeddings, dim=-1)" in text


def test_card_without_recipe_or_summary(checkpoint):
    card = render_model_card(checkpoint, repo_id="org/bare")
    assert card.data.eval_results is None
    assert "model-index" not in card.content
    assert "No training recipe was stored" in card.text
    assert "No evaluation results were attached" in card.text
    assert "mteb" not in card.data.tags


def test_recipe_yaml_beside_the_checkpoint_is_used(checkpoint, tmp_path):
    folder = Path(shutil.copytree(checkpoint, tmp_path / "with-recipe"))
    (folder / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    text = render_model_card(folder).text
    assert "| `training.num_train_epochs` | 2 |" in text


def test_bad_summary_and_recipe_are_named(checkpoint, tmp_path):
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"results": [{"task": "SciFact", "main_metric": "ndcg_at_10"}]}))
    with pytest.raises(ValueError, match=rf"{bad}: results\[0\] lacks main_score"):
        render_model_card(checkpoint, summary=bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        render_model_card(checkpoint, recipe=tmp_path / "missing.yaml")
    broken = tmp_path / "recipe.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match=rf"{broken}: invalid YAML \(line"):
        render_model_card(checkpoint, recipe=broken)


def test_local_dataset_paths_and_nan_scores(checkpoint, tmp_path):
    local = tmp_path / "beir" / "tiny-scifact"
    local.mkdir(parents=True)
    summary = {
        "results": [
            {
                "task": "beir-tiny-scifact",
                "task_type": "Retrieval",
                "dataset": {"name": "tiny-scifact", "path_or_hub_id": str(local), "split": "test", "revision": "ab12"},
                "main_metric": "ndcg_at_10",
                "main_score": 0.5,
                "metrics": {"ndcg_at_10": 0.5, "mrr_at_10": float("nan")},
            }
        ]
    }
    card = render_model_card(checkpoint, summary=summary)
    assert str(tmp_path) not in str(card)  # no local path is published
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("tiny-scifact", "ndcg_at_10", 0.5)
    ]
    assert "| beir-tiny-scifact | mrr_at_10 | n/a |" in card.text


def test_secrets_in_recipes_are_redacted(checkpoint):
    recipe = {"training": {"hub_token": TOKEN, "learning_rate": 1e-4}, "report_to": {"wandb_api_key": "k-123"}}
    text = str(render_model_card(checkpoint, recipe=recipe))
    assert TOKEN not in text and "k-123" not in text
    assert "| `training.hub_token` | [redacted] |" in text


def test_templates_are_found():
    for kind in ("base", "sentence-transformers"):
        assert hub_module.template_path(kind).is_file()


# ----------------------------------------------------------------------------------------------- push and pull


def test_push_writes_card_and_leaves_folder_alone(hub, hub_env, checkpoint):
    before = _tree_digest(checkpoint)
    commit_url = push_to_hub(checkpoint, "org/untouched", summary=SUMMARY, recipe=RECIPE)
    assert _tree_digest(checkpoint) == before
    assert not (checkpoint / "README.md").exists()
    assert commit_url.startswith(f"{hub.url}/org/untouched/commit/")
    assert commit_url.oid == hub.head("org/untouched")

    readme = hub.file_bytes("org/untouched", "README.md").decode()
    assert readme.startswith("---\n") and "library_name: transformers" in readme
    assert json.loads(hub.file_bytes("org/untouched", "evaluation/summary.json")) == SUMMARY
    assert yaml.safe_load(hub.file_bytes("org/untouched", "recipe.yaml")) == RECIPE
    for name in before:
        assert hub.file_bytes("org/untouched", name) == (checkpoint / name).read_bytes()
    info = HfApi().model_info("org/untouched")
    assert info.card_data.library_name == "transformers"


def test_pull_base_in_process(hub_env, pushed_base, base_model, tmp_path):
    encoder = pull_from_hub("org/retromae-base", cache_dir=tmp_path / "cache")
    assert isinstance(encoder, RetroMAEModel)
    torch.testing.assert_close(_embed(encoder.eval()), _embed(base_model), rtol=0, atol=1e-6)
    pretraining = pull_from_hub("org/retromae-base", kind="pretraining", cache_dir=tmp_path / "cache")
    assert isinstance(pretraining, RetroMAEForPreTraining)
    torch.testing.assert_close(_embed(pretraining.eval()), _embed(base_model), rtol=0, atol=1e-6)


def test_pull_checkpoint_as_sentence_transformer(hub_env, pushed_base, checkpoint, tmp_path):
    from sentence_transformers import SentenceTransformer

    _tokenizer_dir()
    model = pull_from_hub("org/retromae-base", kind="sentence-transformers", cache_dir=tmp_path / "cache")
    assert isinstance(model, SentenceTransformer)
    assert type(model[0].auto_model).__module__ == "retromae_hf.modeling_retromae"  # no remote code ran
    tokenizer = model.tokenizer
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    expected = _embed(RetroMAEModel.from_pretrained(checkpoint).eval(), batch["input_ids"].tolist())
    torch.testing.assert_close(torch.from_numpy(model.encode(TEXTS)), expected, rtol=0, atol=1e-5)


def test_pull_sentence_transformers_in_process(hub_env, pushed_st, st_export, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = pull_from_hub("org/retromae-msmarco", cache_dir=tmp_path / "cache")
    assert isinstance(model, SentenceTransformer)
    expected = SentenceTransformer(str(st_export)).encode(TEXTS)
    torch.testing.assert_close(torch.from_numpy(model.encode(TEXTS)), torch.from_numpy(expected))
    with pytest.raises(ValueError, match="holds a sentence-transformers export"):
        pull_from_hub("org/retromae-msmarco", kind="base", cache_dir=tmp_path / "cache")


def test_remote_code_loads_without_the_package(hub, pushed_base, base_model, checkpoint, tmp_path):
    """(a) A fresh process without retromae_hf loads the checkpoint through the Hub's remote code."""
    args = ["org/retromae-base", json.dumps(INPUT_IDS)]
    with_tokenizer = (checkpoint / "tokenizer_config.json").is_file()
    if with_tokenizer:
        args.append(json.dumps(TEXTS))
    output = run_child(REMOTE_CODE_CHILD, args, hub, tmp_path)
    assert output["class"] == "RetroMAEModel"
    assert output["module"].startswith("transformers_modules.")
    torch.testing.assert_close(torch.tensor(output["embedding"]), _embed(base_model), rtol=0, atol=1e-5)
    if with_tokenizer:
        from retromae_hf.export import load_sentence_transformer

        expected = load_sentence_transformer(checkpoint, device="cpu").encode(TEXTS)
        torch.testing.assert_close(torch.tensor(output["st_embedding"]), torch.from_numpy(expected), rtol=0, atol=1e-5)


def test_sentence_transformers_loads_from_the_hub(hub, pushed_st, st_export, tmp_path):
    """(b) A fresh process loads the export by repo id with sentence-transformers alone."""
    from sentence_transformers import SentenceTransformer

    output = run_child(SENTENCE_TRANSFORMERS_CHILD, ["org/retromae-msmarco", json.dumps(TEXTS)], hub, tmp_path)
    expected = SentenceTransformer(str(st_export)).encode(TEXTS)
    assert output["similarity"] == "dot"
    torch.testing.assert_close(torch.tensor(output["embedding"]), torch.from_numpy(expected), rtol=0, atol=1e-5)


def test_revision_pinning(hub, hub_env, tmp_path):
    first_model, second_model = _tiny_model(seed=10), _tiny_model(seed=11)
    first = push_to_hub(_save_checkpoint(first_model, tmp_path / "v1"), "org/pinned", commit_message="v1")
    second = push_to_hub(_save_checkpoint(second_model, tmp_path / "v2"), "org/pinned", commit_message="v2")
    assert first.oid != second.oid and hub.head("org/pinned") == second.oid

    cache = tmp_path / "cache"
    pinned = pull_from_hub("org/pinned", revision=first.oid, cache_dir=cache)
    latest = pull_from_hub("org/pinned", cache_dir=cache)
    torch.testing.assert_close(_embed(pinned), _embed(first_model), rtol=0, atol=1e-6)
    torch.testing.assert_close(_embed(latest), _embed(second_model), rtol=0, atol=1e-6)
    assert not torch.allclose(_embed(pinned), _embed(latest))
    commits = [commit.title for commit in HfApi().list_repo_commits("org/pinned")]
    assert commits[:2] == ["v2", "v1"]


def test_push_to_a_new_branch(hub, hub_env, checkpoint, tmp_path):
    push_to_hub(checkpoint, "org/branched")
    main_head = hub.head("org/branched")
    other = _tiny_model(seed=21)
    commit = push_to_hub(_save_checkpoint(other, tmp_path / "dev"), "org/branched", revision="dev")
    assert hub.head("org/branched", "dev") == commit.oid
    assert hub.head("org/branched") == main_head
    pulled = pull_from_hub("org/branched", revision="dev", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(_embed(pulled), _embed(other), rtol=0, atol=1e-6)
    # Pushing to the branch again reuses it.
    assert push_to_hub(checkpoint, "org/branched", revision="dev").oid == hub.head("org/branched", "dev")


def test_create_pr(hub, hub_env, checkpoint, tmp_path):
    push_to_hub(checkpoint, "org/reviewed")
    main_head = hub.head("org/reviewed")
    other = _tiny_model(seed=31)
    commit = push_to_hub(_save_checkpoint(other, tmp_path / "pr"), "org/reviewed", create_pr=True)
    assert commit.pr_url == f"{hub.url}/org/reviewed/discussions/1"
    assert hub.head("org/reviewed") == main_head
    assert hub.head("org/reviewed", "refs/pr/1") == commit.oid
    pulled = pull_from_hub("org/reviewed", revision="refs/pr/1", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(_embed(pulled), _embed(other), rtol=0, atol=1e-6)


def test_conflicting_revision_options_fail_before_any_request(hub, hub_env, checkpoint):
    count = len(hub.requests)
    with pytest.raises(ValueError, match="cannot be combined with revision='dev'"):
        push_to_hub(checkpoint, "org/never", revision="dev", create_pr=True)
    with pytest.raises(ValueError, match="is a commit sha"):
        push_to_hub(checkpoint, "org/never", revision="a" * 40)
    assert len(hub.requests) == count


def test_private_repo_needs_the_token(hub, hub_env, checkpoint):
    push_to_hub(checkpoint, "org/private-model", private=True)
    assert hub.repos["org/private-model"].private
    assert HfApi().model_info("org/private-model").sha == hub.head("org/private-model")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("org/private-model")


def test_failed_upload_when_the_hub_is_down(hub_env, checkpoint):
    before = _tree_digest(checkpoint)
    with FakeHub(token=TOKEN) as down:
        down.stop()
        with pytest.raises(HubPushError) as caught:
            push_to_hub(checkpoint, "org/offline", revision="dev", endpoint=down.url)
    message = str(caught.value)
    assert "org/offline" in message and "revision 'dev'" in message and "during create_repo" in message
    assert f"retromae-hf push {checkpoint} org/offline --revision dev" in message
    assert caught.value.retry_command in message and caught.value.repo_id == "org/offline"
    assert f"Nothing in {checkpoint} was changed" in message
    assert _tree_digest(checkpoint) == before
    assert TOKEN not in message


@pytest.mark.parametrize(
    ("method", "route", "status", "step"),
    [("POST", r"/api/repos/create$", 500, "create_repo"), ("POST", r"/commit/", 403, "upload_folder")],
)
def test_failed_upload_on_server_error(hub, hub_env, checkpoint, method, route, status, step):
    before = _tree_digest(checkpoint)
    repo_id = f"org/failing-{step.replace('_', '-')}"
    hub.fail(method, route, status)
    with pytest.raises(HubPushError) as caught:
        push_to_hub(checkpoint, repo_id, summary=SUMMARY)
    hub.clear_failures()
    message = str(caught.value)
    assert caught.value.step == step and f"during {step}" in message
    assert repo_id in message and "revision 'main'" in message and str(status) in message
    assert f"retromae-hf push {checkpoint} {repo_id}" in message
    assert _tree_digest(checkpoint) == before
    # The retry the message suggests succeeds.
    assert push_to_hub(checkpoint, repo_id, summary=SUMMARY).oid == hub.head(repo_id)


def test_the_token_never_leaves_huggingface_hub(hub, hub_env, checkpoint, monkeypatch, caplog, capfd):
    staged: dict[str, bytes] = {}
    upload_folder = HfApi.upload_folder

    def spy(self, **kwargs):
        root = Path(kwargs["folder_path"])
        for path in root.rglob("*"):
            if path.is_file():
                staged[path.relative_to(root).as_posix()] = path.read_bytes()
        return upload_folder(self, **kwargs)

    monkeypatch.setattr(HfApi, "upload_folder", spy)
    for name in ("", "huggingface_hub", "retromae_hf", "hub_server", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    recipe = {**RECIPE, "hub": {"hub_token": TOKEN, "push": True}}

    commit = push_to_hub(checkpoint, "org/secret-safe", token=TOKEN, summary=SUMMARY, recipe=recipe)
    assert hub.head("org/secret-safe") == commit.oid  # the token was sent: the fake Hub accepted the writes
    with FakeHub(token=TOKEN) as down:
        down.stop()
        with pytest.raises(HubPushError) as caught:
            push_to_hub(checkpoint, "org/secret-safe", token=TOKEN, recipe=recipe, endpoint=down.url)

    assert {"README.md", "recipe.yaml", "evaluation/summary.json", "model.safetensors"} <= set(staged)
    for name, content in staged.items():
        assert TOKEN.encode() not in content, name
    assert TOKEN not in hub.file_bytes("org/secret-safe", "README.md").decode()
    assert TOKEN not in hub.file_bytes("org/secret-safe", "recipe.yaml").decode()
    assert TOKEN not in str(caught.value)
    assert TOKEN not in caplog.text
    assert caplog.records, "debug logging was expected to capture something"
    out, err = capfd.readouterr()
    assert TOKEN not in out and TOKEN not in err


def test_requests_used_only_known_routes(hub, pushed_base, pushed_st):
    assert hub.unhandled == []
    assert huggingface_hub.__version__


def test_command_line_push_and_pull(hub, checkpoint, tmp_path):
    env = child_env(hub, tmp_path / "cli_home")
    push = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "push", str(checkpoint), "org/retromae-cli", "--revision", "dev"],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr[-3000:]
    assert TOKEN not in push.stdout + push.stderr
    pull = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "pull", "org/retromae-cli", "--revision", "dev"],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pull.returncode == 0, pull.stderr[-3000:]
    assert "RetroMAEModel" in pull.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "retromae_hf", "push", str(tmp_path / "nowhere"), "org/x"],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode != 0 and "nowhere" in missing.stderr


def test_card_shows_transfer_rows_with_their_protocol(checkpoint):
    """A classification (transfer) result of the summary becomes a row of the card and of `model-index`, its split
    cell saying how it was scored (10-fold cross-validation or train -> test)."""
    transfer = {
        "task": "mr",
        "task_type": "Classification",
        "dataset": {
            "name": "mr",
            "path_or_hub_id": "/data/transfer/mr",
            "split": "all",
            "revision": "local-sha256-0",
            "protocol": "stratified 10-fold cross-validation on all.jsonl",
        },
        "main_metric": "accuracy",
        "main_score": 0.7512,
        "metrics": {"accuracy": 0.7512, "f1": 0.7498},
    }
    summary = {**SUMMARY, "results": [*SUMMARY["results"], transfer]}
    card = render_model_card(checkpoint, summary=summary, repo_id="org/retromae-base")
    text = str(card)
    assert (
        "| mr | Classification | mr | all (stratified 10-fold cross-validation on all.jsonl) | accuracy | 0.7512 |"
        in text
    )
    assert "| mr | f1 | 0.7498 |" in text
    results = card.data.eval_results
    assert any(
        r.task_type == "Classification" and r.metric_type == "accuracy" and r.metric_value == 0.7512 for r in results
    )
