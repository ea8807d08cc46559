"""Pre-training at scale, measured: corpus preparation, cache size, time to the first training step.

- **Preparation throughput**: `retromae-hf prepare` (`prepare.prepare_corpus`) of the same corpus with 1, 2, ...
  processes (`--procs`), tokens/s each, beside the single-process `data.tokenize_corpus` path that `train` uses
  when it tokenizes a corpus itself (one core: `TOKENIZERS_PARALLELISM=false`).
- **Size on disk**: the prepared shards against the text, and against the `datasets` cache that `tokenize_corpus`
  writes (`input_ids` + `word_ids`, int32), alone and with the copy of the text that `load_corpus` writes into the
  cache first; and the seconds the shards' SHA-256 check takes (what `train` pays before reading a prepared folder).
- **Time to the first step**: `retromae-hf train --stage 1` of a tiny model, from the command's start to the first
  logged step, on the prepared folder, on the text streamed, and on the text tokenized by the run (a cold
  `datasets` cache, then a warm one).

Run by hand (not part of the test suite); results go to stdout as JSON and a Markdown table:

    OMP_NUM_THREADS=1 python benchmarks/scaling.py                           # ../shared/data/corpus, BERT vocabulary
    python benchmarks/scaling.py --procs 1 2 4 8 --corpus /data/wiki.txt --tokenizer bert-base-uncased
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = (
    "model_config={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, "
    "max_position_embeddings: 512}"
)


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(path.stat().st_size for path in folder.rglob(pattern) if path.is_file())


def measure_prepare(tokenizer, corpus: list[str], procs: int, workdir: Path, max_length: int) -> dict:
    from retromae_hf.prepare import prepare_corpus

    started = time.perf_counter()
    manifest = prepare_corpus(
        tokenizer, corpus, workdir / f"prepared-{procs}", max_length=max_length, num_proc=procs, shard_bytes=8 << 20
    )
    seconds = time.perf_counter() - started
    totals = manifest["totals"]
    from retromae_hf.prepare import file_sha256

    checked = time.perf_counter()  # what `train` pays on every rank before reading a prepared folder
    for shard in manifest["shards"]:
        assert file_sha256(workdir / f"prepared-{procs}" / "shards" / shard["shard"]) == shard["sha256"]
    checksum_seconds = time.perf_counter() - checked
    return {
        "checksum_s": round(checksum_seconds, 3),
        "procs": procs,
        "seconds": round(seconds, 2),
        "tokens": totals["tokens"],
        "tokens_per_s": round(totals["tokens"] / seconds),
        "tokens_per_cpu_s": round(totals["tokens"] / totals["cpu_seconds"]),
        "text_bytes": totals["text_bytes"],
        "shard_bytes": totals["shard_bytes"],
        "size_ratio": round(totals["shard_bytes"] / totals["text_bytes"], 3),
        "shards": len(manifest["shards"]),
    }


def measure_tokenize_corpus(tokenizer, corpus: list[str], workdir: Path, max_length: int) -> dict:
    from retromae_hf.data import load_corpus, tokenize_corpus

    cache = workdir / "datasets-cache"
    texts = load_corpus(corpus, cache_dir=str(cache))
    started = time.perf_counter()
    tokenized = tokenize_corpus(texts, tokenizer, max_length=max_length)
    seconds = time.perf_counter() - started
    tokens = sum(len(row) for row in tokenized["input_ids"])
    text_bytes = sum(Path(path).stat().st_size for path in corpus)
    cache_bytes = sum(Path(f["filename"]).stat().st_size for f in tokenized.cache_files)
    everything = folder_bytes(cache)  # the tokens and the copy of the text that `load_corpus` writes first
    return {
        "procs": 1,
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds),
        "cache_bytes": cache_bytes,
        "size_ratio": round(cache_bytes / text_bytes, 3),
        "cache_folder_bytes": everything,
        "cache_folder_ratio": round(everything / text_bytes, 3),
    }


def time_to_first_step(args: list[str], env: dict[str, str], output_dir: Path) -> float:
    """Seconds from the command's start to the first logged training step."""
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "retromae_hf", *args], env=env, capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    first = json.loads((output_dir / "training_log.jsonl").read_text().splitlines()[0])
    return round(first["time"] - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", default=[str(p) for p in sorted((SHARED / "data/corpus").glob("*.txt"))])
    parser.add_argument("--tokenizer", default=str(SHARED / "models/all-MiniLM-L6-v2"))
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--skip-first-step", action="store_true")
    options = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(options.tokenizer)
    results: dict = {"cores_available": len(os.sched_getaffinity(0)), "corpus": options.corpus}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["tokenize_corpus"] = measure_tokenize_corpus(tokenizer, options.corpus, workdir, options.max_length)
        results["prepare"] = [
            measure_prepare(tokenizer, options.corpus, procs, workdir, options.max_length) for procs in options.procs
        ]
        if not options.skip_first_step:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(workdir / "c")}
            common = ["train", "--stage", "1", "--model", "scratch", "--tokenizer", options.tokenizer,
                      "--max-length", str(options.max_length), "--no-evaluate", "--set", TINY, "--max-steps", "2",
                      "--set", "training.logging_steps=1", "--set", "training.per_device_train_batch_size=4"]  # fmt: skip
            prepared = str(workdir / f"prepared-{options.procs[0]}")
            runs = {
                "prepared": ["--corpus", prepared],
                "streamed": ["--corpus", *options.corpus, "--streaming"],
                "tokenized by the run (cold cache)": ["--corpus", *options.corpus],
                "tokenized by the run (warm cache)": ["--corpus", *options.corpus],
            }
            results["first_step_s"] = {}
            for index, (name, extra) in enumerate(runs.items()):
                output_dir = workdir / f"run{index}"
                results["first_step_s"][name] = time_to_first_step(
                    [*common, *extra, "--output-dir", str(output_dir)], env, output_dir
                )
    print(json.dumps(results, indent=2))
    print(
        "\n| path | processes | tokens/s | tokens per worker CPU-second | size on disk / text |\n|---|---|---|---|---|"
    )
    base = results["tokenize_corpus"]
    print(
        f"| tokenize_corpus (train) | 1 | {base['tokens_per_s']:,} | | {base['size_ratio']:.2f}x (the whole cache "
        f"folder, text copy included: {base['cache_folder_ratio']:.2f}x) |"
    )
    for row in results["prepare"]:
        print(
            f"| prepare | {row['procs']} | {row['tokens_per_s']:,} | {row['tokens_per_cpu_s']:,} | "
            f"{row['size_ratio']:.2f}x |"
        )
    for name, seconds in results.get("first_step_s", {}).items():
        print(f"| first step: {name} | | {seconds} s | |")


if __name__ == "__main__":
    main()
