"""Long inputs, side by side: the dense decoder mask and unchunked losses ("before") against the compact mask and
chunked losses ("after"), and both against the architecture's own masked-LM step, with logits at every position
("mlm") and at the labelled positions only ("mlm_sparse": ModernBERT's `sparse_prediction`, how it is trained).

For each length L (batch of `--batch-size` documents of exactly L tokens, from the shared Gutenberg text, tokenized
with the bert-base-uncased WordPiece vocabulary of ../shared/models/all-MiniLM-L6-v2):

- **batch bytes**: what `RetroMAECollator` hands over, `decoder_mask="dense"` (`[B, L, L]` uint8) vs
  `"compact"` (`[B, P, L]` bool pool + `[B, L]` picks), all keys counted;
- **collation time per token**, one thread, both forms (best of `--repeats`), and its ratio to the shortest length;
- **peak memory and step time** of one training step (forward + backward, no optimizer) of a tiny ModernBERT
  (hidden 64, 2 layers, 4 heads, vocabulary 50,368 as ModernBERT's tokenizer) at L: `ModernBertForMaskedLM` on
  the encoder's masked input (as it is, and with `sparse_prediction=True`), RetroMAE "before" (dense mask,
  `loss_chunk_size=0`, the code path before the compact mask and chunked losses) and RetroMAE "after" (compact
  mask, chunked losses: the defaults training uses). Each is measured in a fresh subprocess (one thread): peak RSS
  from `resource.getrusage` (the process's lifetime maximum, which covers torch's allocations, unlike
  tracemalloc), the step's growth over the RSS just before it, and the best time of the later steps (the first one
  warms up; the machine is shared, so the best is the least disturbed).

Run: `python benchmarks/long_context.py` (all lengths, ~15 min on 2 CPU cores), or
`python benchmarks/long_context.py --quick --lengths 512,2048` for a short check. The "done when" checks of the
long-context issue are printed for the longest length. Numbers: docs/benchmarks.md, "Long documents".

**Device mode** (`--device cuda`, or `--device cpu` for a dry run): all variants in one process, alternated step
by step, for every batch size of `--batch-sizes` until each variant runs out of memory (`--shape base`:
ModernBERT-base's shape, random weights; `--dtype bf16`: autocast as training with `bf16`). Per variant and batch:
median step time, tokens/s, and on CUDA the step's peak allocation above what was allocated before it
(`torch.cuda.max_memory_allocated`). For "after" it also times the decoder alone (compact mask expansion,
attention, feed-forward; forward + backward from a sentence vector, without its vocabulary loss): its share of the
RetroMAE step. `--json` writes everything, the tables go to stdout (Markdown). `benchmarks/gpu/speed.sh` runs it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETROMAE_SHARED", REPO.parent / "shared"))
TOKENIZER = SHARED / "models" / "all-MiniLM-L6-v2"
TEXT = SHARED / "data" / "corpus" / "gutenberg_en.txt"
VOCAB_SIZE = 50368  # ModernBERT's tokenizer; the WordPiece ids used here (< 30,522) are all inside it
VARIANTS = ("mlm", "mlm_sparse", "before", "after")
DEVICE_VARIANTS = ("mlm", "mlm_sparse", "after")  # device mode's default: "before" needs [B, L, L] masks
logger = logging.getLogger("long_context")


def _need_shared() -> None:
    missing = [str(path) for path in (TOKENIZER, TEXT) if not path.exists()]
    if missing:
        raise SystemExit(f"long_context.py needs the project's shared data beside the checkout; missing: {missing}")


def load_tokens(max_tokens: int):
    """(tokenizer, token ids, word ids) of the start of the Gutenberg text, at least `max_tokens` long."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    tokenizer.model_max_length = 10**9  # whole text at once; documents are cut below
    characters = max_tokens * 6
    with open(TEXT, encoding="utf-8") as handle:
        text = handle.read(characters)
    encoded = tokenizer(text, add_special_tokens=False)
    if len(encoded["input_ids"]) < max_tokens:
        raise SystemExit(f"{TEXT} is too short for {max_tokens} tokens")
    return tokenizer, encoded["input_ids"], encoded.word_ids()


