"""FSDP2 (`torch.distributed.fsdp.fully_shard`) of `RetroMAEForPreTraining` on the CPU (gloo): run by
`tests/test_scaling.py`, not collected by pytest.

Usage: `torchrun --nproc_per_node 2 tests/distributed_fsdp.py OUT_DIR`.

The Trainer's own FSDP path (accelerate) is enabled for GPUs only, so this checks the model itself: every rank
builds the same tiny model (same seed), shards each encoder and decoder layer and then the whole model (the tied
word embeddings and masked-LM projection stay together in the root group), and runs one forward and backward on
the same batch. Rank 0 saves the sharded loss and gradient norm next to an unsharded copy's, and the parameters
after one SGD step, which the test compares.
"""

import copy
import datetime
import faulthandler
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining
from retromae_hf.collator import reconstruction_labels, sample_decoder_attention

VOCAB, BATCH, LENGTH = 64, 4, 12


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (BATCH, LENGTH), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    real = torch.ones(BATCH, LENGTH, dtype=torch.bool)
    words = torch.arange(LENGTH).expand(BATCH, -1).clone()
    words[:, 0] = words[:, -1] = -1
    selected = torch.rand(BATCH, LENGTH, generator=generator) < 0.3
    selected[:, 0] = selected[:, -1] = False
    return {
        "encoder_input_ids": ids.masked_fill(selected, 4),
        "encoder_attention_mask": real.long(),
        "encoder_labels": ids.masked_fill(~selected, -100),
        "decoder_input_ids": ids,
        "decoder_attention_mask": sample_decoder_attention(words, real.sum(-1), real, 0.5, 8, generator),
        "decoder_labels": reconstruction_labels(ids, real),
    }


def grad_norm(model: torch.nn.Module) -> float:
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    return float(total.full_tensor() if hasattr(total, "full_tensor") else total)


def main(out_dir: Path) -> None:
    faulthandler.dump_traceback_later(90, exit=True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = RetroMAEConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = RetroMAEForPreTraining(config).double()
    reference = copy.deepcopy(model)
    inputs = batch()

    reference_loss = reference(**inputs).loss
    reference_loss.backward()
    reference_norm = grad_norm(reference)
    torch.optim.SGD(reference.parameters(), lr=0.1).step()

    for layer in [*model.lm.bert.encoder.layer, *model.decoder.layers]:
        fully_shard(layer)
    fully_shard(model)
    sharded = any(hasattr(p, "full_tensor") for p in model.parameters())
    loss = model(**inputs).loss
    loss.backward()
    norm = grad_norm(model)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    stepped = {name: p.full_tensor().detach() for name, p in model.named_parameters()}
    if dist.get_rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "sharded": sharded,
                "loss": float(loss),
                "reference_loss": float(reference_loss),
                "grad_norm": norm,
                "reference_grad_norm": reference_norm,
                "parameters": stepped,
                "reference_parameters": {name: p.detach() for name, p in reference.named_parameters()},
            },
            out_dir / "results.pt",
        )
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # skip the gloo teardown (see distributed_contrastive.py)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
