"""`retromae-hf train` under torchrun (gloo, CPU): run by `tests/test_scaling.py`, not collected by pytest.

Usage: `torchrun --nproc_per_node 2 tests/distributed_training.py RECORD_DIR [KILL_AFTER_STEP] -- TRAIN ARGS...`.

Every rank records what its own collator batched (`RECORD_DIR/batches-rank{R}.jsonl`: one line per batch, the
token ids of its examples), so the test can tell which data each rank read and that each rank collated its own
batches. With KILL_AFTER_STEP > 0, every rank kills itself with SIGKILL as soon as the checkpoint of that step is
in place: an interruption as hard as a lost machine, after which `--resume` must continue exactly.
"""

import json
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    separator = sys.argv.index("--")
    record_dir, kill_after = Path(sys.argv[1]), int(sys.argv[2]) if separator > 2 else 0
    train_args = sys.argv[separator + 1 :]
    rank = int(os.environ.get("RANK", "0"))
    record_dir.mkdir(parents=True, exist_ok=True)
    log = (record_dir / f"batches-rank{rank}.jsonl").open("a", encoding="utf-8")

    from transformers import TrainerCallback

    from retromae_hf import collator, training

    original = collator.RetroMAECollator.__call__

    def recording_call(self, examples):
        ids = [[int(t) for t in (e["input_ids"] if isinstance(e, dict) else [])] for e in examples]
        log.write(json.dumps(ids) + "\n")
        log.flush()
        return original(self, examples)

    collator.RetroMAECollator.__call__ = recording_call

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if kill_after and state.global_step >= kill_after:
                log.close()
                os.kill(os.getpid(), signal.SIGKILL)

    original_init = training.RetroMAETrainer.__init__

    def init_with_kill(self, *args, callbacks=None, **kwargs):
        original_init(self, *args, callbacks=[*(callbacks or []), KillAfterCheckpoint()], **kwargs)

    training.RetroMAETrainer.__init__ = init_with_kill

    from retromae_hf.cli import main as cli_main

    return cli_main(train_args)


if __name__ == "__main__":
    sys.exit(main())
