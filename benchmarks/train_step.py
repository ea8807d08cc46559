"""Training-step cost of RetroMAE against plain masked-LM pre-training, and the collator's throughput.

One full step (forward, backward, AdamW) of `RetroMAEForPreTraining` and of transformers' `BertForMaskedLM`, with
the same encoder weights and the same batch, alternated step by step in one run so that both see the same machine
state. Prints tokens/s for each and the ratio of step times (RetroMAE / MLM).

Run by hand (not part of the test suite):

    python benchmarks/train_step.py                       # CPU defaults: small shape + BERT-base shape
    python benchmarks/train_step.py --device cuda --dtype bf16 --batch-size 32 --seq-len 512
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from retromae_hf import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHAPES = {
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def load_tokenizer_and_texts(count: int):
    tokenizer = AutoTokenizer.from_pretrained(str(SHARED / "models" / "all-MiniLM-L6-v2"))
    corpus = SHARED / "data" / "corpus" / "gutenberg_en.txt"
    with open(corpus, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if len(line) > 200]
    # Join paragraphs so that every example fills max_length, as packed pre-training blocks do.
    texts, current = [], []
    for line in lines:
        current.append(line)
        if sum(len(part) for part in current) > 4000:
            texts.append(" ".join(current))
            current = []
        if len(texts) == count:
            break
    return tokenizer, texts


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_step(model, optimizer, batch, device, autocast_dtype) -> float:
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device_type=device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def bench_model(shape: str, args, tokenizer, texts) -> None:
    torch.manual_seed(0)
    config = RetroMAEConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **SHAPES[shape])
    retromae = RetroMAEForPreTraining(config).to(args.device).train()
    bert = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **SHAPES[shape]))
    bert.bert.load_state_dict(retromae.bert.state_dict(), strict=False)
    bert = bert.to(args.device).train()
    for model in (retromae, bert):
        model.set_attn_implementation(args.attn)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (retromae, bert)]

    collator = RetroMAECollator(tokenizer, max_length=args.seq_len)
    batch = {k: v.to(args.device) for k, v in collator(texts[: args.batch_size]).items()}
    mlm_batch = {
        "input_ids": batch["encoder_input_ids"],
        "attention_mask": batch["encoder_attention_mask"],
        "labels": batch["encoder_labels"],
    }
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    tokens = int(batch["encoder_attention_mask"].sum())
    times = {"retromae": [], "mlm": []}
    for step in range(args.warmup + args.steps):
        for name, model, optimizer, inputs in (
            ("retromae", retromae, optimizers[0], batch),
            ("mlm", bert, optimizers[1], mlm_batch),
        ):
            elapsed = time_step(model, optimizer, inputs, args.device, autocast_dtype)
            if step >= args.warmup:
                times[name].append(elapsed)
    retro, mlm = statistics.median(times["retromae"]), statistics.median(times["mlm"])
    print(
        f"| {shape} | {args.batch_size}x{args.seq_len} | {tokens / mlm:,.0f} | {tokens / retro:,.0f} "
        f"| {retro / mlm:.2f} |"
    )


def bench_collator(args, tokenizer, texts) -> None:
    collator = RetroMAECollator(tokenizer, max_length=512)
    encoded = tokenizer(texts, truncation=True, max_length=512)
    tokenized = [
        {"input_ids": ids, "word_ids": [-1 if w is None else w for w in encoded.word_ids(i)]}
        for i, ids in enumerate(encoded["input_ids"])
    ]
    for label, examples in (("pre-tokenized (training path)", tokenized), ("raw text (tokenizes too)", texts)):
        collator(examples[:32])
        start = time.perf_counter()
        done = 0
        for _ in range(args.collator_rounds):
            for i in range(0, len(examples) - 31, 32):
                collator(examples[i : i + 32])
                done += 32
        rate = done / (time.perf_counter() - start)
        print(f"| {label} | 32 x 512 | {rate:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["small", "bert-base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--collator-rounds", type=int, default=2)
    args = parser.parse_args()

    tokenizer, texts = load_tokenizer_and_texts(max(args.batch_size, 128))
    print(
        f"device={args.device} dtype={args.dtype} attn={args.attn} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print("\n| shape | batch | MLM tokens/s | RetroMAE tokens/s | step time ratio RetroMAE/MLM |")
    print("|---|---|---|---|---|")
    for shape in args.shapes:
        bench_model(shape, args, tokenizer, texts)
    print("\n| collator input | batch | examples/s |")
    print("|---|---|---|")
    bench_collator(args, tokenizer, texts)


if __name__ == "__main__":
    main()
