"""`import retromae_hf` is light, and still registers RetroMAE with transformers' Auto classes, in any import order."""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

CHECK = """
import json, tempfile, sys
{imports}
from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining
config = RetroMAEConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
folder = tempfile.mkdtemp()
RetroMAEForPreTraining(config).save_pretrained(folder)
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
print(json.dumps({{
    "auto_map": sorted(json.load(open(folder + "/config.json")).get("auto_map", {{}})),
    "config": type(AutoConfig.from_pretrained(folder)).__name__,
    "model": type(AutoModel.from_pretrained(folder)).__name__,
    "pretraining": type(AutoModelForPreTraining.from_pretrained(folder)).__name__,
}}))
"""


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_import_loads_neither_torch_nor_transformers():
    code = "import sys, retromae_hf\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    assert run(code) == "[]"


@pytest.mark.parametrize(
    "imports",
    [
        "import retromae_hf",  # the package first, transformers' Auto classes later
        "from transformers import AutoModel\nimport retromae_hf",  # transformers first
        "import retromae_hf.modeling_retromae",  # a module of the package directly
    ],
)
def test_auto_classes_are_registered_in_any_import_order(imports):
    import json

    result = json.loads(run(CHECK.format(imports=imports)))
    assert result == {
        "auto_map": ["AutoConfig", "AutoModel", "AutoModelForPreTraining"],
        "config": "RetroMAEConfig",
        "model": "RetroMAEModel",
        "pretraining": "RetroMAEForPreTraining",
    }
