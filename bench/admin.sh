#!/usr/bin/env bash
# What the admin server costs the primary (issue 16's figures): its resident memory with the
# admin server off, on, and on with the dashboard open in headless Chromium; and how long
# `/metrics` takes to answer with WORKERS workers.
#
#   bench/admin.sh [WORKERS] [SCRAPES] [DASHBOARD_SECONDS]     (defaults: 64, 200, 20)
#
# The workers are `sleep infinity`: a process that is ready by `--ready delay` (up for
# --ready-delay) and costs nothing, so that the figures are the primary's alone. RSS is the
# primary's VmRSS and VmHWM (peak) from /proc, after the workers are ready and, with the
# dashboard, after it has polled for DASHBOARD_SECONDS. `/metrics` is timed by curl
# (`time_total`, one connection per scrape), the table shows the median and the 99th
# percentile. Targets (issue 16): RSS ≤ 10 MB with the dashboard open, /metrics ≤ 5 ms at 64
# workers. Prints a markdown table for bench/RESULTS.md.
#
# Needs a quiet machine for real figures; `bench/admin.sh 4 10 3` tries it in seconds.
# Everything listens on 127.0.0.1 and stops by itself; only processes started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${1:-64}
SCRAPES=${2:-200}
DASHBOARD_SECONDS=${3:-20}

# shellcheck source=bench/lib.sh
source bench/lib.sh
need curl curl
# HERDSMAN=path/to/herdsman measures another build (a baseline, or a debug one to try the script).
if [ -z "${HERDSMAN:-}" ]; then
    cargo build --release --quiet --bin herdsman
    HERDSMAN=target/release/herdsman
fi
RUNTIME=$(mktemp -d)
export XDG_RUNTIME_DIR=$RUNTIME
cleanup() {
    stop_started
    rm -rf "$RUNTIME"
}
trap cleanup EXIT

ready_workers() { # NAME → how many workers are ready
    "$HERDSMAN" status "$1" --json 2>/dev/null |
        python3 -c 'import json,sys; print(sum(r["state"] == "ready" for r in json.load(sys.stdin)["slots"]))' \
        2>/dev/null || echo 0
}

# start NAME [ARGS…] → starts a cluster of WORKERS sleepers, waits (60 s at most) until all are
# ready; its primary is ${STARTED[-1]}.
start() {
    local name=$1
    shift
    "$HERDSMAN" run --name "$name" --workers "$WORKERS" --host 127.0.0.1 --port 0 \
        --ready-delay 200ms "$@" -- sleep infinity >"$RUNTIME/$name.log" 2>&1 &
    STARTED+=($!)
    for _ in $(seq 1 600); do
        [ "$(ready_workers "$name")" = "$WORKERS" ] && return 0
        kill -0 "${STARTED[-1]}" 2>/dev/null || { cat "$RUNTIME/$name.log" >&2; return 1; }
        sleep 0.1
    done
    echo "$name: not every worker was ready within 60 s" >&2
    return 1
}

rss_mb() { # PID FIELD → the figure (VmRSS, VmHWM) in MB
    awk -v field="$2:" '$1 == field { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

admin_address() { # NAME → the admin server's address, from the primary's log
    for _ in $(seq 1 100); do
        local address
        address=$(sed -n 's|.*admin server on http://\([^/]*\)/.*|\1|p' "$RUNTIME/$1.log")
        [ -n "$address" ] && { echo "$address"; return 0; }
        sleep 0.05
    done
    echo "no admin address in $RUNTIME/$1.log" >&2
    return 1
}

# Opens the dashboard at URL in headless Chromium for SECONDS (tests/dashboard.js's way:
# playwright-core from examples/node, Debian's chromium).
open_dashboard() { # URL SECONDS
    NODE_PATH=examples/node/node_modules node -e '
        const { chromium } = require("playwright-core");
        (async () => {
            const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
                args: ["--headless", "--no-sandbox"] });
            const page = await browser.newPage();
            await page.goto(process.argv[1]);
            await page.waitForFunction((n) => document.querySelectorAll("#workers tr").length === n,
                Number(process.argv[3]), { timeout: 30000 });
            await new Promise((resolve) => setTimeout(resolve, Number(process.argv[2]) * 1000));
            await browser.close();
        })().catch((error) => { console.error(error); process.exit(1); });
    ' "$1" "$2" "$WORKERS"
}

# Times SCRAPES scrapes of http://ADDRESS/metrics; prints "MEDIAN_MS P99_MS BYTES".
time_metrics() { # ADDRESS
    local times=$RUNTIME/times.txt
    : >"$times"
    for _ in $(seq 1 "$SCRAPES"); do
        curl -fs -o "$RUNTIME/metrics.txt" -w '%{time_total}\n' "http://$1/metrics" >>"$times"
    done
    sort -g "$times" | awk -v bytes="$(wc -c <"$RUNTIME/metrics.txt")" '
        { t[NR] = $1 * 1000 }
        END { printf "%.2f %.2f %d\n", t[int((NR + 1) / 2)], t[int(NR * 0.99 + 0.999)], bytes }'
}

start plain
plain=${STARTED[-1]}
plain_rss=$(rss_mb "$plain" VmRSS) plain_hwm=$(rss_mb "$plain" VmHWM)
stop_started

start admin --admin 127.0.0.1:0
primary=${STARTED[-1]}
address=$(admin_address admin)
admin_rss=$(rss_mb "$primary" VmRSS) admin_hwm=$(rss_mb "$primary" VmHWM)
read -r median p99 bytes < <(time_metrics "$address")
samples=$(grep -c '^herdsman_' "$RUNTIME/metrics.txt")
dashboard_rss=skipped dashboard_hwm=skipped
if [ -x /usr/bin/chromium ] && [ -d examples/node/node_modules/playwright-core ]; then
    open_dashboard "http://$address/" "$DASHBOARD_SECONDS"
    dashboard_rss=$(rss_mb "$primary" VmRSS) dashboard_hwm=$(rss_mb "$primary" VmHWM)
else
    echo "no /usr/bin/chromium or playwright-core: the dashboard row is skipped" >&2
fi
stop_started

cat <<EOF
Primary with $WORKERS workers (\`sleep infinity\`), $(nproc) CPUs, $(date -u +%Y-%m-%d):

| primary | VmRSS | VmHWM (peak) |
|---|---|---|
| no admin server | $plain_rss MB | $plain_hwm MB |
| \`--admin\`, idle | $admin_rss MB | $admin_hwm MB |
| \`--admin\` after $SCRAPES scrapes and the dashboard open ${DASHBOARD_SECONDS} s | $dashboard_rss MB | $dashboard_hwm MB |

| \`/metrics\` at $WORKERS workers | median | p99 | size |
|---|---|---|---|
| $SCRAPES scrapes, one connection each (curl \`time_total\`) | $median ms | $p99 ms | $bytes bytes, $samples samples |

Targets (issue 16): primary RSS with the dashboard open ≤ 10 MB; \`/metrics\` ≤ 5 ms at 64 workers.
EOF