def documents(tokenizer, ids, words, length: int, batch: int) -> list[dict]:
    """`batch` pre-tokenized documents of exactly `length` tokens ([CLS] body [SEP]), as `tokenize_corpus` makes."""
    body = length - 2
    out = []
    for row in range(batch):
        start = row * body
        piece, piece_words = ids[start : start + body], words[start : start + body]
        first = piece_words[0]
        out.append(
            {
                "input_ids": [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id],
                "word_ids": [-1, *[w - first for w in piece_words], -1],
            }
        )
    return out


def collate(tokenizer, examples, length: int, form: str):
    from retromae_hf import RetroMAECollator

    return RetroMAECollator(tokenizer, max_length=length, decoder_mask=form, seed=0)(examples)


def batch_bytes(batch) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in batch.values())


def collation_seconds(tokenizer, batches: dict[int, list], repeats: int) -> dict[tuple[int, str], float]:
    """Best time of `repeats` collations per (length, form), fresh masks each time (`set_epoch`).

    Rounds go over every length and form in turn, so that a busy spell of a shared machine slows all of them
    alike instead of one length's measurements; the best of the rounds is the least disturbed one.
    """
    from retromae_hf import RetroMAECollator

    collators = {
        (length, form): RetroMAECollator(tokenizer, max_length=length, decoder_mask=form, seed=0)
        for length in batches
        for form in ("dense", "compact")
    }
    best = dict.fromkeys(collators, float("inf"))
    for (length, _), collator in collators.items():
        collator(batches[length])  # warm-up
    for epoch in range(1, repeats + 1):
        for key, collator in collators.items():
            collator.set_epoch(epoch)
            start = time.perf_counter()
            collator(batches[key[0]])
            best[key] = min(best[key], time.perf_counter() - start)
    return best


# ------------------------------------------------------------------------------------------------ one step
def tiny_modernbert(length: int, shape: str = "tiny"):
    """The ModernBERT config of the measurements: hidden 64 and 2 layers ("tiny"), or ModernBERT-base's shape
    ("base": 22 layers, hidden 768, local attention in 2 of 3 layers), with ModernBERT's vocabulary size."""
    from transformers import AutoConfig

    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    if shape == "base":  # answerdotai/ModernBERT-base's config.json values that set the cost
        sizes = dict(
            hidden_size=768,
            num_hidden_layers=22,
            num_attention_heads=12,
            intermediate_size=1152,
            global_attn_every_n_layers=3,
            local_attention=128,
        )
    return AutoConfig.for_model(
        "modernbert",
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=max(length, 512),
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        bos_token_id=101,
        eos_token_id=102,
        **sizes,
    )


def build_variant(variant: str, config, loss_chunk_size: int):
    """`(model, step)` of one variant: `step(batch)` runs forward + backward of a training step on `batch`."""
    if variant in ("mlm", "mlm_sparse"):
        from transformers import AutoModelForMaskedLM

        model = AutoModelForMaskedLM.from_config(config)
        model.sparse_prediction = variant == "mlm_sparse"  # ModernBERT's own option (read at each forward)

        def step(batch):
            loss = model(
                input_ids=batch["encoder_input_ids"],
                attention_mask=batch["encoder_attention_mask"],
                labels=batch["encoder_labels"],
            ).loss
            loss.backward()

        return model, step
    from retromae_hf import RetroMAEConfig, RetroMAEForPreTraining

    retromae_config = RetroMAEConfig(encoder=config, loss_chunk_size=0 if variant == "before" else loss_chunk_size)
    model = RetroMAEForPreTraining(retromae_config)

    def step(batch):
        model(**batch).loss.backward()

    return model, step


