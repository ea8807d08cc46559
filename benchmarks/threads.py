"""Threads and the quickstart: wall and CPU time of a few training steps with torch's default threads and with one.

Why: on 2 CPU cores shared with another job, the quickstart took 32 minutes, with far more CPU time than work.
torch's intra-op threads (one per core) spin while they wait for each other; for a tiny model, whose operations
are too small to share, and on a machine where another job holds a core, that costs far more than it gives. The
quickstart recipe sets `torch_threads: 1`. Each setting runs in its own process, side by side, so both see the
same machine; compare the ratio, and note the load (printed) since the point is the behaviour under load.

    python benchmarks/threads.py --steps 60
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def one_run(threads: int, stage: int, steps: int, folder: str) -> None:
    """Train `steps` steps of the quickstart's stage (stage 2 starts from the stage-1 run in the same folder)."""
    import torch

    from retromae_hf.training import run_recipe

    overrides = {
        "training.max_steps": steps,
        "output_dir": folder,
        "training.save_steps": 100000,
        "training.logging_steps": 100000,
        "training.disable_tqdm": True,
        "torch_threads": threads or None,
    }
    start, before = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    run_recipe("quickstart", overrides, stage=stage, overwrite_output_dir=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"threads={threads or torch.get_num_threads()} (default={not threads}) stage={stage} steps={steps}: "
          f"wall {time.time() - start:.1f} s, CPU {cpu:.1f} s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)  # threads stage steps, in a child
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(*args.one, args.folder)
        return
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as root:
        for stage in args.stages:
            for threads in (0, 1):  # 0: torch's default
                # One run folder per setting: the recipe's stages go to <folder>/stage1 and <folder>/stage2, and
                # stage 2 starts from the stage-1 final folder of the same setting.
                folder = os.path.join(root, f"run-{threads}")
                subprocess.run(
                    [sys.executable, __file__, "--one", str(threads), str(stage), str(args.steps), "--folder", folder],
                    check=True, cwd=root,
                )  # fmt: skip
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
