#!/usr/bin/env bash
# The embedded state store against redis-server on this machine, side by side:
# redis-benchmark GET/SET/INCR/LPUSH, one request at a time and pipelined (-P 16), in
# alternating rounds; then resident memory with 100 000 small keys.
#
#   bench/state.sh [ROUNDS] [REQUESTS]      (default 3 rounds of 200000 requests)
#
# PIN=1 (default): the servers share CPU 1.., redis-benchmark gets CPU 0, so the two servers
# compete with the load generator the same way (PIN=0: let the scheduler place everything).
# Targets (issue 5): throughput >= 0.8x redis-server; RSS with 100k keys <= 2x redis-server's.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${1:-3}
REQUESTS=${2:-200000}
CLIENTS=${CLIENTS:-50}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark: apt-get install -y redis-tools" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server: apt-get install -y redis-server" >&2; exit 1; }
cargo build --release --bins -q
LOAD_CPUS=() SERVER_CPUS=()
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    LOAD_CPUS=(taskset -c 0)
    SERVER_CPUS=(taskset -c "1-$(($(nproc) - 1))")
fi
out=bench/out/state; rm -rf "$out"; mkdir -p "$out"

ours_port=$(free_port); redis_port=$(free_port)
XDG_RUNTIME_DIR="$PWD/$out" "${SERVER_CPUS[@]}" target/release/herdsman run --workers 1 --host 127.0.0.1 --port 0 \
    --name bench-state --state-listen "127.0.0.1:$ours_port" -- sleep 100000 >"$out/herdsman.log" 2>&1 &
herdsman_pid=$!
"${SERVER_CPUS[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $herdsman_pid $redis_pid 2>/dev/null; wait 2>/dev/null' EXIT
for port in "$ours_port" "$redis_port"; do
    for _ in $(seq 1 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "machine: $(nproc) CPUs, $(uname -r); redis-server $(redis-server --version | awk '{print $3}')"
echo "idle RSS: herdsman primary $(rss_kb $herdsman_pid) kB, redis-server $(rss_kb $redis_pid) kB"

# Memory first, on fresh processes: the same 100 000 small keys in both.
python3 -c 'import sys
for i in range(100000):
    k = "key:%d" % i; v = "value-%d" % i
    sys.stdout.write("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))' >"$out/keys.resp"
redis-cli -p "$ours_port" --pipe <"$out/keys.resp" >/dev/null
redis-cli -p "$redis_port" --pipe <"$out/keys.resp" >/dev/null
echo
echo "keys: herdsman $(redis-cli -p "$ours_port" dbsize), redis $(redis-cli -p "$redis_port" dbsize)"
a=$(rss_kb $herdsman_pid); b=$(rss_kb $redis_pid)
printf 'RSS with 100k keys: herdsman primary %d kB, redis-server %d kB, ratio %.2f\n' "$a" "$b" "$(echo "$a / $b" | bc -l)"
redis-cli -p "$ours_port" flushall >/dev/null; redis-cli -p "$redis_port" flushall >/dev/null

# redis-benchmark --csv prints "test","rps",...; the requests per second of each test.
run() { # PORT PIPELINE
    "${LOAD_CPUS[@]}" redis-benchmark -h 127.0.0.1 -p "$1" -n "$REQUESTS" -c "$CLIENTS" -P "$2" -r 100000 \
        -t get,set,incr,lpush --csv 2>/dev/null | awk -F'"' 'NR>1 {print $2, $4}'
}
declare -A ours theirs
for pipeline in 1 16; do
    for round in $(seq 1 "$ROUNDS"); do
        while read -r test rps; do ours["$pipeline $test"]+="$rps "; done < <(run "$ours_port" "$pipeline")
        while read -r test rps; do theirs["$pipeline $test"]+="$rps "; done < <(run "$redis_port" "$pipeline")
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\n%-6s %-9s %14s %14s %7s\n' "-P" "test" "herdsman r/s" "redis r/s" "ratio"
for pipeline in 1 16; do
    for test in SET GET INCR LPUSH; do
        key="$pipeline $test"
        a=$(echo "${ours[$key]}" | median); b=$(echo "${theirs[$key]}" | median)
        printf '%-6s %-9s %14.0f %14.0f %7.3f\n' "$pipeline" "$test" "$a" "$b" "$(echo "$a / $b" | bc -l)"
    done
done


# After the churn (1.2M-element lists, 100k-key spaces), emptied: is the memory given back?
redis-cli -p "$ours_port" flushall >/dev/null; redis-cli -p "$redis_port" flushall >/dev/null
sleep 0.5
echo "RSS after the benchmarks and FLUSHALL: herdsman primary $(rss_kb $herdsman_pid) kB, redis-server $(rss_kb $redis_pid) kB"
