# Shared by the GPU kits (sourced, not run): the wheels mteb needs beside a machine's torch stack, and the loop that
# watches processes started side by side, copies results out as they come and stops them at a deadline.

# CPython 3.12 manylinux wheels, without dependencies: closed over each wheel's Requires-Dist minus what the lent
# GPU machine already has (README.md in this folder).
MTEB_WHEELS=(
    datasets==5.2.0
    dill==0.4.1
    multiprocess==0.70.19
    mteb==2.26.24
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    pytrec-eval-terrier==0.5.11
)

# download_wheels DEST SPEC...: the manylinux CPython 3.12 wheels of SPEC... into DEST, no dependencies.
download_wheels() {
    local dest=$1 spec
    shift
    mkdir -p "$dest"
    for spec in "$@"; do
        "${PYTHON:-python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "$spec" || return 1
    done
}

# supervise PROGRESS SYNC PID...: every $SYNC_S seconds print "-- <elapsed> s: $(PROGRESS)" and run SYNC, until
# every PID has ended or $DEADLINE_S seconds have passed since $START (then each one's process group is stopped).
supervise() {
    local progress=$1 sync=$2 pid elapsed alive
    shift 2
    while :; do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 1 ] || break
        sleep "$SYNC_S" & wait $!
        elapsed=$(($(date +%s) - START))
        echo "-- $elapsed s: $($progress)"
        $sync
        if [ "$elapsed" -ge "$DEADLINE_S" ]; then
            echo "== deadline of $DEADLINE_S s reached: stopping what still runs"
            for pid in "$@"; do kill -0 "$pid" 2>/dev/null && kill -- -"$pid"; done
            sleep 2
            break
        fi
    done
}
