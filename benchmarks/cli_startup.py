"""How long the command line takes to answer `--help`, beside the bare interpreter and the heavy imports it avoids.

Each command is run as a fresh process, alternating the commands round by round so that all of them see the same
machine state; the median wall time of each is reported, with its ratio to `python -c pass`. `import torch` and
`import transformers` (with its Auto classes) are measured too: what `--help` would cost if the parser imported
them.

Run by hand (not part of the test suite):

    python benchmarks/cli_startup.py [--rounds 5]
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "retromae-hf --help": [sys.executable, "-m", "retromae_hf", "--help"],
    "retromae-hf train --help": [sys.executable, "-m", "retromae_hf", "train", "--help"],
    "retromae-hf evaluate --help": [sys.executable, "-m", "retromae_hf", "evaluate", "--help"],
    "retromae-hf --version": [sys.executable, "-m", "retromae_hf", "--version"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import transformers.AutoModel": [sys.executable, "-c", "from transformers import AutoModel"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (default: %(default)s)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(f"| command | median wall time (s, {args.rounds} runs) | ratio to `python -c pass` |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median / base:.1f} |")


if __name__ == "__main__":
    main()
