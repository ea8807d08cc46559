"""The official-code parity fixtures, kept small in `tests/fixtures/retromae_reference/` and expanded on demand.

The originals (`../shared/fixtures/retromae_reference/<variant>/`, produced by the unmodified official RetroMAE
code; see the README beside the compact copy) hold four folders of five files. Much of that is repeated: the two
unperturbed variants share their weights, inputs and config byte for byte, and so do the two perturbed ones; every
official state dict stores the word embeddings three times and the embedding block twice (aliases of one tensor).
The compact copy keeps each distinct tensor once and only the numbers the tests read:

- `bert_config.json`, `inputs.safetensors`: as in every variant folder;
- `weights.safetensors`: `standard/<key>` and `perturbed/<key>`, the official state dicts without their aliases;
- `expected.safetensors`: `<variant>/<name>` for `cls_embedding`, `encoder_last_hidden_state`, `decoder_output`;
- `expected.json`: the alias groups, and per variant its weights, `losses` and `grad_norms`.

`expand_reference_fixture(variant)` rebuilds a folder with the original file names (the aliases re-added as
copies of their tensor), so tests read a fixture the same way wherever it comes from. `compact_reference_fixtures`
made the compact copy from the originals; `tests/test_fixtures.py` checks the two agree where `../shared` exists.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

COMPACT = Path(__file__).resolve().parent / "fixtures" / "retromae_reference"
VARIANTS = ("staoxiao", "flagembedding", "staoxiao_perturbed", "flagembedding_perturbed")
EXPECTED_TENSORS = ("cls_embedding", "encoder_last_hidden_state", "decoder_output")


def _weights_of(variant: str) -> str:
    return "perturbed" if variant.endswith("_perturbed") else "standard"


def compact_reference_fixtures(source: Path, target: Path = COMPACT) -> None:
    """Write the compact copy of the fixture folders under `source` into `target` (README excepted)."""
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    first = source / VARIANTS[0]
    shutil.copyfile(first / "bert_config.json", target / "bert_config.json")
    shutil.copyfile(first / "inputs.safetensors", target / "inputs.safetensors")
    summary: dict = {"variants": {}}
    weights, expected = {}, {}
    for variant in VARIANTS:
        folder = source / variant
        for name in ("bert_config.json", "inputs.safetensors"):
            if (folder / name).read_bytes() != (first / name).read_bytes():
                raise ValueError(f"{folder / name} differs from {first / name}; the compact form assumes they agree")
        meta = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
        groups = meta["state_dict"]["tied_or_aliased_key_groups"]
        summary["aliases"] = groups
        aliases = {key for group in groups for key in group[1:]}
        state = load_file(str(folder / "official_state_dict.safetensors"))
        for key, tensor in state.items():
            if key not in aliases:
                weights.setdefault(f"{_weights_of(variant)}/{key}", tensor.contiguous())
        tensors = load_file(str(folder / "expected.safetensors"))
        for name in EXPECTED_TENSORS:
            expected[f"{variant}/{name}"] = tensors[name].contiguous()
        summary["variants"][variant] = {
            "weights": _weights_of(variant),
            "losses": meta["losses"],
            "grad_norms": meta["grad_norms"],
        }
    save_file(weights, str(target / "weights.safetensors"))
    save_file(expected, str(target / "expected.safetensors"))
    (target / "expected.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


@functools.cache
def _expanded_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="retromae-reference-fixtures-"))


@functools.cache
def expand_reference_fixture(variant: str, compact: Path = COMPACT) -> Path:
    """A folder laid out like the original `<variant>/` fixture folder, rebuilt from the compact copy."""
    from safetensors.torch import load_file, save_file

    if variant not in VARIANTS:
        raise ValueError(f"unknown fixture variant {variant!r}; known: {VARIANTS}")
    summary = json.loads((compact / "expected.json").read_text(encoding="utf-8"))
    entry = summary["variants"][variant]
    folder = _expanded_root() / variant
    folder.mkdir()
    shutil.copyfile(compact / "bert_config.json", folder / "bert_config.json")
    shutil.copyfile(compact / "inputs.safetensors", folder / "inputs.safetensors")
    prefix = entry["weights"] + "/"
    state = {key[len(prefix) :]: tensor for key, tensor in load_file(str(compact / "weights.safetensors")).items()
             if key.startswith(prefix)}  # fmt: skip
    for group in summary["aliases"]:
        for alias in group[1:]:
            state[alias] = state[group[0]].clone()  # the official checkpoints store aliases as separate keys
    save_file(state, str(folder / "official_state_dict.safetensors"))
    tensors = load_file(str(compact / "expected.safetensors"))
    save_file({name: tensors[f"{variant}/{name}"] for name in EXPECTED_TENSORS}, str(folder / "expected.safetensors"))
    expected = {
        "variant": variant,
        "losses": entry["losses"],
        "grad_norms": entry["grad_norms"],
        "state_dict": {"tied_or_aliased_key_groups": summary["aliases"]},
    }
    (folder / "expected.json").write_text(json.dumps(expected, indent=1), encoding="utf-8")
    return folder
