"""Shared fixtures. Tests run offline and need nothing beside the checkout.

Two tiers: the core suite runs from the checkout alone (tokenizers are trained in the session from the project's
own text, see `tokenizers_for_tests.py`; the official-code parity numbers live in `tests/fixtures/`). Tests that
need real models or data sets from `../shared` (or `$RETROMAE_SHARED`) skip with the reason when it is missing.
"""

import importlib.util
import os
import sys
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


FIXTURES = REPO / "tests" / "fixtures"


def load_benchmark(name: str):
    """A script of benchmarks/ imported as a module (they are run as scripts, not installed)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_torchrun(script: str, *args: str, cwd: Path, timeout: int, expect_success: bool = True) -> str:
    """Run `tests/<script>` in two processes under torchrun (gloo, CPU, loopback); fail the test with the end of its
    output if it fails (unless `expect_success` is False: a run that is killed on purpose) or outlives `timeout`
    seconds. Returns the output. Skips where torch has no gloo backend."""
    import signal
    import socket
    import subprocess

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "PYTHONPATH": str(REPO)}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port), str(REPO / "tests" / script), *args,
    ]  # fmt: skip
    # A session of its own, so that a timeout can end torchrun *and* its workers (killing torchrun alone would
    # orphan them, still holding the port).
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{output[-6000:]}")
    if expect_success:
        assert process.returncode == 0, f"torchrun failed ({process.returncode}):\n{output[-6000:]}"
    return output


def run_cli(argv: list[str], capfd) -> tuple[int, str]:
    """`retromae-hf ARGV` in this process: (exit code, stderr). argparse's own errors exit through SystemExit."""
    import logging

    from retromae_hf.cli import main

    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        root.handlers[:] = handlers  # a StreamHandler made by basicConfig would outlive this test's stderr
    return code, capfd.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    """`{relative path: sha256}` of every file under `folder`: compared before and after a command to show that
    it changed nothing it should not have."""
    import hashlib

    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def reference_fixture(variant: str) -> Path:
    """The folder of one official-code parity fixture (`staoxiao`, `flagembedding`, `*_perturbed`), with the files
    the original has (bert_config.json, official_state_dict.safetensors, inputs.safetensors, expected.*).

    Read from `tests/fixtures/retromae_reference` (see its README), expanded once per session into a temporary
    folder; `../shared/fixtures/retromae_reference` is used only where the checkout lacks them.
    """
    from fixtures_reference import expand_reference_fixture

    if (FIXTURES / "retromae_reference").is_dir():
        return expand_reference_fixture(variant)
    return shared_path("fixtures", "retromae_reference", variant)


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The real bert-base-uncased WordPiece tokenizer from ../shared/models (second tier: skips without it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_path("models", "all-MiniLM-L6-v2")))


@pytest.fixture(scope="session")
def wordpiece_tokenizer(trained_tokenizer):
    """A BERT-style WordPiece tokenizer ([CLS] ... [SEP], `##` continuations) trained from the project's text."""
    return trained_tokenizer("wordpiece")


def project_lines(count: int | None = None) -> list[str]:
    """Lines of the project's own prose (README and docs), in a fixed order: a small corpus for tests."""
    from tokenizers_for_tests import project_text

    # The docs name special tokens ("[CLS]", "<s>"); a tokenizer reads those as the special tokens themselves.
    specials = ("[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "<s>", "</s>", "<mask>", "<pad>", "<unk>")
    lines = [line for line in project_text() if len(line.split()) >= 4 and not any(t in line for t in specials)]
    return lines[:count] if count else lines


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


def saved_shapes(run) -> list[tuple[int, ...]]:
    """Shapes of the tensors autograd keeps for backward while `run()` builds its graph (to check that no
    `[L, L]` or `[tokens, V]` tensor outlives the forward pass)."""
    import torch

    shapes = []

    def pack(tensor):
        shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return shapes
