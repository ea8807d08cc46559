"""Cross-device InfoNCE under torchrun (gloo, CPU): run by `tests/test_objectives.py`, not collected by pytest.

Usage: `torchrun --nproc_per_node 2 tests/distributed_contrastive.py OUT_DIR`.

Every rank builds the same tiny encoder (same seed) wrapped in DDP, takes its share of one fixed global batch of
query / passage groups, computes InfoNCE and backpropagates. For each scenario rank 0 saves to
`OUT_DIR/results.pt` the per-rank losses, the local batch sizes and DDP's averaged parameter gradients, which the
test compares with a single-process computation on the whole global batch (built from the helpers below).
"""

import datetime
import faulthandler
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from retromae_hf import RetroMAEConfig, RetroMAEModel
from retromae_hf.objectives import InfoNCELoss

logger = logging.getLogger("distributed_contrastive")

VOCAB_SIZE = 64
GLOBAL_QUERIES = 4
HARD_NEGATIVES = 2
QUERY_LEN, PASSAGE_LEN = 6, 9
TEMPERATURE = 0.5
HANG_TIMEOUT_S = 90  # below the test's 120 s subprocess timeout
# name -> (local query counts per rank, similarity, gather mode). "gather": all_gather_with_grad; "local": no
# gathering (in-batch negatives of this rank only); "naive": detached gather with the local slice put back.
SCENARIOS: dict[str, tuple[tuple[int, int], str, str]] = {
    "gather_dot": ((2, 2), "dot", "gather"),
    "gather_cosine_unequal": ((3, 1), "cosine", "gather"),
    "local_dot": ((2, 2), "dot", "local"),
    "naive_dot": ((2, 2), "dot", "naive"),
}


def build_model() -> RetroMAEModel:
    """The tiny encoder, identical on every rank and in the test; float64 so 1e-6 tolerances are meaningful."""
    torch.manual_seed(0)
    config = RetroMAEConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return RetroMAEModel(config).double()


def global_batch() -> dict[str, torch.Tensor]:
    """A fixed global batch: `GLOBAL_QUERIES` queries, each with a positive and `HARD_NEGATIVES` negatives."""
    generator = torch.Generator().manual_seed(1)
    passages = GLOBAL_QUERIES * (1 + HARD_NEGATIVES)

    def rows(count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(1, VOCAB_SIZE, (count, length), generator=generator)
        lengths = torch.randint(3, length + 1, (count,), generator=generator)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        return ids.masked_fill(mask == 0, 0), mask

    query_ids, query_mask = rows(GLOBAL_QUERIES, QUERY_LEN)
    passage_ids, passage_mask = rows(passages, PASSAGE_LEN)
    return {
        "query_input_ids": query_ids,
        "query_attention_mask": query_mask,
        "passage_input_ids": passage_ids,
        "passage_attention_mask": passage_mask,
    }


def local_batch(batch: dict[str, torch.Tensor], counts: tuple[int, ...], rank: int) -> dict[str, torch.Tensor]:
    """This rank's queries and their passage groups, in global order."""
    start, stop = sum(counts[:rank]), sum(counts[: rank + 1])
    group = 1 + HARD_NEGATIVES
    return {
        key: value[start:stop] if key.startswith("query") else value[start * group : stop * group]
        for key, value in batch.items()
    }


class DualEncoder(nn.Module):
    """Queries and passages in one forward, so the DDP wrapper sees one forward per backward."""

    def __init__(self, model: RetroMAEModel):
        super().__init__()
        self.model = model

    def forward(
        self,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
        passage_input_ids: torch.Tensor,
        passage_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.model(query_input_ids, attention_mask=query_attention_mask).sentence_embedding
        passages = self.model(passage_input_ids, attention_mask=passage_attention_mask).sentence_embedding
        return queries, passages


def naive_infonce(queries: torch.Tensor, passages: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The common shortcut: gather detached passages and put the local, differentiable slice back in its place.

    Same forward value as the real gather; kept here to show that its gradient is wrong for local-query losses.
    """
    copies = [torch.empty_like(passages) for _ in range(world_size)]
    dist.all_gather(copies, passages.detach().contiguous())
    copies[rank] = passages
    gathered = torch.cat(copies)
    group = passages.shape[0] // queries.shape[0]
    targets = rank * passages.shape[0] + torch.arange(queries.shape[0]) * group
    return F.cross_entropy(queries @ gathered.T / TEMPERATURE, targets)


def run_scenario(
    ddp: DistributedDataParallel, name: str, rank: int, world_size: int
) -> dict[str, torch.Tensor | list[int]]:
    counts, similarity, mode = SCENARIOS[name]
    ddp.zero_grad(set_to_none=True)
    queries, passages = ddp(**local_batch(global_batch(), counts, rank))
    if mode == "naive":
        loss = naive_infonce(queries, passages, rank, world_size)
    else:
        loss_fn = InfoNCELoss(TEMPERATURE, similarity, gather_across_devices=mode == "gather")
        loss = loss_fn(queries, passages)
    # DDP averages gradients over ranks; weighting each rank by its share of the queries makes that average the
    # gradient of the global mean, whatever the local batch sizes.
    scale = world_size * counts[rank] / sum(counts)
    (loss * scale).backward()
    losses = [torch.zeros((), dtype=loss.dtype) for _ in range(world_size)]
    dist.all_gather(losses, loss.detach())
    grads = {n: p.grad.detach().clone() for n, p in ddp.module.model.named_parameters() if p.grad is not None}
    logger.info("rank %d %s: local loss %.6f", rank, name, loss.item())
    return {"losses": torch.stack(losses), "counts": list(counts), "grads": grads}


def main(out_dir: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # A hung collective then prints every thread's stack and fails, instead of silently using up the test's timeout.
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size != 2:
        raise SystemExit(f"run with --nproc_per_node 2 (the scenarios split the batch in two), got {world_size}")
    torch.set_num_threads(1)
    ddp = DistributedDataParallel(DualEncoder(build_model()))
    results = {name: run_scenario(ddp, name, rank, world_size) for name in SCENARIOS}
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(results, out_dir / "results.pt")
    # Exit without tearing the process group down. torch's gloo teardown can deadlock (seen with torch 2.13, about
    # one run in ten): the main thread, holding the GIL, destroys DDP's reducer and with it the process group, and
    # joins a gloo worker thread that is itself waiting for the GIL to release the tensors of a finished
    # collective. No collective is pending here (the last one, the loss all_gather, has completed on both ranks),
    # so nothing is lost by skipping the destructors.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: torchrun --nproc_per_node 2 {sys.argv[0]} OUT_DIR")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(Path(sys.argv[1]))
