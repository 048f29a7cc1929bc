#!/usr/bin/env bash
# The primary's CPU per new connection when it hands connections over (issue 15, issue 13's
# Measure): herdsman --balance round-robin with Node workers (examples/node/express-app.js,
# unmodified), and round-robin and least-conn with Rust workers on herdsman's library
# (examples/testserver serving through `Worker::listener()`).
#
#   bench/rrcpu.sh [SECONDS_PER_RUN] [ROUNDS]      (defaults: 10 s, 3 rounds)
#
# For each setup, every round: start 2 workers, warm up for a second, then run
# `wrk -c $CONNECTIONS -H 'Connection: close'` (default 50 connections) and read the primary's
# utime+stime from /proc/PID/stat before and after: CPU per connection = that time ÷ the
# requests wrk made (one per connection). CPU time per connection is fairly robust on a shared
# machine; requests per second are not, so compare them only as ratios within one run (the
# `× single` column, when `single` is among the setups). The table reports the
# median round.
#
# HERDSMAN=path/to/herdsman and TESTSERVER=path/to/testserver measure other builds (the
# defaults are built here, PROFILE=release by default); SETUPS="lib-rr lib-lc node-rr" picks
# setups (and `floor`: bench/floor, a bare handoff loop in one thread with the same workers,
# the least this machine lets a handoff cost; and `single`: one testserver binding the port itself,
# no primary, the reference of issue 15's "≥ 0.90× the single process"); EXTRA="--max-pending 4" adds flags to every cluster. PIN=1 (the default on 2+ CPUs): wrk on CPU 0, the cluster on the others.
# Targets: ≤ 8 µs (issue 15, handoff), ≤ 10 µs (issue 13, Node round-robin); req/s ≥ 0.90× single
# (issue 15, handoff).
# Everything listens on 127.0.0.1 (ports picked free) and is stopped by the script.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
export CONNECTIONS=${CONNECTIONS:-50}
WARMUP=${WARMUP:-1}
PROFILE=${PROFILE:-release}
OUT=$PWD/bench/out
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source bench/lib.sh
need wrk wrk
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
# The floor (bench/floor): a bare handoff loop with the same workers.
build_floor
if [ -z "${HERDSMAN:-}" ] || [ -z "${TESTSERVER:-}" ]; then
    cargo build --quiet --profile "$PROFILE" --bin herdsman --example testserver
fi
HERDSMAN=${HERDSMAN:-$PWD/target/$dir/herdsman}
TESTSERVER=${TESTSERVER:-$PWD/target/$dir/examples/testserver}
export XDG_RUNTIME_DIR="$OUT/runtime-rrcpu"
mkdir -p "$XDG_RUNTIME_DIR"
TICKS=$(getconf CLK_TCK)
pin_cpus

STARTED=()
stop_started() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED=()
}
trap stop_started EXIT

# start_setup NAME PORT LOG → a cluster of 2 workers on PORT; PRIMARY is its pid.
start_setup() {
    local name=$1 port=$2 log=$3 command=()
    local balance=round-robin ipc=()
    case $name in
        node-rr) command=(node examples/node/express-app.js) ;;
        lib-rr) command=("$TESTSERVER") ipc=(--ipc) ;;
        lib-lc) command=("$TESTSERVER") ipc=(--ipc) balance=least-conn ;;
        single)
            PORT=$port "${SERVER_CPUS[@]}" "$TESTSERVER" >"$log" 2>&1 &
            STARTED+=($!) PRIMARY=$!
            wait_serving "$port" "$PRIMARY" 2>>"$log"
            return ;;
        floor)
            "${SERVER_CPUS[@]}" "$FLOOR" handoff "$port" 2 -- "$TESTSERVER" >"$log" 2>&1 &
            STARTED+=($!) PRIMARY=$!
            wait_serving "$port" "$PRIMARY" 2>>"$log"
            return ;;
        *) echo "unknown setup $name" >&2; return 1 ;;
    esac
    "${SERVER_CPUS[@]}" "$HERDSMAN" run --workers 2 --host 127.0.0.1 --port "$port" \
        --name "rrcpu-$name" --balance "$balance" "${ipc[@]}" ${EXTRA:-} -- "${command[@]}" >"$log" 2>&1 &
    STARTED+=($!) PRIMARY=$!
    wait_serving "$port" "$PRIMARY" 2>>"$log" && return 0
    echo "$name did not serve; its log ($log):" >&2
    tail -20 "$log" >&2
    return 1
}

SETUPS=(${SETUPS:-lib-rr lib-lc node-rr floor})
RAW="$OUT/rrcpu-raw.txt"
: >"$RAW"
echo "herdsman: $HERDSMAN ${EXTRA:-}; $CONNECTIONS connections, Connection: close; $(pinning)"
for round in $(seq 1 "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        port=$(free_port)
        log="$OUT/rrcpu-$setup.log"
        start_setup "$setup" "$port" "$log"
        # Both workers serve (`all 2 workers ready`) before the clock starts.
        for _ in $(seq 1 200); do
            [ "$setup" = single ] && break
            grep -Eq "all 2 workers (ready|started)" "$log" && break
            sleep 0.05
        done
        wrk_load "$port" close "$WARMUP" "$OUT/wrk.txt"
        before=$(cpu_ticks "$PRIMARY")
        wrk_load "$port" close "$SECONDS_PER_RUN" "$OUT/wrk.txt"
        after=$(cpu_ticks "$PRIMARY")
        read -r rps failed requests < <(wrk_figures "$OUT/wrk.txt")
        echo "$round $setup $rps $failed $requests $((after - before))" | tee -a "$RAW"
        stop_started
    done
done

python3 - "$RAW" "$TICKS" <<'EOF'
import statistics, sys
raw, ticks = sys.argv[1], int(sys.argv[2])
runs = {}
for line in open(raw):
    _, setup, rps, failed, requests, cpu = line.split()
    runs.setdefault(setup, []).append((float(rps), int(failed), int(requests), int(cpu)))
single = statistics.median(r for r, _, _, _ in runs["single"]) if "single" in runs else None
print(f"\n| setup | primary CPU per connection | req/s | × single | failed |")
print("|---|---|---|---|---|")
for setup, rows in runs.items():
    # The single process has no primary: its CPU is the server's own.
    per = statistics.median(cpu / ticks * 1e6 / max(requests, 1) for _, _, requests, cpu in rows)
    rps = statistics.median(r for r, _, _, _ in rows)
    failed = sum(f for _, f, _, _ in rows)
    cpu = "–" if setup == "single" else f"{per:.1f} µs"
    ratio = f"{rps / single:.2f}" if single else "–"
    print(f"| {setup} | {cpu} | {rps:.0f} | {ratio} | {failed} |")
print(f"\nprimary CPU: utime+stime of herdsman's own process during the run ({1e3 / ticks:g} ms "
      "ticks) ÷ the connections wrk made; median of the rounds.")
EOF
