#!/usr/bin/env bash
# One unmodified Node app on 2 workers under every primary there is: herdsman (--balance shared,
# reuseport, round-robin), PM2's cluster mode, Node's own cluster module (SCHED_RR and
# SCHED_NONE), and the app alone as a single process; and `floor-node` (bench/floor's bare
# handoff loop speaking Node's cluster protocol: the least a round-robin primary can cost here,
# not in the default SETUPS).
#
#   bench/node.sh [SECONDS_PER_RUN] [ROUNDS]      (defaults: 10 s, 3 rounds)
#
# APP=http (the default, examples/node/http-app.js), APP=express (examples/node/express-app.js)
# or APP=path/to/app.js: the app, which listens on $PORT itself and knows nothing of any of
# them. HERDSMAN=path/to/herdsman measures another build; SETUPS="pm2 node-none …" a subset.
# PIN=1 (the default on 2+ CPUs): wrk on CPU 0, every server process on the others; PIN=0 lets
# the scheduler place everything.
#
# Each round starts every setup afresh, warms it up for a second (Node compiles its hot code),
# then runs wrk keep-alive and `Connection: close`, in the same order, so that all setups see
# the same machine; the table reports the median round, with ratios to PM2 and to Node's
# SCHED_NONE (every worker accepts on the shared socket: the limit without a primary on the
# data path). Also measured, for the primary (herdsman's own process, not its workers; PM2's
# daemon, "God", whose cluster module hands out the connections; Node's primary): its CPU time
# during the close run divided by the connections wrk made (each request is one), and its peak
# RSS (VmHWM) after both runs. A setup whose flag this herdsman rejects (round-robin, before it
# lands) is skipped with a line that says so.
#
# Targets (issue 13): close req/s ≥ 2× PM2's and ≥ 0.95× SCHED_NONE's in shared/reuseport,
# ≥ 1.5× PM2's in round-robin; primary CPU per new connection in round-robin ≤ 10 µs; primary
# RSS under load ≤ 8 MB. Everything listens on 127.0.0.1 (port 0 picks) and stops by itself;
# only processes started here are stopped, and PM2 (private PM2_HOME) is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
WORKERS=2
WARMUP=${WARMUP:-1}
OUT=$PWD/bench/out
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source bench/lib.sh
need wrk wrk
install_pm2 "$OUT"
APP_PATH=$(node_app "${APP:-http}")
cargo build --release --quiet --bin herdsman
build_floor
HERDSMAN=${HERDSMAN:-$PWD/target/release/herdsman}
# herdsman's control sockets in a directory of this script's own: no clash with another run.
export XDG_RUNTIME_DIR="$OUT/runtime-node"
mkdir -p "$XDG_RUNTIME_DIR"
TICKS=$(getconf CLK_TCK)
pin_cpus
# For start_setup (bench/lib.sh): the app and the cluster's name.
APP_KIND=node BENCH_NAME=bench-node

cleanup() {
    stop_started
    "$PM2" kill >/dev/null 2>&1 || true
}
trap cleanup EXIT

SETUPS=(${SETUPS:-herdsman-shared herdsman-reuseport herdsman-round-robin pm2 node-rr node-none single})
declare -A SKIPPED=()
RAW="$OUT/node-raw.txt"
: >"$RAW"
echo "app: $APP_PATH; node $(node --version), PM2 $("$PM2" --version 2>/dev/null | tail -1), $(pinning)"
for round in $(seq 1 "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        [ -n "${SKIPPED[$setup]:-}" ] && continue
        port=$(free_port)
        log="$OUT/node-$setup.log"
        status=0
        start_setup "$setup" "$port" "$log" || status=$?
        if [ "$status" = 3 ]; then
            echo "skipped $setup: $SKIP_REASON"
            SKIPPED[$setup]=1
            stop_setup "$setup"
            continue
        fi
        [ "$status" = 0 ] || exit 1
        wrk_load "$port" keepalive "$WARMUP" "$OUT/wrk.txt"
        for mode in keepalive close; do
            before=$([ -n "$PRIMARY" ] && cpu_ticks "$PRIMARY" || echo 0)
            wrk_load "$port" "$mode" "$SECONDS_PER_RUN" "$OUT/wrk.txt"
            after=$([ -n "$PRIMARY" ] && cpu_ticks "$PRIMARY" || echo 0)
            read -r rps failed requests < <(wrk_figures "$OUT/wrk.txt")
            rss=$([ -n "$PRIMARY" ] && peak_rss_kb "$PRIMARY" || echo 0)
            echo "$round $setup $mode $rps $failed $requests $((after - before)) $rss" | tee -a "$RAW"
        done
        stop_setup "$setup"
    done
done

python3 - "$RAW" "$SECONDS_PER_RUN" "$TICKS" "$WORKERS" "$(pinning)" "$(basename "$APP_PATH")" <<'EOF'
import statistics, sys
raw, seconds, ticks, workers, pinned, app = sys.argv[1:]
seconds, ticks = float(seconds), int(ticks)
rows = [line.split() for line in open(raw) if line.strip()]
table = {}
for _, setup, mode, rps, failed, requests, primary, rss in rows:
    table.setdefault((setup, mode), []).append(
        (float(rps), int(failed), int(requests), int(primary), int(rss)))
order = ["herdsman-shared", "herdsman-reuseport", "herdsman-round-robin", "floor-node", "pm2",
         "node-rr", "node-none", "single"]
names = {"pm2": "PM2 cluster mode", "node-rr": "Node cluster SCHED_RR",
         "node-none": "Node cluster SCHED_NONE", "single": "single process",
         "floor-node": "bare handoff loop (bench/floor)"}
setups = [s for s in order if (s, "close") in table]
rounds = max(len(runs) for runs in table.values())
print(f"\n{app}, {workers} workers (single: 1 process), wrk -t1 -c64, {seconds:g} s per run, "
      f"median of {rounds} rounds, {pinned}\n")
print("| setup | connection | req/s | × PM2 | × SCHED_NONE | failed | primary CPU per new connection | primary peak RSS |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for mode in ("keepalive", "close"):
    median = {s: statistics.median(r[0] for r in table[(s, mode)]) for s in setups}
    for setup in setups:
        runs = table[(setup, mode)]
        ratio = lambda base: f"{median[setup] / median[base]:.2f}" if base in median else "–"
        cpu = rss = "–"
        if setup != "single":
            rss = f"{max(r[4] for r in runs) / 1024:.1f} MB"
            if mode == "close":
                cpu = f"{statistics.median(r[3] / ticks * 1e6 / r[2] for r in runs):.1f} µs"
        print(f"| {names.get(setup, setup)} | {mode} | {median[setup]:,.0f} | {ratio('pm2')} | "
              f"{ratio('node-none')} | {sum(r[1] for r in runs)} | {cpu} | {rss} |")
print(f"\nprimary CPU: its utime+stime during the close run ({1e3 / ticks:g} ms ticks) ÷ the "
      "requests wrk made (one connection each), median of the rounds; peak RSS: VmHWM, "
      "the highest of the rounds")
EOF
