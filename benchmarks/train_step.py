"""Performance side by side: training step, collator, encoding, peak memory.

- One full training step (forward, backward, AdamW) of `RetroMAEForPreTraining` and of two masked-LM anchors
  built from the encoder architecture's own transformers `*ForMaskedLM` (`BertForMaskedLM`, `RobertaForMaskedLM`,
  `XLMRobertaForMaskedLM`, `ModernBertForMaskedLM`; `masked_lm_anchors.py`): as it is (vocabulary logits at every
  position) and with logits at the labelled positions only (ModernBERT's `sparse_prediction`; gathered by the
  benchmark for the others), which is how masked LMs are trained. All three hold the same encoder weights and take
  the same batch, alternated step by step in one run so that they see the same machine state: tokens/s for each and
  the ratios of step times (RetroMAE / each anchor). The shapes are those of the public base checkpoints (layers,
  width, heads, feed-forward, vocabulary, positions), with random weights; the batch comes from the
  bert-base-uncased tokenizer, whose ids fit every vocabulary. `--fused-cross-entropy` runs RetroMAE's losses
  through liger-kernel / cut-cross-entropy (CUDA).
- The chunked vocabulary loss under `torch.no_grad()` (evaluation), before and after it skipped the gradient
  work `LinearCrossEntropy` does in forward (V = 50,368, N = 2,000, H = 768), alternated.
- The collator's throughput at max length 512 (it must stay well above the model step's examples/s).
- Encoding throughput of the exported SentenceTransformer against the same weights loaded as a plain BERT model
  in sentence-transformers, and against the RetroMAE checkpoint loaded directly (alternated batches).
- Peak memory of each: CUDA's peak allocation on a GPU; on a CPU (Linux), the peak resident set of a child
  process that runs only that workload, above the resident set it had before the workload (peak mark reset).

Run by hand (not part of the test suite):

    python benchmarks/train_step.py                       # CPU defaults: small shape + BERT-base shape
    python benchmarks/train_step.py --shapes bert-base roberta-base modernbert-base --skip collator encode memory
    python benchmarks/train_step.py --device cuda --dtype bf16 --batch-size 32 --seq-len 512 [--fused-cross-entropy]
    python benchmarks/train_step.py --quick               # seconds: every architecture at a tiny shape
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig

from retromae_hf import RetroMAECollator, RetroMAEConfig, RetroMAEForPreTraining
from retromae_hf.modeling_retromae import (
    LinearCrossEntropy,
    chunked_cross_entropy,
    fused_linear_cross_entropy_kernel,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the anchors beside this script, when imported too
from masked_lm_anchors import masked_lm_anchors

SHARED = Path(os.environ.get("RETROMAE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BERT_SHAPES = {
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
# (architecture, config fields) of each shape: the public base checkpoints' config.json values that set the cost.
SHAPES = {
    "small": ("bert", dict(vocab_size=30522, max_position_embeddings=512, **BERT_SHAPES["small"])),
    "bert-base": ("bert", dict(vocab_size=30522, max_position_embeddings=512, **BERT_SHAPES["bert-base"])),
    # FacebookAI/roberta-base: positions numbered from pad_token_id + 1, hence 514 rows for 512 tokens.
    "roberta-base": (
        "roberta",
        dict(
            vocab_size=50265,
            max_position_embeddings=514,
            pad_token_id=1,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            **BERT_SHAPES["bert-base"],
        ),
    ),
    # FacebookAI/xlm-roberta-base: RoBERTa's shape with a 250k vocabulary.
    "xlm-roberta-base": (
        "xlm-roberta",
        dict(
            vocab_size=250002,
            max_position_embeddings=514,
            pad_token_id=1,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            **BERT_SHAPES["bert-base"],
        ),
    ),
    # answerdotai/ModernBERT-base: 22 layers, GLU feed-forward of 1152, rotary, local attention (128) in 2 of 3 layers.
    "modernbert-base": (
        "modernbert",
        dict(
            vocab_size=50368,
            hidden_size=768,
            num_hidden_layers=22,
            num_attention_heads=12,
            intermediate_size=1152,
            max_position_embeddings=8192,
            global_attn_every_n_layers=3,
            local_attention=128,
            pad_token_id=50283,
            bos_token_id=50281,
            eos_token_id=50282,
            cls_token_id=50281,
            sep_token_id=50282,
        ),
    ),
}
EVAL_CHUNK = 512  # tokens per chunk in the no-grad loss timing (N = 2,000: four chunks)
# --quick: every architecture at a tiny shape, to check the script end to end in seconds.
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def encoder_config(shape: str, quick: bool = False) -> PreTrainedConfig:
    architecture, fields = SHAPES[shape]
    fields = {**fields, **(QUICK if quick else {})}
    return AutoConfig.for_model(architecture, **fields)


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


def models_for(shape: str, args) -> dict[str, torch.nn.Module]:
    """RetroMAE, and the architecture's own *ForMaskedLM holding the same encoder and head weights, twice: as it is
    (logits at every position) and with logits at the labelled positions only (`masked_lm_anchors`)."""
    torch.manual_seed(0)
    retromae = RetroMAEForPreTraining(
        RetroMAEConfig(
            encoder=encoder_config(shape, args.quick),
            loss_chunk_size=args.loss_chunk_size,
            fused_cross_entropy=args.fused_cross_entropy,
        )
    )
    anchors = masked_lm_anchors(copy.deepcopy(retromae.lm))
    return {"retromae": retromae, "mlm": anchors["full"], "sparse_mlm": anchors["sparse"]}


def bench_model(shape: str, args, tokenizer, texts) -> dict:
    """Steps of RetroMAE and both masked-LM anchors, alternated step by step; prints one table row, returns it."""
    models = {name: model.to(args.device).train() for name, model in models_for(shape, args).items()}
    for model in models.values():
        model.set_attn_implementation(args.attn)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}

    collator = RetroMAECollator(
        tokenizer, max_length=args.seq_len, generator=torch.Generator().manual_seed(0), decoder_mask=args.decoder_mask
    )
    batch = {k: v.to(args.device) for k, v in collator(texts[: args.batch_size]).items()}
    mlm_batch = {
        "input_ids": batch["encoder_input_ids"],
        "attention_mask": batch["encoder_attention_mask"],
        "labels": batch["encoder_labels"],
    }
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    tokens = int(batch["encoder_attention_mask"].sum())
    times = {name: [] for name in models}
    for step in range(args.warmup + args.steps):
        for name, model in models.items():
            inputs = batch if name == "retromae" else mlm_batch
            elapsed = time_step(model, optimizers[name], inputs, args.device, autocast_dtype)
            if step >= args.warmup:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    row = {
        "shape": shape + (" (quick)" if args.quick else ""),
        "masked_lm": type(models["mlm"]).__name__,
        "batch": f"{args.batch_size}x{batch['encoder_input_ids'].shape[1]}",
        "loss": loss_label(args),
        "tokens_per_s": {name: tokens / seconds for name, seconds in median.items()},
        "ratio_vs_mlm": median["retromae"] / median["mlm"],
        "ratio_vs_sparse_mlm": median["retromae"] / median["sparse_mlm"],
    }
    rate = row["tokens_per_s"]
    print(
        f"| {row['shape']} | {row['masked_lm']} | {row['batch']} | {row['loss']} | {rate['mlm']:,.0f} "
        f"| {rate['sparse_mlm']:,.0f} | {rate['retromae']:,.0f} | {row['ratio_vs_mlm']:.2f} "
        f"| {row['ratio_vs_sparse_mlm']:.2f} |"
    )
    del models, optimizers
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def loss_label(args) -> str:
    """How RetroMAE's losses ran: the fused kernel only where the model uses it (CUDA and a kernel installed)."""
    chunked = f"chunked ({args.loss_chunk_size or 'off'})"
    if not args.fused_cross_entropy:
        return chunked
    kernel = fused_linear_cross_entropy_kernel()
    if args.device != "cuda" or kernel is None:
        return f"{chunked}: fused requested, no kernel on {args.device}"
    return f"fused ({kernel.__name__})"


