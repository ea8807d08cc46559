"""RetroMAELoss on a CUDA device, run by hand where a GPU exists (not collected by pytest; CI has no GPU).

    PYTHONPATH=.:tests python tests/gpu_sentence_transformers.py

Checks, on a tiny BERT and a tiny RoBERTa sentence model moved to the GPU: the masks drawn on the device follow
the collator's rules (whole words, budgets, 30% / 50% ratios, hidden diagonal, visible first token); the loss
computed on the GPU equals the CPU one for the same weights and masks; a few optimizer steps lower it; a bf16
autocast step is finite; the greedy whole-word walk gives the official rule's statistics on the device.
Prints the versions it ran with and "ALL OK".
"""

import copy
import os
import tempfile
from pathlib import Path

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tokenizers_for_tests import project_text, train_tokenizer
from transformers import AutoConfig, AutoModel

from retromae_hf.collator import sample_whole_word_masks
from retromae_hf.sentence_transformers import RetroMAELoss

TEXTS = [line for line in project_text() if 40 < len(line) < 300][:32]
DEVICE = os.environ.get("RETROMAE_CHECK_DEVICE", "cuda")  # "cpu" to try the script itself without a GPU


def tiny_model(folder: Path, model_type: str, tokenizer) -> SentenceTransformer:
    torch.manual_seed(0)
    settings = {"vocab_size": len(tokenizer), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    settings |= {"intermediate_size": 128, "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": 130}
    AutoModel.from_config(AutoConfig.for_model(model_type, **settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    modules = [Transformer(str(folder), max_seq_length=96), Pooling(64, "mean"), Normalize()]
    return SentenceTransformer(modules=modules, device=DEVICE)


def check_masks(loss: RetroMAELoss, batch: dict) -> None:
    real = batch["attention_mask"].bool()
    words = loss.boundaries.word_ids(batch["input_ids"], real)
    selected = total = visible = pairs = 0
    for _ in range(20):
        inputs = loss.retromae_inputs(batch)
        assert all(t.device.type == DEVICE for t in inputs.values())
        chosen = inputs["encoder_labels"] != -100
        for row in range(words.shape[0]):
            for word in words[row].unique():
                if word >= 0:
                    pieces = chosen[row][words[row] == word]
                    assert pieces.all() or not pieces.any(), "a word split on the GPU"
        assert not (chosen & (words < 0)).any(), "a special token or padding selected"
        selected += chosen.sum().item()
        total += real.sum().item()
        mask = inputs["decoder_attention_mask"].bool()
        assert not mask.diagonal(dim1=1, dim2=2).any(), "a decoder row sees itself"
        lengths = real.sum(1)
        for row, n in enumerate(lengths.tolist()):
            assert mask[row, 1:n, 0].all(), "the first token hidden from a decoder row"
            assert not mask[row, n:].any() and not mask[row, :, n:].any(), "padding attended"
            body = mask[row, 1 : n - 1, 1 : n - 1]
            visible += body.sum().item()
            pairs += body.numel() - (n - 2)
    print(f"  encoder selected {selected / total:.3f} of tokens (target 0.3); decoder rows see {visible / pairs:.3f}")
    assert abs(selected / total - 0.3) < 0.03 and abs(visible / pairs - 0.5) < 0.06


def check_model(model_type: str, kind: str, folder: Path) -> None:
    print(model_type)
    model = tiny_model(folder, model_type, train_tokenizer(kind, folder / "tokenizer"))
    loss = RetroMAELoss(model).to(DEVICE)  # as the trainer does
    batch = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in model.preprocess(TEXTS[:16]).items()}
    check_masks(loss, batch)

    # The same weights and masks give the same loss on the CPU and the GPU.
    model.eval()
    cpu_loss = copy.deepcopy(loss).to("cpu")
    cpu_batch = {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
    cpu_inputs = cpu_loss.retromae_inputs(cpu_batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        on_cpu = cpu_loss.compute_losses(cpu_batch, cpu_inputs)
        on_gpu = loss.compute_losses(batch, {k: v.to(DEVICE) for k, v in cpu_inputs.items()})
    for key in on_cpu:
        torch.testing.assert_close(on_gpu[key].cpu(), on_cpu[key], rtol=1e-3, atol=1e-4)
    print("  CPU / GPU:", {k: (round(on_cpu[k].item(), 4), round(on_gpu[k].item(), 4)) for k in on_cpu})

    model.train()
    optimizer = torch.optim.AdamW(list(model.parameters()) + loss.own_parameters(), lr=3e-3)
    totals = []
    for _ in range(15):
        total = sum(loss([batch]).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    print(f"  15 steps: {totals[0]:.3f} -> {totals[-1]:.3f}")
    assert totals[-1] < totals[0] - 0.5
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        bf16 = sum(loss([batch]).values())
    bf16.backward()
    assert torch.isfinite(bf16), "bf16 loss not finite"
    print(f"  bf16 autocast step: {bf16.item():.3f}")


def main() -> None:
    assert DEVICE != "cuda" or torch.cuda.is_available(), "no CUDA device"
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}, {name}"
    )
    # The greedy whole-word rule on the device (the collator's own test, with CUDA tensors).
    word_ids = torch.tensor([[0, 1, 1, 2, 2, 2]], device=DEVICE)
    masks = sample_whole_word_masks(word_ids, torch.tensor([3], device=DEVICE), 4000)
    assert masks.device.type == DEVICE and set(masks.sum(-1).flatten().tolist()) == {3}
    first = masks[0, :, 3].float().mean().item()
    print(f"greedy walk: the 3-piece word taken first in {first:.3f} of draws (1/3 expected)")
    assert abs(first - 1 / 3) < 0.04
    with tempfile.TemporaryDirectory() as tmp:
        check_model("bert", "wordpiece", Path(tmp) / "bert")
        check_model("roberta", "bpe", Path(tmp) / "roberta")
    print("ALL OK")


if __name__ == "__main__":
    main()