def decoder_only_step(model, batch):
    """Forward + backward of the RetroMAE decoder alone (compact mask, one layer, no vocabulary loss), from a
    sentence vector that requires gradients: the decoder's own part of a step."""
    import torch

    from retromae_hf.modeling_retromae import decoder_mask_from

    real = batch["encoder_attention_mask"].bool()
    sentence = torch.randn(real.shape[0], model.config.hidden_size, device=real.device, requires_grad=True)

    def step(_batch=None):
        mask = decoder_mask_from(
            None,
            batch["decoder_mask_pool"],
            batch["decoder_mask_pick"],
            real,
            model.config.decoder_attention_block_size,
        )
        model.decode(sentence, batch["decoder_input_ids"], mask).float().square().mean().backward()

    return step


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_step(variant: str, length: int, batch_size: int, steps: int, loss_chunk_size: int = 4096) -> dict:
    """One variant's training steps in this (fresh) process: peak RSS, growth over the pre-step RSS, step time."""
    import torch

    torch.set_num_threads(1)
    tokenizer, ids, words = load_tokens(length * batch_size)
    examples = documents(tokenizer, ids, words, length, batch_size)
    batch = collate(tokenizer, examples, length, "dense" if variant == "before" else "compact")
    del ids, words
    torch.manual_seed(0)
    model, one_step = build_variant(variant, tiny_modernbert(length), loss_chunk_size)
    model.train()

    def step():
        one_step(batch)

    gc.collect()
    before = _rss_mib()
    times = []
    peak_after_first = None
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if peak_after_first is None:
            peak_after_first = _peak_mib()
    return {
        "variant": variant,
        "length": length,
        "peak_mib": round(peak_after_first, 1),
        "step_growth_mib": round(peak_after_first - before, 1),
        "step_s": round(min(times[1:] or times), 3),
    }


