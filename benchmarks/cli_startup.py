"""How long the command line takes to answer `--help`, beside the bare interpreter and the heavy imports it avoids.

Each command is run as a fresh process, alternating the commands round by round so that all of them see the same
machine state; the median wall time of each is reported, with its ratio to `python -c pass`. `import torch` and
`import transformers` (with its Auto classes) are measured too: what `--help` would cost if the parser imported
them.

It also times `train` mistakes (docs/design.md), each of which must exit with code 2: a missing corpus file, a
misspelt recipe key and a user's folder given to `--overwrite-output-dir` are refused before torch, tokenizers or
data load; a misspelt `training.*` key needs `TrainingArguments`' field list, which imports transformers and torch.

Run by hand (not part of the test suite):

    python benchmarks/cli_startup.py [--rounds 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent)

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "retromae-hf --help": [sys.executable, "-m", "retromae_hf", "--help"],
    "retromae-hf train --help": [sys.executable, "-m", "retromae_hf", "train", "--help"],
    "retromae-hf evaluate --help": [sys.executable, "-m", "retromae_hf", "evaluate", "--help"],
    "retromae-hf --version": [sys.executable, "-m", "retromae_hf", "--version"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import transformers.AutoModel": [sys.executable, "-c", "from transformers import AutoModel"],
}
_TRAIN = [sys.executable, "-m", "retromae_hf", "train", "--stage", "1", "--model", "scratch", "--tokenizer", "tok"]
#: Mistakes `train` refuses with exit code 2 (run in an empty folder holding only `users-folder/notes.txt`).
REFUSALS = {
    "train: missing --corpus file": [*_TRAIN, "--corpus", "missing.txt"],
    "train: misspelt recipe key": [*_TRAIN, "--corpus", "c.txt", "--set", "max_lenght=64"],
    # TrainingArguments' fields and types are read from transformers, which imports torch: the one slow refusal.
    "train: misspelt training key": [*_TRAIN, "--corpus", "c.txt", "--set", "training.learnig_rate=1e-4"],
    "train: user's folder + --overwrite-output-dir": [
        *_TRAIN,
        "--corpus",
        "c.txt",
        "--output-dir",
        "users-folder",
        "--overwrite-output-dir",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (default: %(default)s)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in [*COMMANDS, *REFUSALS]}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "users-folder").mkdir()
        Path(folder, "users-folder", "notes.txt").write_text("notes\n")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
        for _ in range(args.rounds):
            for name, command in [*COMMANDS.items(), *REFUSALS.items()]:
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, cwd=folder, env=environment)
                times[name].append(time.perf_counter() - start)
                if done.returncode != (2 if name in REFUSALS else 0):
                    raise SystemExit(f"{name}: exit code {done.returncode}\n{done.stderr.decode()[-2000:]}")
    base = statistics.median(times["python -c pass"])
    print(f"| command | median wall time (s, {args.rounds} runs) | ratio to `python -c pass` |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median / base:.1f} |")


if __name__ == "__main__":
    main()
