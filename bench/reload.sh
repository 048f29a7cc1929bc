#!/usr/bin/env bash
# Requests during rolling reloads: herdsman vs PM2, on the same Node app.
#
#   bench/reload.sh [SECONDS_PER_RUN] [ROUNDS]     (defaults: 10 s, 3 rounds)
#
# APP= the app: by default examples/node/server.js (takes fd 3 under herdsman, drains politely
# on SIGTERM/SIGINT); APP=http (examples/node/http-app.js) or APP=express is an unmodified app
# that just listens on $PORT: herdsman hands it the socket and stops it through Node's cluster
# protocol (`disconnect`), PM2 as PM2 does. SYSTEMS="herdsman pm2" leaves out herdsman-rust.
#
# For each system, keep-alive and `Connection: close`: one wrk run without reloads (the
# baseline), one with 2 reloads during it (at 30 % and 60 % of the run). Reported: failed
# requests (wrk's socket errors and non-2xx answers) and req/s during the reloads divided by
# req/s without. Targets (issue 3): 0 failed; ratio ≥ 0.85.
#
# PM2 comes from npm, installed here under bench/out with a private PM2_HOME, and is killed at
# the end; only processes started here are stopped. wrk runs on CPU 0, the servers on the others
# (PIN=0: let the scheduler place everything).
#
# A third row, herdsman-rust, reloads examples/testserver (Rust, no JIT) under herdsman: it tells
# how much of the drop during a reload is the app's own start-up (a cold Node process) rather
# than the supervisor. (PM2's cluster mode runs Node apps only.)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
WORKERS=2
CONNECTIONS=64
OUT=$PWD/bench/out
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source bench/lib.sh
need wrk wrk
install_pm2 "$OUT"
APP_PATH=$(node_app "${APP:-examples/node/server.js}")
cargo build --release --quiet --bin herdsman --example testserver
# HERDSMAN=path/to/herdsman measures another build (a baseline) with the same script.
HERDSMAN=${HERDSMAN:-$PWD/target/release/herdsman}
RUST_APP=$PWD/target/release/examples/testserver
export XDG_RUNTIME_DIR="$OUT/runtime"
mkdir -p "$XDG_RUNTIME_DIR"
pin_cpus

HERDSMAN_PID=""
cleanup() {
    [ -n "$HERDSMAN_PID" ] && kill -TERM "$HERDSMAN_PID" 2>/dev/null || true
    "$PM2" kill >/dev/null 2>&1 || true
}
trap cleanup EXIT

start_system() { # SYSTEM PORT
    case $1 in
        herdsman)
            "${SERVER_CPUS[@]}" "$HERDSMAN" run --workers "$WORKERS" --host 127.0.0.1 --port "$2" \
                --name bench --ready-delay 500ms -- node "$APP_PATH" >/dev/null 2>&1 &
            HERDSMAN_PID=$! ;;
        herdsman-rust)
            TESTSERVER_NOTIFY=1 "${SERVER_CPUS[@]}" "$HERDSMAN" run --workers "$WORKERS" \
                --host 127.0.0.1 --port "$2" --name bench --ready notify -- "$RUST_APP" \
                >/dev/null 2>&1 &
            HERDSMAN_PID=$! ;;
        pm2)
            PORT=$2 "${SERVER_CPUS[@]}" "$PM2" start "$APP_PATH" --name bench -i "$WORKERS" >/dev/null ;;
    esac
    wait_serving "$2"
}

stop_system() { # SYSTEM
    case $1 in
        herdsman | herdsman-rust)
            "$HERDSMAN" stop bench >/dev/null
            HERDSMAN_PID="" ;;
        pm2) "$PM2" delete bench >/dev/null ;;
    esac
}

reload_system() { # SYSTEM
    case $1 in
        herdsman | herdsman-rust) "$HERDSMAN" reload bench >/dev/null ;;
        pm2) "$PM2" reload bench >/dev/null ;;
    esac
}

# run_wrk PORT MODE RELOADS → "req/s failed"
run_wrk() {
    local port=$1 mode=$2 reloads=$3
    wrk_load "$port" "$mode" "$SECONDS_PER_RUN" "$OUT/wrk.txt" &
    local wrk_pid=$!
    if [ "$reloads" = yes ]; then
        sleep "$(python3 -c "print($SECONDS_PER_RUN * 0.3)")"
        reload_system "$SYSTEM"
        sleep "$(python3 -c "print($SECONDS_PER_RUN * 0.3)")"
        reload_system "$SYSTEM"
    fi
    wait "$wrk_pid"
    wrk_figures "$OUT/wrk.txt" | cut -d' ' -f1,2
}

RAW="$OUT/reload-raw.txt"
: >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    for SYSTEM in ${SYSTEMS:-herdsman pm2 herdsman-rust}; do
        port=$(free_port)
        start_system "$SYSTEM" "$port"
        for mode in keepalive close; do
            read -r base_rps base_errors < <(run_wrk "$port" "$mode" no)
            read -r reload_rps reload_errors < <(run_wrk "$port" "$mode" yes)
            echo "$round $SYSTEM $mode $base_rps $base_errors $reload_rps $reload_errors" | tee -a "$RAW"
        done
        stop_system "$SYSTEM"
    done
done

python3 - "$RAW" "$SECONDS_PER_RUN" "$(pinning)" "${APP_PATH#"$PWD"/}" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
seconds = float(sys.argv[2])
table = {}
for _, system, mode, base, base_errors, reload, reload_errors in rows:
    table.setdefault((system, mode), []).append(
        (float(base), int(base_errors), float(reload), int(reload_errors)))
systems = [s for s in ("herdsman", "pm2", "herdsman-rust") if any(r[1] == s for r in rows)]
rounds = len(rows) // (2 * len(systems))
pinned, app = sys.argv[3], sys.argv[4]
print(f"\n2 workers ({pinned}); herdsman and pm2 run {app}, herdsman-rust "
      f"runs examples/testserver; wrk -t1 -c64, {seconds:.0f} s per run, "
      f"2 reloads per run, {rounds} rounds (ratio: median of the rounds)\n")
print("| system | connection | req/s without reload | req/s with 2 reloads | ratio | failed during reloads (all rounds) |")
print("|---|---|---:|---:|---:|---:|")
for mode in ("keepalive", "close"):
    for system in systems:
        runs = table[(system, mode)]
        ratio = statistics.median(r[2] / r[0] for r in runs)
        print(f"| {system} | {mode} | {statistics.median(r[0] for r in runs):,.0f} | "
              f"{statistics.median(r[2] for r in runs):,.0f} | {ratio:.3f} | {sum(r[3] for r in runs)} |")
EOF