def measure_step(variant: str, length: int, batch_size: int, steps: int, loss_chunk_size: int = 4096) -> dict:
    """`run_step` in a fresh subprocess, so that each peak is that variant's alone."""
    command = [sys.executable, __file__, "--step", variant, "--lengths", str(length)]
    command += ["--batch-size", str(batch_size), "--steps", str(steps), "--loss-chunk-size", str(loss_chunk_size)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        return {"variant": variant, "length": length, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ device mode
def measure_on_device(args, tokenizer, ids, words, length: int) -> dict:
    """Every variant in this process on `args.device`, alternated step by step, at each batch size in turn until
    each variant runs out of memory (or `args.time_budget` seconds have passed): median step time, tokens/s and,
    on CUDA, the step's peak allocation above what was allocated before it."""
    import torch

    device, cuda = torch.device(args.device), args.device == "cuda"
    autocast = {"fp32": None, "bf16": torch.bfloat16}[args.dtype]
    started = time.perf_counter()
    torch.manual_seed(0)
    config = tiny_modernbert(length, args.shape)
    models, steps = {}, {}
    for variant in args.variants:
        model, step = build_variant(variant, config, args.loss_chunk_size)
        models[variant] = model.to(device).train()
        steps[variant] = step
    if "after" in models:
        variants = [*args.variants, "decoder"]
        models["decoder"] = models["after"]
    else:
        variants = list(args.variants)
    out_of_memory: set[str] = set()
    rows = []

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for batch_size in args.batch_sizes:
        if time.perf_counter() - started > args.time_budget:
            logger.info("time budget of %d s spent: no larger batch", args.time_budget)
            break
        alive = [v for v in variants if v not in out_of_memory and (v != "decoder" or "after" not in out_of_memory)]
        if not alive:
            break
        examples = documents(tokenizer, ids, words, length, batch_size)
        batches = {}
        for form in {"dense" if v == "before" else "compact" for v in alive}:
            batches[form] = {k: v.to(device) for k, v in collate(tokenizer, examples, length, form).items()}
        if "decoder" in alive:
            steps["decoder"] = decoder_only_step(models["after"], batches["compact"])
        times = {v: [] for v in alive}
        growth = dict.fromkeys(alive, 0.0)
        for round_ in range(args.steps + 1):  # round 0 warms up
            for variant in alive:
                if variant in out_of_memory:
                    continue
                model = models[variant]
                model.zero_grad(set_to_none=True)
                batch = batches["dense" if variant == "before" else "compact"]
                sync()
                idle = torch.cuda.memory_allocated() if cuda else 0
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                try:
                    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                        steps[variant](batch)
                    sync()
                except torch.cuda.OutOfMemoryError:
                    out_of_memory.add(variant)
                elapsed = time.perf_counter() - start
                if variant in out_of_memory:
                    # Outside the handler, so that the traceback's frames (and the step's tensors) are gone first.
                    model.zero_grad(set_to_none=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                    logger.info("L=%d batch %d %s: out of memory", length, batch_size, variant)
                    continue
                if cuda:
                    growth[variant] = max(growth[variant], (torch.cuda.max_memory_allocated() - idle) / 2**20)
                model.zero_grad(set_to_none=True)
                if round_ > 0:
                    times[variant].append(elapsed)
        for variant in alive:
            if variant in out_of_memory or not times[variant]:
                rows.append({"length": length, "batch": batch_size, "variant": variant, "error": "out of memory"})
                continue
            seconds = statistics.median(times[variant])
            row = {
                "length": length,
                "batch": batch_size,
                "variant": variant,
                "step_s": round(seconds, 5),
                "tokens_per_s": round(length * batch_size / seconds, 1),
                "step_peak_mib": round(growth[variant], 1) if cuda else None,
            }
            rows.append(row)
            logger.info("L=%d batch %d %s: %s", length, batch_size, variant, row)
        del batches
        if cuda:
            torch.cuda.empty_cache()
    return {"length": length, "rows": rows}


def device_report(results: list[dict], args) -> str:
    """Markdown: one row per (length, batch) with every variant, the ratios of RetroMAE ("after") to both
    anchors, and the decoder's share of the RetroMAE step; then the largest batch each variant ran."""
    lines = [
        f"device {args.device}, {args.shape} ModernBERT (vocabulary {VOCAB_SIZE:,}), {args.dtype}, median of "
        f"{args.steps} step(s) after a warm-up, variants alternated step by step",
        "",
        "| L | batch | variant | step s | tokens/s | step peak MiB above idle | time / MLM | time / sparse MLM "
        "| peak / MLM | peak / sparse MLM | share of the RetroMAE step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    largest: dict[tuple[int, str], int] = {}
    for result in results:
        by_batch: dict[int, dict[str, dict]] = {}
        for row in result["rows"]:
            by_batch.setdefault(row["batch"], {})[row["variant"]] = row
        for batch_size, variants in by_batch.items():
            for variant, row in variants.items():
                if "error" in row:
                    lines.append(f"| {row['length']:,} | {batch_size} | {variant} | {row['error']} |" + " |" * 7)
                    continue
                largest[row["length"], variant] = batch_size
                cells = [f"{row['step_s']:.4f}", f"{row['tokens_per_s']:,.0f}", _fmt_peak(row["step_peak_mib"])]
                for measure in ("step_s", "step_peak_mib"):
                    for anchor in ("mlm", "mlm_sparse"):
                        other = variants.get(anchor, {})
                        ok = variant == "after" and other.get(measure) and row.get(measure) is not None
                        cells.append(f"{row[measure] / other[measure]:.2f}" if ok else "")
                after = variants.get("after", {})
                share = variant == "decoder" and after.get("step_s")
                cells.append(f"{row['step_s'] / after['step_s']:.0%}" if share else "")
                lines.append(f"| {row['length']:,} | {batch_size} | {variant} | " + " | ".join(cells) + " |")
    lines += ["", "| L | variant | largest batch that ran |", "|---|---|---|"]
    for (length, variant), batch_size in largest.items():
        lines.append(f"| {length:,} | {variant} | {batch_size} |")
    lines.append(
        "\ndecoder: the RetroMAE decoder alone (compact mask expanded block by block, its layer; forward + backward "
        "from a sentence vector, without its vocabulary loss), timed beside the steps."
    )
    return "\n".join(lines)


def _fmt_peak(value: float | None) -> str:
    return "not measured (CPU)" if value is None else f"{value:,.0f}"


def device_main(args, lengths: list[int]) -> int:
    """The device mode: measure, print the Markdown report, write `--json`."""
    import torch

    args.batch_sizes = [int(value) for value in args.batch_sizes.split(",") if value]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("long_context.py: --device cuda, but torch sees no CUDA device here")
    tokenizer, ids, words = load_tokens(max(lengths) * max(args.batch_sizes))
    results = [measure_on_device(args, tokenizer, ids, words, length) for length in lengths]
    report = device_report(results, args)
    print(report)
    if args.json:
        machine = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
        environment = {"machine": machine, "torch": torch.__version__, "dtype": args.dtype, "shape": args.shape}
        args.json.write_text(json.dumps({**environment, "steps": args.steps, "results": results}, indent=2))
    return 0


# ------------------------------------------------------------------------------------------------ report
def _fmt_mib(value: float) -> str:
    return f"{value:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192", help="comma-separated sequence lengths")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one timed collation and one step per measurement")
    parser.add_argument("--no-steps", action="store_true", help="batch bytes and collation time only")
    parser.add_argument("--repeats", type=int, default=5, help="collations per form and length (best is kept)")
    parser.add_argument(
        "--steps", type=int, default=3, help="training steps per subprocess (the best after the first is reported)"
    )
    parser.add_argument(
        "--loss-chunk-size", type=int, default=4096, help='RetroMAE\'s loss_chunk_size for the "after" variant'
    )
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--step", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one subprocess measurement
    device = parser.add_argument_group("device mode (one process, variants alternated)")
    device.add_argument("--device", choices=["cpu", "cuda"], help="run the device mode on this device")
    device.add_argument("--shape", choices=["tiny", "base"], default="tiny", help="ModernBERT width and depth")
    device.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="autocast dtype")
    device.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="tried in turn until out of memory")
    device.add_argument(
        "--variants",
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all; device mode: {','.join(DEVICE_VARIANTS)})",
    )
    device.add_argument("--time-budget", type=float, default=300, help="seconds; no larger batch is started after")
    args = parser.parse_args(argv)
    lengths = [int(value) for value in args.lengths.split(",") if value]
    default = DEVICE_VARIANTS if args.device else VARIANTS
    args.variants = [value for value in args.variants.split(",") if value] if args.variants else list(default)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"long_context.py: unknown --variants {unknown}; choose among {', '.join(VARIANTS)}")
    _need_shared()
    if args.step:
        print(json.dumps(run_step(args.step, lengths[0], args.batch_size, args.steps, args.loss_chunk_size)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device:
        return device_main(args, lengths)
    repeats, steps = (1, 1) if args.quick else (args.repeats, args.steps)

    import torch

    torch.set_num_threads(1)
    tokenizer, ids, words = load_tokens(max(lengths) * args.batch_size)
    batches = {length: documents(tokenizer, ids, words, length, args.batch_size) for length in lengths}
    seconds = collation_seconds(tokenizer, batches, repeats)
    rows = []
    for length in lengths:
        row = {"length": length, "tokens": length * args.batch_size}
        for form in ("dense", "compact"):
            row[f"{form}_bytes"] = batch_bytes(collate(tokenizer, batches[length], length, form))
            row[f"{form}_us_per_token"] = seconds[length, form] / row["tokens"] * 1e6
        logger.info(
            "L=%d collated: dense %.1f MiB, %.2f us/token; compact %.1f MiB, %.2f us/token",
            length,
            row["dense_bytes"] / 2**20,
            row["dense_us_per_token"],
            row["compact_bytes"] / 2**20,
            row["compact_us_per_token"],
        )
        rows.append(row)
    if not args.no_steps:
        for row in rows:
            for variant in args.variants:
                row[variant] = measure_step(variant, row["length"], args.batch_size, steps, args.loss_chunk_size)
                logger.info("L=%d %s step: %s", row["length"], variant, row[variant])

    first = rows[0]
    missing = {"error": "not run"}
    print(f"\nbatch {args.batch_size} x L, tiny ModernBERT (hidden 64, 2 layers, vocab {VOCAB_SIZE}), one thread\n")
    header = (
        "| L | batch MiB dense | batch MiB compact | collation us/token dense (vs first L) | compact (vs first L) |"
    )
    print(header)
    print("|---|---|---|---|---|")
    for row in rows:
        dense_ratio = row["dense_us_per_token"] / first["dense_us_per_token"]
        compact_ratio = row["compact_us_per_token"] / first["compact_us_per_token"]
        print(
            f"| {row['length']:,} | {_fmt_mib(row['dense_bytes'] / 2**20)} | {_fmt_mib(row['compact_bytes'] / 2**20)} "
            f"| {row['dense_us_per_token']:.2f} ({dense_ratio:.2f}x) | {row['compact_us_per_token']:.2f} "
            f"({compact_ratio:.2f}x) |"
        )
    if not args.no_steps:
        print(
            "\n| L | peak MiB MLM | sparse MLM | before | after | step growth MiB MLM | sparse MLM | before | after "
            "| growth after / MLM | after / sparse MLM | step s MLM | sparse MLM | before | after |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            cells = [f"{row['length']:,}"]
            parts = [row.get(variant, missing) for variant in VARIANTS]
            cells += [_fmt_mib(p["peak_mib"]) if "peak_mib" in p else p["error"] for p in parts]
            cells += [_fmt_mib(p["step_growth_mib"]) if "peak_mib" in p else "" for p in parts]
            after = row.get("after", missing).get("step_growth_mib")
            for anchor in ("mlm", "mlm_sparse"):
                other = row.get(anchor, missing).get("step_growth_mib")
                cells.append(f"{after / other:.2f}x" if after and other else "")
            cells += [f"{p['step_s']:.2f}" if "step_s" in p else "" for p in parts]
            print("| " + " | ".join(str(cell) for cell in cells) + " |")

    last = rows[-1]
    print(f"\nchecks at {args.batch_size} x {last['length']:,} tokens:")
    compact_mib = last["compact_bytes"] / 2**20
    print(f"- collator batch (compact) {compact_mib:.1f} MiB <= 24 MiB: {'yes' if compact_mib <= 24 else 'NO'}")
    if last is not first:
        ratio = last["compact_us_per_token"] / first["compact_us_per_token"]
        print(
            f"- collation per token at {last['length']:,} vs {first['length']:,}: {ratio:.2f}x <= 1.6x: "
            f"{'yes' if ratio <= 1.6 else 'NO'}"
        )
    if not args.no_steps and "error" not in last.get("after", missing) and "error" not in last.get("mlm", missing):
        after, mlm = last["after"]["peak_mib"], last["mlm"]["peak_mib"]
        print(
            f"- RetroMAE step peak {after:,.0f} MiB <= ModernBertForMaskedLM {mlm:,.0f} MiB: "
            f"{'yes' if after <= mlm else 'NO'}"
        )
        if "error" not in last.get("mlm_sparse", missing):
            sparse = last["mlm_sparse"]["peak_mib"]
            print(f"- RetroMAE step peak / sparse-prediction masked LM's {sparse:,.0f} MiB: {after / sparse:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"batch_size": args.batch_size, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
