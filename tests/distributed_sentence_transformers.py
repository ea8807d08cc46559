"""RetroMAELoss under torchrun (gloo, CPU, DDP): run by `tests/test_sentence_transformers.py`, not collected.

Usage: `torchrun --nproc_per_node 2 tests/distributed_sentence_transformers.py MODEL_DIR OUT_DIR`.

Every rank loads the same tiny SentenceTransformer from MODEL_DIR but builds its RetroMAELoss after seeding with
its own rank, so the decoders start *different* on purpose. SentenceTransformerTrainer then trains a few steps
with DDP, each rank on its own share of the data. Each rank saves its model and loss parameters, and the test
checks that DDP kept the models identical and the loss kept the decoders identical (broadcast at the first step,
gradients averaged before every step).
"""

import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from retromae_hf.sentence_transformers import RetroMAELoss

STEPS = 3


def main(model_dir: str, out_dir: str) -> None:
    rank = int(os.environ["RANK"])
    model = SentenceTransformer(model_dir, device="cpu")
    torch.manual_seed(100 + rank)  # different decoder initialisations on each rank
    loss = RetroMAELoss(model)
    initial = [p.detach().clone() for p in loss.own_parameters()]
    texts = [f"text number {i} talks about dense retrieval and masked auto-encoders, item {i * 7}" for i in range(64)]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(out_dir) / "trainer"),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}), loss=loss
    )
    trainer.train()
    torch.save(
        {
            "world_size": torch.distributed.get_world_size(),
            "model": {name: p.detach().clone() for name, p in model.named_parameters()},
            "loss_initial": initial,
            "loss": [p.detach().clone() for p in loss.own_parameters()],
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
