#!/usr/bin/env bash
# Every GPU row of docs/benchmarks.md in one command: run from the repository root with $OUT set (an empty folder
# for what comes back), after benchmarks/gpu/prepare_speed.sh has written .gpu_speed/ (carry it).
#
#   OUT=/path/to/out bash benchmarks/gpu/speed.sh          # one GPU (sized for an H100/H200: under ~8 minutes)
#   OUT=$(mktemp -d) bash benchmarks/gpu/speed.sh --tiny   # the same stages at tiny shapes on the CPU (a dry run)
#
# Stages, one after the other, each under its own time limit and all under DEADLINE_S (default 470 s):
#   1. tests: the fused-kernel equality test (liger-kernel, carried as a wheel) and the chunked-loss tests;
#   2. long: benchmarks/long_context.py --device cuda --shape base --dtype bf16 at 8,192 tokens, batch 1, 2, 4, ...
#      until out of memory: RetroMAE against ModernBertForMaskedLM as it is and with sparse_prediction (tokens/s,
#      step peak memory), and the compact-mask decoder's share of the step;
#   3. chunked: benchmarks/train_step.py at 32 x 512 bf16, BERT-base and XLM-R-base, RetroMAE's chunked loss against
#      each one's own masked LM (logits everywhere and at labelled positions only); the no-grad loss before/after;
#   4. fused: the same with --fused-cross-entropy.
# What comes back in $OUT (rewritten after every stage, so a stage cut by the deadline loses only itself):
# report.md (the environment and every stage's Markdown tables), results.json (every stage's JSON), run.log.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [ -z "${OUT:-}" ]; then
    echo "speed.sh: set OUT to an (empty) folder where the results should go, e.g. OUT=\$(mktemp -d) bash $0" >&2
    exit 2
fi
TINY=0
case "${1:-}" in
    --tiny) TINY=1 ;;
    "") ;;
    *) echo "speed.sh: unknown option $1 (the only option is --tiny)" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
KIT=${KIT:-.gpu_speed}
SITE=${SITE:-/tmp/site_speed}
DEADLINE_S=${DEADLINE_S:-470}
START=$(date +%s)
WORK=$(mktemp -d /tmp/retromae_speed.XXXXXX)
exec > >(tee -a "$OUT/run.log") 2>&1
echo "== speed.sh started $(date -u +%FT%TZ) in $ROOT (tiny=$TINY)"