def bench_eval_loss(args) -> dict:
    """The chunked vocabulary loss without grad mode (what evaluation runs): `LinearCrossEntropy` as it was called
    before (gradients taken in forward, discarded) against `chunked_cross_entropy` now (the loss alone),
    alternated, median of the rounds."""
    vocab, tokens, width = (1000, 200, 64) if args.quick else (50368, 2000, 768)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(tokens, width, generator=generator).to(args.device)
    head = torch.nn.Linear(width, vocab).to(args.device)
    labels = torch.randint(vocab, (tokens,), generator=generator).to(args.device)
    chunk = EVAL_CHUNK if not args.quick else 64  # several chunks, so that both calls take the chunked path
    calls = {
        "before (gradients taken in forward)": lambda: LinearCrossEntropy.apply(
            features, head.weight, head.bias, labels, chunk
        ),
        "after (loss only)": lambda: chunked_cross_entropy(features, labels, head, chunk, head),
    }
    times = {name: [] for name in calls}
    with torch.no_grad():
        for round_ in range(args.eval_rounds + 1):
            for name, call in calls.items():
                sync(args.device)
                start = time.perf_counter()
                call()
                sync(args.device)
                if round_ > 0:
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    before, after = median.values()
    print(
        f"\n| loss under torch.no_grad(), V = {vocab:,}, N = {tokens:,}, H = {width}, chunks of {chunk} "
        "| seconds per call |"
    )
    print("|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds:.4f} |")
    print(f"| before / after | {before / after:.2f}x |")
    return {"vocab": vocab, "tokens": tokens, "width": width, "chunk": chunk, "seconds": median}


