"""transformers' generic model and config tests, run unmodified against `RetroMAEModel` and `RetroMAEForPreTraining`.

`ModelTesterMixin` and `ConfigTester` come from the source distribution of the installed transformers version
(`transformers_generic_suite.py`: downloaded once into a cache outside the repository; where it cannot be had,
this module skips with the reason). The tester below is ours, written the way transformers' own model tests are
(a model tester that builds a tiny config and inputs, and a `unittest.TestCase` that mixes the suite in). Every
generic test that fails or is skipped here by design is named, with its reason, in docs/conformance.md.

Select these tests with `-m conformance`; leave them out with `-m "not conformance"`.
"""

import copy
import unittest

import pytest
import torch
import transformers_generic_suite
from transformers import AutoConfig

from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining, RetroMAEModel

pytestmark = pytest.mark.conformance

try:
    modeling_common, configuration_common = transformers_generic_suite.load()
except RuntimeError as error:
    pytest.skip(f"transformers' generic tests are not available: {error}", allow_module_level=True)

ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester
ids_tensor = modeling_common.ids_tensor
random_attention_mask = modeling_common.random_attention_mask

# The keyword names of `RetroMAEModel`'s inputs in `RetroMAEForPreTraining.forward` (its encoder's inputs).
PRETRAINING_NAMES = {"input_ids": "encoder_input_ids", "attention_mask": "encoder_attention_mask"}


class RetroMAEModelTester:
    """Tiny RetroMAE configs and inputs for the generic tests (the shape of transformers' `BertModelTester`)."""

    def __init__(
        self,
        parent,
        encoder_type: str = "bert",
        batch_size: int = 3,
        seq_length: int = 7,
        is_training: bool = True,
        vocab_size: int = 99,
        hidden_size: int = 32,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int = 37,
        max_position_embeddings: int = 64,
        mask_pool_size: int = 3,
    ):
        self.parent = parent
        self.encoder_type = encoder_type
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.mask_pool_size = mask_pool_size

    def get_encoder_config(self):
        shape = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            pad_token_id=0,
        )
        if self.encoder_type == "modernbert":
            shape.update(global_attn_every_n_layers=2, local_attention=4, cls_token_id=2, sep_token_id=3)
        else:
            shape.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
        return AutoConfig.for_model(self.encoder_type, **shape)

    def get_config(self) -> RetroMAEConfig:
        return RetroMAEConfig(encoder=self.get_encoder_config())

    def prepare_config_and_inputs(self) -> tuple[RetroMAEConfig, dict[str, torch.Tensor]]:
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        inputs = {"input_ids": input_ids, "attention_mask": random_attention_mask([self.batch_size, self.seq_length])}
        if self.encoder_type == "bert":
            inputs["token_type_ids"] = ids_tensor([self.batch_size, self.seq_length], 2)
        # Some generic tests pick a model's input by its `main_input_name` from this dict without preparing it for
        # the class: `RetroMAEForPreTraining`'s is `encoder_input_ids`, the same tokens.
        inputs["encoder_input_ids"] = input_ids
        return self.get_config(), inputs

    def prepare_config_and_inputs_for_common(self) -> tuple[RetroMAEConfig, dict[str, torch.Tensor]]:
        return self.prepare_config_and_inputs()


class RetroMAEConformanceTest(ModelTesterMixin, unittest.TestCase):
    """The generic suite on a BERT encoder."""

    encoder_type = "bert"
    all_model_classes = (RetroMAEModel, RetroMAEForPreTraining)
    pipeline_model_mapping = {}

    def setUp(self):
        self.model_tester = RetroMAEModelTester(self, encoder_type=self.encoder_type)
        self.config_tester = ConfigTester(self, config_class=RetroMAEConfig, common_properties=["hidden_size"])

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """`RetroMAEForPreTraining` reads the same tokens as `encoder_*` and `decoder_*` inputs (with a compact
        position-specific mask), and takes its labels as `encoder_labels` / `decoder_labels`."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if model_class is not RetroMAEForPreTraining:
            return {name: value for name, value in inputs_dict.items() if name not in PRETRAINING_NAMES.values()}
        inputs = {}
        for name, value in inputs_dict.items():
            if name == "token_type_ids":  # the pre-training inputs carry no token types
                continue
            inputs.setdefault(PRETRAINING_NAMES.get(name, name), value)
        input_ids = inputs["encoder_input_ids"]
        batch, length = input_ids.shape
        generator = torch.Generator().manual_seed(0)
        inputs["decoder_input_ids"] = copy.deepcopy(input_ids)
        pool = torch.rand(batch, self.model_tester.mask_pool_size, length, generator=generator) < 0.5
        inputs["decoder_mask_pool"] = pool.to(input_ids.device)
        pick = torch.randint(0, self.model_tester.mask_pool_size, (batch, length), generator=generator)
        inputs["decoder_mask_pick"] = pick.to(input_ids.device)
        if return_labels:
            labels = input_ids.clone()
            labels[:, ::2] = -100
            inputs["encoder_labels"] = labels
            inputs["decoder_labels"] = input_ids.clone()
        return inputs

    def test_config(self):
        self.config_tester.run_common_tests()

    # The training tests take `.loss` from every class that is not a base model, which they recognise by its name
    # in transformers' own table of base models (`MODEL_MAPPING_NAMES`). `RetroMAEModel` is the base model of
    # `retromae` (registered with `AutoModel.register`, so not in that table) and has no loss: like transformers'
    # base models, it is left out of them.
    def _with_loss_only(self, test) -> None:
        self.all_model_classes = (RetroMAEForPreTraining,)
        try:
            test()
        finally:
            del self.all_model_classes

    def test_training(self):
        self._with_loss_only(super().test_training)

    def test_training_gradient_checkpointing(self):
        self._with_loss_only(super().test_training_gradient_checkpointing)

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self._with_loss_only(super().test_training_gradient_checkpointing_use_reentrant_false)

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self._with_loss_only(super().test_training_gradient_checkpointing_use_reentrant_true)


class RetroMAEModernBertConformanceTest(RetroMAEConformanceTest):
    """The generic suite on a ModernBERT encoder (rotary positions, the decoder's own position table)."""

    encoder_type = "modernbert"