# ---------------------------------------------------------------------------------------------------- packages
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls "$KIT"/wheels/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import liger_kernel" >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$KIT"/wheels/*.whl && export PYTHONPATH="$ROOT:$SITE"
fi

# ---------------------------------------------------------------------------------------------------- data
if [ -f "$KIT/data.tar.xz" ]; then
    mkdir -p "$WORK/shared" && tar -C "$WORK/shared" -xJf "$KIT/data.tar.xz"
    export RETROMAE_SHARED=$WORK/shared
else
    export RETROMAE_SHARED=${RETROMAE_SHARED:-$ROOT/../shared}
fi

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" - <<'EOF'
import importlib.metadata as m, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
print("cuda available:", int(torch.cuda.is_available()))
for name in ("transformers", "triton", "liger-kernel", "cut-cross-entropy"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "missing")
EOF
} >"$WORK/env.txt" 2>&1
cat "$WORK/env.txt"

CUDA=$(sed -n 's/^cuda available: //p' "$WORK/env.txt")
if [ "$TINY" = 0 ] && [ "$CUDA" = 0 ]; then
    echo "speed.sh: no GPU here; the full run is for a GPU machine. Use --tiny for a dry run on a CPU." >&2
    exit 2
fi

# ---------------------------------------------------------------------------------------------------- stages
if [ "$TINY" = 1 ]; then
    DEVICE=(--device cpu)
    LONG=(--shape tiny --lengths 64 --batch-sizes 1,2 --steps 1 --time-budget 60)
    STEP=(--quick --shapes bert-base --steps 1 --warmup 0 --eval-rounds 1)
    TESTS=(tests/test_modeling.py -k "fused_cross_entropy or linear_cross_entropy_gradients")
else
    DEVICE=(--device cuda)
    LONG=(--shape base --dtype bf16 --lengths 8192 --batch-sizes 1,2,4,8,16,32 --steps 3 --time-budget 150)
    STEP=(--dtype bf16 --batch-size 32 --seq-len 512 --shapes bert-base xlm-roberta-base --steps 10 --warmup 3)
    TESTS=(tests/test_modeling.py -k "fused_cross_entropy or linear_cross_entropy or without_grad_mode")
fi

report() {
    # report.md and results.json from what has finished so far, each written beside and renamed into place.
    {
        echo "# speed.sh report ($(date -u +%FT%TZ), tiny=$TINY)"
        echo; echo '```'; cat "$WORK/env.txt"; echo '```'
        for stage in tests long chunked fused; do
            [ -f "$WORK/$stage.md" ] || continue
            echo; echo "## $stage (exit $(cat "$WORK/$stage.rc" 2>/dev/null || echo '?'))"; echo
            cat "$WORK/$stage.md"
        done
    } >"$OUT/.report.md.tmp" && mv "$OUT/.report.md.tmp" "$OUT/report.md"
    "$PYTHON" - "$WORK" "$OUT" <<'EOF'
import json, os, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
results = {}
for stage in ("long", "chunked", "fused"):
    path = work / f"{stage}.json"
    if path.exists():
        results[stage] = json.loads(path.read_text())
for stage in ("tests", "long", "chunked", "fused"):
    rc = work / f"{stage}.rc"
    if rc.exists():
        results.setdefault("exit_codes", {})[stage] = int(rc.read_text())
(out / ".results.json.tmp").write_text(json.dumps(results, indent=2))
os.replace(out / ".results.json.tmp", out / "results.json")
EOF
}

# run_stage NAME CAP_S COMMAND...: COMMAND under min(CAP_S, what is left of DEADLINE_S); stdout to NAME.md.
run_stage() {
    local name=$1 cap=$2 left
    shift 2
    left=$((DEADLINE_S - ($(date +%s) - START)))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -le 5 ]; then
        echo "== $name: skipped, the deadline of $DEADLINE_S s is reached"
        echo "skipped: deadline reached" >"$WORK/$name.md"
        echo 124 >"$WORK/$name.rc"
        return
    fi
    echo "== $name (limit $cap s, at $(($(date +%s) - START)) s): $*"
    timeout --signal=TERM --kill-after=10 "$cap" "$@" >"$WORK/$name.md"
    echo $? >"$WORK/$name.rc"
    echo "== $name: exit $(cat "$WORK/$name.rc") ($(($(date +%s) - START)) s)"
    report
}

run_stage tests 90 "$PYTHON" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
run_stage long 200 "$PYTHON" benchmarks/long_context.py "${DEVICE[@]}" "${LONG[@]}" --json "$WORK/long.json"
run_stage chunked 120 "$PYTHON" benchmarks/train_step.py "${DEVICE[@]}" "${STEP[@]}" \
    --skip collator encode memory --json "$WORK/chunked.json"
run_stage fused 100 "$PYTHON" benchmarks/train_step.py "${DEVICE[@]}" "${STEP[@]}" --fused-cross-entropy \
    --skip collator encode memory eval-loss --json "$WORK/fused.json"

FAILED=0
for stage in tests long chunked fused; do
    [ "$(cat "$WORK/$stage.rc")" = 0 ] || FAILED=1
done
echo "== done in $(($(date +%s) - START)) s, any stage failed: $FAILED; files in $OUT:"
ls -l "$OUT"
rm -rf "$WORK"
[ "$FAILED" = 0 ]
