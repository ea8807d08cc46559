"""Performance side by side: training step, collator, encoding, peak memory.

- One full training step (forward, backward, AdamW) of `RetroMAEForPreTraining` and of transformers'
  `BertForMaskedLM`, with the same encoder weights and the same batch, alternated step by step in one run so that
  both see the same machine state: tokens/s for each and the ratio of step times (RetroMAE / MLM).
- The collator's throughput at max length 512 (it must stay well above the model step's examples/s).
- Encoding throughput of the exported SentenceTransformer against the same weights loaded as a plain BERT model
  in sentence-transformers, and against the RetroMAE checkpoint loaded directly (alternated batches).
- Peak memory of each: CUDA's peak allocation on a GPU; on a CPU (Linux), the peak resident set of a child
  process that runs only that workload, above the resident set it had before the workload (peak mark reset).

Run by hand (not part of the test suite):

    python benchmarks/train_step.py                       # CPU defaults: small shape + BERT-base shape
    python benchmarks/train_step.py --device cuda --dtype bf16 --batch-size 32 --seq-len 512
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
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
    # Join paragraphs so that every example fills max_length, as packed pre-training blocks do. Reading stops as
    # soon as there are enough, so the memory probes' baseline is not the whole corpus.
    texts, current = [], []
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            if len(line) <= 200:
                continue
            current.append(line.strip())
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


def bench_encoding(args, tokenizer, texts, workdir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from retromae_hf.export import export_sentence_transformer, to_bert_model

    torch.manual_seed(0)
    config = RetroMAEConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **SHAPES[args.encode_shape])
    model = RetroMAEForPreTraining(config).eval()
    model.save_pretrained(workdir / "checkpoint")
    tokenizer.save_pretrained(workdir / "checkpoint")
    export = export_sentence_transformer(workdir / "checkpoint", workdir / "export")
    plain_dir = workdir / "plain-bert"
    to_bert_model(model.bert).save_pretrained(plain_dir)
    tokenizer.save_pretrained(plain_dir)
    candidates = {
        "exported SentenceTransformer": SentenceTransformer(str(export), device=args.device),
        "plain BERT in sentence-transformers": SentenceTransformer(
            modules=[Transformer(str(plain_dir), max_seq_length=512), Pooling(config.hidden_size, "cls")],
            device=args.device,
        ),
        "RetroMAE checkpoint, loaded directly": SentenceTransformer(str(workdir / "checkpoint"), device=args.device),
    }
    sentences = [text[:1500] for text in texts[:64]]
    times = {name: [] for name in candidates}
    for round_ in range(args.encode_rounds + 1):
        for name, st in candidates.items():
            sync(args.device)
            start = time.perf_counter()
            st.encode(sentences, batch_size=32, show_progress_bar=False)
            sync(args.device)
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["plain BERT in sentence-transformers"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {len(sentences) / median:,.1f} | {median / reference:.2f} |")


def memory_probe(workload: str, args) -> None:
    """Run one workload alone and print its peak memory as JSON (used through a child process)."""
    tokenizer, texts = load_tokenizer_and_texts(max(args.batch_size, 64))
    shape = SHAPES[args.encode_shape]
    rss_before = _reset_peak_rss()
    if workload in ("retromae-step", "mlm-step"):
        config = RetroMAEConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **shape)
        collator = RetroMAECollator(tokenizer, max_length=args.seq_len)
        batch = {k: v.to(args.device) for k, v in collator(texts[: args.batch_size]).items()}
        if workload == "retromae-step":
            model, inputs = RetroMAEForPreTraining(config), batch
        else:
            model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **shape))
            inputs = {
                "input_ids": batch["encoder_input_ids"],
                "attention_mask": batch["encoder_attention_mask"],
                "labels": batch["encoder_labels"],
            }
        model = model.to(args.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for _ in range(2):
            time_step(model, optimizer, inputs, args.device, None)
    elif workload != "baseline":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(workload, device=args.device)
        st.encode([text[:1500] for text in texts[:64]], batch_size=32, show_progress_bar=False)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _status_kib("VmHWM") / 1024 - rss_before  # the workload's own peak above its starting point
    print(json.dumps({"peak_mib": peak}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux: clear_refs 5) and return the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") / 1024


def bench_memory(args, workdir: Path) -> None:
    workloads = {
        "nothing (baseline: measurement noise)": "baseline",
        f"BertForMaskedLM training step ({args.encode_shape})": "mlm-step",
        f"RetroMAEForPreTraining training step ({args.encode_shape})": "retromae-step",
        "encode 64 texts: exported SentenceTransformer": str(workdir / "export"),
        "encode 64 texts: RetroMAE checkpoint": str(workdir / "checkpoint"),
    }
    for label, workload in workloads.items():
        command = [sys.executable, __file__, "--memory-probe", workload, "--device", args.device,
                   "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                   "--encode-shape", args.encode_shape]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"| {label} | failed: {result.stderr.strip().splitlines()[-1]} |")
            continue
        peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
        print(f"| {label} | {peak:,.0f} |")


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
    parser.add_argument("--encode-shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--encode-rounds", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["model", "collator", "encode", "memory"])
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe, args)
        return

    tokenizer, texts = load_tokenizer_and_texts(max(args.batch_size, 128))
    print(
        f"device={args.device} dtype={args.dtype} attn={args.attn} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    if "model" not in args.skip:
        print("\n| shape | batch | MLM tokens/s | RetroMAE tokens/s | step time ratio RetroMAE/MLM |")
        print("|---|---|---|---|---|")
        for shape in args.shapes:
            bench_model(shape, args, tokenizer, texts)
    if "collator" not in args.skip:
        print("\n| collator input | batch | examples/s |")
        print("|---|---|---|")
        bench_collator(args, tokenizer, texts)
    with tempfile.TemporaryDirectory() as workdir:
        if "encode" not in args.skip or "memory" not in args.skip:
            print(f"\n| encoder ({args.encode_shape} shape, 64 texts, batch 32) | texts/s | time ratio to plain BERT |")
            print("|---|---|---|")
            bench_encoding(args, tokenizer, texts, Path(workdir))
        if "memory" not in args.skip:
            unit = (
                "peak CUDA allocation, MiB" if args.device == "cuda" else "peak RSS above the process's own start, MiB"
            )
            print(f"\n| workload | {unit} |")
            print("|---|---|")
            bench_memory(args, Path(workdir))


if __name__ == "__main__":
    main()
