"""Shared fixtures. Tests run offline; material from `../shared` is optional and skipped with a reason."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETROMAE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the test with the reason when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data beside the checkout), which is missing")
    return path


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The real bert-base-uncased WordPiece tokenizer from ../shared/models."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_path("models", "all-MiniLM-L6-v2")))


@pytest.fixture
def tiny_config():
    from retromae_hf import RetroMAEConfig

    return RetroMAEConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


@pytest.fixture(scope="session")
def trained_tokenizer(tmp_path_factory):
    """`trained_tokenizer(kind, layout=None)`: a tiny tokenizer trained from the project's text, once per session.

    Kinds and layouts as in `tests/tokenizers_for_tests.py` ("wordpiece", "bpe", "unigram"; "bert" or "roberta").
    Each is also saved in a folder, `tokenizer.name_or_path`, for code that loads tokenizers by path.
    """
    from tokenizers_for_tests import train_tokenizer

    cache = {}

    def get(kind: str, layout: str | None = None):
        key = (kind, layout)
        if key not in cache:
            directory = tmp_path_factory.mktemp(f"tokenizer-{kind}-{layout or 'default'}")
            tokenizer = train_tokenizer(kind, directory, layout=layout)
            tokenizer.name_or_path = str(directory)
            cache[key] = tokenizer
        return cache[key]

    return get
