#!/usr/bin/env bash
# Throughput of the test server under `herdsman run`, side by side with the limit: the same
# server as N processes that bind SO_REUSEPORT themselves, with no primary at all. The
# `herdsman-proxy` row runs the same server behind `--balance proxy` (it binds its private $PORT);
# `herdsman-reuseport+admin` is reuseport with the admin server on (`--admin`, issue 16);
# `floor-relay` is bench/floor's bare relay (one thread, one epoll, bytes copied both ways, no
# HTTP), the least a proxy can cost on this machine, beside `herdsman-proxy`. SETUPS="…" picks.
#
#   bench/cluster.sh [SECONDS_PER_RUN] [ROUNDS]      (defaults: 10 s, 3 rounds)
#
# PIN=1 (the default when the machine has 2+ CPUs) runs wrk on CPU 0 and every server process
# on the other CPUs, so that the load generator and the servers do not trade places on the same
# cores: on a small machine that contention, not the servers, decides most of the variance.
# PIN=0 lets the scheduler place everything.
#
# Each round runs every setup once, keep-alive and `Connection: close`, in the same order, so
# that all setups see the same machine; the table reports the median round. Also measured: the
# primary's CPU time during the runs (as a share of the whole run's CPU) and its peak RSS.
# The setups are bench/lib.sh's start_setup (the Rust server: APP_KIND=rust).
# Everything listens on 127.0.0.1 and stops by itself; only processes started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
WORKERS=$(nproc)
CONNECTIONS=64
OUT=bench/out
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source bench/lib.sh
need wrk wrk
cargo build --release --quiet --bin herdsman --example testserver
build_floor
# HERDSMAN=path/to/herdsman measures another build (a baseline) with the same script.
HERDSMAN=${HERDSMAN:-target/release/herdsman}
SERVER=target/release/examples/testserver
SERVER=$PWD/$SERVER
TICKS=$(getconf CLK_TCK)
pin_cpus
# For start_setup (bench/lib.sh): the Rust test server on every CPU; herdsman's control
# sockets in a directory of this script's own.
APP_KIND=rust BENCH_NAME=bench-cluster
export XDG_RUNTIME_DIR="$PWD/$OUT/runtime-cluster"
mkdir -p "$XDG_RUNTIME_DIR"

tree_ticks() { # PIDS... → summed CPU ticks of those processes
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] && total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

trap stop_started EXIT

read -r -a SETUPS <<<"${SETUPS:-limit herdsman-shared herdsman-reuseport herdsman-reuseport+admin herdsman-proxy floor-relay}"
RAW="$OUT/cluster-raw.txt"
: >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        port=$(free_port)
        start_setup "$setup" "$port" "$OUT/cluster-$setup.log"
        primary=$PRIMARY
        workers=$(if [ -n "$primary" ]; then descendants "$primary" | tr '\n' ' '; else echo "${STARTED[*]}"; fi)
        for mode in keepalive close; do
            primary_before=$([ -n "$primary" ] && cpu_ticks "$primary" || echo 0)
            # shellcheck disable=SC2086
            workers_before=$(tree_ticks $workers)
            wrk_load "$port" "$mode" "$SECONDS_PER_RUN" "$OUT/wrk.txt"
            primary_after=$([ -n "$primary" ] && cpu_ticks "$primary" || echo 0)
            # shellcheck disable=SC2086
            workers_after=$(tree_ticks $workers)
            read -r rps errors _ < <(wrk_figures "$OUT/wrk.txt")
            rss=$([ -n "$primary" ] && peak_rss_kb "$primary" || echo 0)
            echo "$round $setup $mode $rps $errors $((primary_after - primary_before)) $((workers_after - workers_before)) $rss" | tee -a "$RAW"
        done
        stop_started
    done
done

# Median over rounds per setup and mode, then ratios to the limit.
python3 - "$RAW" "$SECONDS_PER_RUN" "$TICKS" "$WORKERS" "$(pinning)" "$ROUNDS" "${SETUPS[*]}" <<'EOF'
import statistics, sys
raw, seconds, ticks, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pinned, rounds, setups = sys.argv[5], int(sys.argv[6]), sys.argv[7].split()
rows = [line.split() for line in open(raw) if line.strip()]
table = {}
for _, setup, mode, rps, errors, primary, worker_ticks, rss in rows:
    table.setdefault((setup, mode), []).append((float(rps), int(errors), int(primary), int(worker_ticks), int(rss)))
print(f"\n{workers} workers, wrk -t1 -c64, {seconds:.0f} s per run, median of {rounds} rounds, {pinned}\n")
print("| setup | connection | req/s | × limit | errors | primary CPU (% of run's CPU) | primary peak RSS |")
print("|---|---|---:|---:|---:|---:|---:|")
for mode in ("keepalive", "close"):
    limit = statistics.median(r[0] for r in table.get(("limit", mode), [(float("nan"),)]))
    for setup in setups:
        runs = table[(setup, mode)]
        rps = statistics.median(r[0] for r in runs)
        errors = sum(r[1] for r in runs)
        primary = sum(r[2] for r in runs)
        total = primary + sum(r[3] for r in runs)
        share = f"{100 * primary / total:.2f} %" if setup != "limit" and total else "–"
        rss = f"{max(r[4] for r in runs) / 1024:.1f} MB" if setup != "limit" else "–"
        print(f"| {setup} | {mode} | {rps:,.0f} | {rps / limit:.3f} | {errors} | {share} | {rss} |")
EOF
