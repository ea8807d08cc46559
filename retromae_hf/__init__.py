"""retromae-hf: RetroMAE pre-training as a first-class Hugging Face model.

Importing the package registers `RetroMAEConfig` and its models with transformers' Auto classes, so that
`AutoModel.from_pretrained(...)` works on RetroMAE checkpoints without `trust_remote_code`.

The import itself is light: torch and transformers take several seconds to import, which the command line's
`--help` must not pay. The public names load on first use, and the registration happens as soon as transformers'
Auto classes (or this package's model files) are imported, whichever comes first: at once when they already are,
otherwise through a small import hook that fires right after they load.
"""

import importlib
import importlib.abc
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from .collator import RetroMAECollator
    from .configuration_retromae import RetroMAEConfig
    from .evaluation import evaluate
    from .export import export_sentence_transformer, load_sentence_transformer
    from .hub import HubPushError, pull_from_hub, push_to_hub, render_model_card
    from .modeling_retromae import (
        RetroMAEDecoder,
        RetroMAEForPreTraining,
        RetroMAEForPreTrainingOutput,
        RetroMAEModel,
        RetroMAEModelOutput,
        RetroMAEPreTrainedModel,
        UnsupportedEncoderError,
    )

_LAZY = {
    "RetroMAECollator": "collator",
    "RetroMAEConfig": "configuration_retromae",
    "RetroMAEDecoder": "modeling_retromae",
    "RetroMAEForPreTraining": "modeling_retromae",
    "RetroMAEForPreTrainingOutput": "modeling_retromae",
    "RetroMAEModel": "modeling_retromae",
    "RetroMAEModelOutput": "modeling_retromae",
    "RetroMAEPreTrainedModel": "modeling_retromae",
    "UnsupportedEncoderError": "modeling_retromae",
    "export_sentence_transformer": "export",
    "load_sentence_transformer": "export",
    "push_to_hub": "hub",
    "pull_from_hub": "hub",
    "render_model_card": "hub",
    "HubPushError": "hub",
    "evaluate": "evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


# --------------------------------------------------------------------------------------------------- Auto classes
_CONFIG_TRIGGERS = ("transformers.models.auto.configuration_auto", f"{__name__}.configuration_retromae")
_MODEL_TRIGGERS = ("transformers.models.auto.modeling_auto", f"{__name__}.modeling_retromae")
_registered: set[str] = set()


def _loaded(module_name: str, attribute: str) -> bool:
    """Whether a module has finished loading (a module being imported is in sys.modules but still incomplete)."""
    return hasattr(sys.modules.get(module_name), attribute)


def _register_config() -> None:
    if "config" in _registered or not _loaded(f"{__name__}.configuration_retromae", "RetroMAEConfig"):
        return
    if not _loaded("transformers.models.auto.configuration_auto", "AutoConfig"):
        return
    _registered.add("config")
    from transformers import AutoConfig

    from .configuration_retromae import RetroMAEConfig

    AutoConfig.register(RetroMAEConfig.model_type, RetroMAEConfig, exist_ok=True)
    # `save_pretrained` then writes `auto_map` and copies the two model files beside the weights, so a checkpoint
    # loads with `trust_remote_code=True` where this package is not installed.
    RetroMAEConfig.register_for_auto_class()


def _register_models() -> None:
    if "models" in _registered or not _loaded(f"{__name__}.modeling_retromae", "RetroMAEForPreTraining"):
        return
    if not _loaded("transformers.models.auto.modeling_auto", "AutoModelForPreTraining"):
        return
    _registered.add("models")
    from transformers import AutoModel, AutoModelForPreTraining

    from .configuration_retromae import RetroMAEConfig
    from .modeling_retromae import RetroMAEForPreTraining, RetroMAEModel

    AutoModel.register(RetroMAEConfig, RetroMAEModel, exist_ok=True)
    AutoModelForPreTraining.register(RetroMAEConfig, RetroMAEForPreTraining, exist_ok=True)
    RetroMAEModel.register_for_auto_class("AutoModel")
    RetroMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")


def _on_import(module_name: str) -> None:
    """Called after a trigger module loaded: make sure both halves of a registration are there, then register."""
    if module_name in _CONFIG_TRIGGERS:
        if module_name.startswith("transformers"):
            importlib.import_module(f"{__name__}.configuration_retromae")
        else:
            importlib.import_module("transformers.models.auto.configuration_auto")
        _register_config()
    else:
        if module_name.startswith("transformers"):
            importlib.import_module(f"{__name__}.modeling_retromae")
        else:
            importlib.import_module("transformers.models.auto.modeling_auto")
        _register_config()
        _register_models()
    if {"config", "models"} <= _registered and _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of a trigger module so that `_on_import` runs after it."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _CONFIG_TRIGGERS + _MODEL_TRIGGERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, fullname)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    def __init__(self, loader, fullname: str):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _on_import(self._fullname)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... of the real loader
        return getattr(self._loader, name)


_hook = _RegisterAfterImport()
if any(_loaded(name, "__name__") for name in _CONFIG_TRIGGERS + _MODEL_TRIGGERS):
    # transformers' Auto classes (or the model files) are imported already: register now.
    for _name in _CONFIG_TRIGGERS + _MODEL_TRIGGERS:
        if _loaded(_name, "__name__"):
            _on_import(_name)
if {"config", "models"} - _registered:
    sys.meta_path.insert(0, _hook)


__all__ = [
    "HubPushError",
    "RetroMAECollator",
    "RetroMAEConfig",
    "RetroMAEDecoder",
    "RetroMAEForPreTraining",
    "RetroMAEForPreTrainingOutput",
    "RetroMAEModel",
    "RetroMAEModelOutput",
    "RetroMAEPreTrainedModel",
    "UnsupportedEncoderError",
    "__version__",
    "evaluate",
    "export_sentence_transformer",
    "load_sentence_transformer",
    "pull_from_hub",
    "push_to_hub",
    "render_model_card",
]