def bench_collator(args, tokenizer, texts) -> None:
    collator = RetroMAECollator(tokenizer, max_length=512, decoder_mask="dense")  # the layout docs/benchmarks.md timed
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

    from retromae_hf.export import export_sentence_transformer, native_encoder

    torch.manual_seed(0)
    config = RetroMAEConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **BERT_SHAPES[args.encode_shape])
    model = RetroMAEForPreTraining(config).eval()
    model.save_pretrained(workdir / "checkpoint")
    tokenizer.save_pretrained(workdir / "checkpoint")
    export = export_sentence_transformer(workdir / "checkpoint", workdir / "export")
    plain_dir = workdir / "plain-bert"
    native_encoder(model).save_pretrained(plain_dir)
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
    rss_before = _reset_peak_rss()
    if workload in ("retromae-step", "mlm-step"):
        collator = RetroMAECollator(tokenizer, max_length=args.seq_len, decoder_mask=args.decoder_mask)
        batch = {k: v.to(args.device) for k, v in collator(texts[: args.batch_size]).items()}
        config = encoder_config(args.encode_shape)
        if workload == "retromae-step":
            retromae_config = RetroMAEConfig(encoder=config, loss_chunk_size=args.loss_chunk_size)
            model, inputs = RetroMAEForPreTraining(retromae_config), batch
        else:
            from transformers import AutoModelForMaskedLM

            model = AutoModelForMaskedLM.from_config(config)
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
                   "--encode-shape", args.encode_shape, "--loss-chunk-size", str(args.loss_chunk_size),
                   "--decoder-mask", args.decoder_mask]  # fmt: skip
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
    parser.add_argument(
        "--shapes", nargs="+", choices=list(SHAPES), help="default: small and bert-base; with --quick, all but small"
    )
    parser.add_argument(
        "--quick", action="store_true", help="every architecture at a tiny shape, short sequences: a smoke run"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument(
        "--loss-chunk-size",
        type=int,
        default=RetroMAEConfig().loss_chunk_size,
        help="RetroMAEConfig.loss_chunk_size (default: %(default)s, as training; 0: one unchunked projection, the "
        "layout before chunked losses)",
    )
    parser.add_argument(
        "--decoder-mask",
        choices=["compact", "dense"],
        default="compact",
        help="the collator's decoder mask: compact (as training) or the dense [B, L, L] layout",
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--collator-rounds", type=int, default=2)
    parser.add_argument("--encode-shape", choices=sorted(BERT_SHAPES), default="small")
    parser.add_argument("--encode-rounds", type=int, default=3)
    parser.add_argument(
        "--fused-cross-entropy",
        action="store_true",
        help="RetroMAEConfig.fused_cross_entropy (liger-kernel or cut-cross-entropy on CUDA; else the chunked loss)",
    )
    parser.add_argument("--eval-rounds", type=int, default=5, help="timed calls of each no-grad loss (median)")
    parser.add_argument("--json", type=Path, help="also write the model and eval-loss measurements to this file")
    parser.add_argument("--skip", nargs="*", default=[], choices=["model", "eval-loss", "collator", "encode", "memory"])
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.shapes = args.shapes or [shape for shape in SHAPES if shape != "small"]
        args.batch_size, args.seq_len = 2, 64
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
        args.skip = sorted({*args.skip, "collator", "encode", "memory"})
    args.shapes = args.shapes or ["small", "bert-base"]
    if args.memory_probe:
        memory_probe(args.memory_probe, args)
        return

    tokenizer, texts = load_tokenizer_and_texts(max(args.batch_size, 128))
    print(
        f"device={args.device} dtype={args.dtype} attn={args.attn} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    results = {"device": args.device, "dtype": args.dtype, "torch": torch.__version__, "models": []}
    if "model" not in args.skip:
        print(
            "\n| shape | masked-LM model | batch | RetroMAE loss | MLM tokens/s (logits everywhere) "
            "| sparse MLM tokens/s (labelled only) | RetroMAE tokens/s | step ratio vs MLM | vs sparse MLM |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for shape in args.shapes:
            results["models"].append(bench_model(shape, args, tokenizer, texts))
    if "eval-loss" not in args.skip:
        results["eval_loss"] = bench_eval_loss(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
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
