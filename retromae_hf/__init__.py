"""retromae-hf: RetroMAE pre-training as a first-class Hugging Face model.

Importing the package registers `RetroMAEConfig` and its models with transformers' Auto classes, so that
`AutoModel.from_pretrained(...)` works on RetroMAE checkpoints without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .collator import RetroMAECollator
from .configuration_retromae import RetroMAEConfig
from .modeling_retromae import (
    RetroMAEDecoder,
    RetroMAEForPreTraining,
    RetroMAEForPreTrainingOutput,
    RetroMAEModel,
    RetroMAEModelOutput,
    RetroMAEPreTrainedModel,
    UnsupportedEncoderError,
)

__version__ = "0.1.0"

AutoConfig.register(RetroMAEConfig.model_type, RetroMAEConfig, exist_ok=True)
AutoModel.register(RetroMAEConfig, RetroMAEModel, exist_ok=True)
AutoModelForPreTraining.register(RetroMAEConfig, RetroMAEForPreTraining, exist_ok=True)

# `save_pretrained` writes `auto_map` and copies the two model files beside the weights, so a checkpoint loads
# with `trust_remote_code=True` where this package is not installed.
RetroMAEConfig.register_for_auto_class()
RetroMAEModel.register_for_auto_class("AutoModel")
RetroMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")

_LAZY = {
    "export_sentence_transformer": "export",
    "load_sentence_transformer": "export",
    "push_to_hub": "hub",
    "pull_from_hub": "hub",
    "render_model_card": "hub",
    "HubPushError": "hub",
    "evaluate": "evaluation",
}


def __getattr__(name: str):
    # Heavy optional rooms (sentence-transformers, mteb, huggingface_hub uploads) load on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "evaluate",
    "export_sentence_transformer",
    "load_sentence_transformer",
    "pull_from_hub",
    "push_to_hub",
    "render_model_card",
]
