#!/usr/bin/env bash
# The embedded state store against redis-server on this machine, side by side: redis-benchmark's
# default set (`redis-benchmark -q -n 200000 -c 50`, every test) plus EVALSHA of a loaded script,
# then GET/SET/INCR/LPUSH pipelined (-P 16, random keys over 100 000), in alternating rounds;
# then the memory a key costs, 1M small keys and 100k sorted-set members, each on fresh servers.
#
#   bench/state.sh [ROUNDS] [REQUESTS] [KEYS]   (defaults: 3 rounds, 200000 requests, 1000000
#                                                keys; the sorted set gets KEYS / 10 members)
#
# Each test runs as its own redis-benchmark (`-t TEST`, in the default set's order, on the same
# servers, so each finds what the ones before left), under a time limit: a test that fails
# (redis-benchmark stops at the first error reply) or hangs is marked so, and the others run.
# PIN=1 (default): the servers share CPU 1.., redis-benchmark gets CPU 0, so the two servers
# compete with the load generator the same way (PIN=0: let the scheduler place everything).
# Targets (issue 14): every ratio ≥ 0.8, EVALSHA included; memory per key ≤ 1.5× redis-server's.
# ONLY=memory: the memory table alone (no throughput runs); ONLY=throughput: the runs alone.
# TESTS="get incr": a subset of the default set (EVALSHA and the -P 16 runs always run).
# Only processes started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
ROUNDS=${1:-3}
REQUESTS=${2:-200000}
KEYS=${3:-1000000}
MEMBERS=$((KEYS / 10))
CLIENTS=${CLIENTS:-50}
need redis-server redis-server
need redis-benchmark redis-tools
cargo build --release --quiet --bin herdsman
pin_cpus
out=bench/out/state
rm -rf "$out"
mkdir -p "$out"
trap stop_started EXIT

# Starts a store (in a herdsman primary whose one worker sleeps) and a redis-server, fresh:
# STORE_PID, STORE_PORT, REDIS_PID, REDIS_PORT.
start_servers() {
    STORE_PORT=$(free_port) REDIS_PORT=$(free_port)
    XDG_RUNTIME_DIR="$PWD/$out" "${SERVER_CPUS[@]}" target/release/herdsman run --workers 1 \
        --host 127.0.0.1 --port 0 --name bench-state --state-listen "127.0.0.1:$STORE_PORT" \
        -- sleep 100000 >>"$out/herdsman.log" 2>&1 &
    STORE_PID=$!
    "${SERVER_CPUS[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no >>"$out/redis.log" 2>&1 &
    REDIS_PID=$!
    STARTED+=("$STORE_PID" "$REDIS_PID")
    local port
    for port in "$STORE_PORT" "$REDIS_PORT"; do
        for _ in $(seq 1 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
        redis-cli -p "$port" ping >/dev/null || { echo "nothing answers on port $port" >&2; exit 1; }
    done
}

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
used_memory() { redis-cli -p "$1" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }'; }

echo "machine: $(nproc) CPUs, $(uname -r); redis-server $(redis-server --version | awk '{ print $3 }'); $(pinning redis-benchmark)"

# memory NAME COUNT FILE: COUNT things written by the commands in FILE (RESP), on fresh servers;
# one table row of bytes per thing.
memory() {
    local name=$1 count=$2 file=$3
    start_servers
    local store_before redis_before used_before
    store_before=$(rss_kb "$STORE_PID") redis_before=$(rss_kb "$REDIS_PID")
    used_before=$(used_memory "$REDIS_PORT")
    local store_pipe redis_pipe
    store_pipe=$(redis-cli -p "$STORE_PORT" --pipe <"$file" | tail -1)
    redis_pipe=$(redis-cli -p "$REDIS_PORT" --pipe <"$file" | tail -1)
    python3 - "$name" "$count" "$store_before" "$(rss_kb "$STORE_PID")" "$redis_before" \
        "$(rss_kb "$REDIS_PID")" "$used_before" "$(used_memory "$REDIS_PORT")" \
        "$store_pipe" "$redis_pipe" <<'EOF'
import sys
name, count = sys.argv[1], int(sys.argv[2])
store0, store1, redis0, redis1, used0, used1 = map(int, sys.argv[3:9])
store_pipe, redis_pipe = sys.argv[9], sys.argv[10]
store = (store1 - store0) * 1024 / count
redis_rss = (redis1 - redis0) * 1024 / count
redis_used = (used1 - used0) / count
note = "" if store_pipe.startswith("errors: 0,") else f" (store: {store_pipe})"
if not redis_pipe.startswith("errors: 0,"):
    note += f" (redis-server: {redis_pipe})"
print(f"| {name} | {store:.1f} | {redis_used:.1f} | {redis_rss:.1f} | "
      f"{store / redis_used:.2f} | {store / redis_rss:.2f} |{note}")
EOF
    stop_started
}

if [ "${ONLY:-}" != throughput ]; then
    python3 - "$KEYS" "$MEMBERS" "$out" <<'EOF'
import sys
keys, members, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def command(*words):
    return "*%d\r\n%s" % (len(words), "".join("$%d\r\n%s\r\n" % (len(w), w) for w in words))
with open(f"{out}/keys.resp", "w") as f:
    for i in range(keys):
        f.write(command("SET", "key:%d" % i, "value-%d" % i))
with open(f"{out}/zset.resp", "w") as f:
    for i in range(members):
        f.write(command("ZADD", "zset", str(i), "member:%d" % i))
EOF
    echo
    echo "Memory per key, bytes: the store's RSS growth (the herdsman primary) against redis-server's"
    echo "used_memory and RSS growth, each pair of servers fresh"
    echo
    echo "| what | store RSS | redis used_memory | redis RSS | store ÷ used_memory | store ÷ redis RSS |"
    echo "|---|---:|---:|---:|---:|---:|"
    memory "$KEYS small keys (SET key:N value-N), per key" "$KEYS" "$out/keys.resp"
    memory "$MEMBERS sorted-set members (ZADD zset N member:N), per member" "$MEMBERS" "$out/zset.resp"
fi
[ "${ONLY:-}" = memory ] && exit 0

# The default set, test by test in its order (`ping` is PING_INLINE and PING_MBULK, `lrange`
# is LPUSH then LRANGE_100…600), then EVALSHA.
read -r -a TESTS <<<"${TESTS:-ping set get incr lpush rpush lpop rpop sadd hset spop zadd zpopmin lrange mset}"
SCRIPT="return redis.call('INCR', KEYS[1])"
LIMIT=$((30 + REQUESTS / 2000)) # seconds a test may take (~20× redis-server's time on 2 CPUs)

# bench PORT NAME ARGS... → "TEST REQUESTS_PER_SECOND" lines (redis-benchmark's test names,
# spaces made _), or "NAME failed: WHY" when it fails or hangs.
bench() {
    local port=$1 name=$2 status=0
    shift 2
    timeout "$LIMIT" "${LOAD_CPUS[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" \
        --csv "$@" >"$out/bench.csv" 2>"$out/bench.err" || status=$?
    if [ "$status" = 0 ]; then
        awk -F'"' 'NR > 1 { gsub(" ", "_", $2); print $2, $4 }' "$out/bench.csv"
    elif [ "$status" = 124 ]; then
        echo "$name failed: no end within ${LIMIT}s"
    else
        echo "$name failed: $(tr -d '\r' <"$out/bench.err" | grep -m1 . || echo "exit $status")"
    fi
}

start_servers
declare -A SHA
for port in "$STORE_PORT" "$REDIS_PORT"; do
    SHA[$port]=$(redis-cli -p "$port" script load "$SCRIPT" 2>&1 | tr -d '\r' | head -1)
done
: >"$out/raw.txt"
for round in $(seq 1 "$ROUNDS"); do
    for test in "${TESTS[@]}" evalsha pipelined; do
        for server in store redis; do
            port=$([ "$server" = store ] && echo "$STORE_PORT" || echo "$REDIS_PORT")
            case $test in
                evalsha)
                    if [[ ${SHA[$port]} =~ ^[0-9a-f]{40}$ ]]; then
                        bench "$port" EVALSHA -n "$REQUESTS" evalsha "${SHA[$port]}" 1 counter |
                            sed -E 's/^evalsha_[^ ]*/EVALSHA/'
                    else
                        echo "EVALSHA failed: SCRIPT LOAD answered ${SHA[$port]}"
                    fi ;;
                pipelined)
                    bench "$port" SET,GET,INCR,LPUSH -n "$REQUESTS" -P 16 -r 100000 -t set,get,incr,lpush |
                        sed 's/^/P16_/' ;;
                *) bench "$port" "${test^^}" -n "$REQUESTS" -t "$test" ;;
            esac | sed "s/^/$round $server /" >>"$out/raw.txt"
        done
    done
done

python3 - "$out/raw.txt" "$ROUNDS" "$REQUESTS" "$CLIENTS" <<'EOF'
import statistics, sys
raw, rounds, requests, clients = sys.argv[1:]
runs, failures, order = {}, {}, []
for line in open(raw):
    round_, server, rest = line.rstrip("\n").split(" ", 2)
    test, value = rest.split(" ", 1)
    if test not in order:
        order.append(test)
    if value.startswith("failed:"):
        failures.setdefault((test, server), []).append(value[len("failed: "):])
    else:
        runs.setdefault((test, server), []).append(float(value))
print(f"\nredis-benchmark -n {requests} -c {clients}, test by test in the default set's order, "
      f"then EVALSHA (`EVALSHA sha 1 counter` of `return redis.call('INCR', KEYS[1])`) and "
      f"-P 16 -r 100000 (P16_); median of {rounds} alternating rounds\n")
print("| test | store req/s | redis-server req/s | store ÷ redis | failed runs |")
print("|---|---:|---:|---:|---|")
for test in order:
    median = {s: statistics.median(runs[(test, s)]) for s in ("store", "redis") if (test, s) in runs}
    shown = lambda s: f"{median[s]:,.0f}" if s in median else "–"
    ratio = f"{median['store'] / median['redis']:.2f}" if len(median) == 2 else "–"
    failed = "; ".join(f"{s}: {len(failures[(test, s)])}× {failures[(test, s)][0]}"
                       for s in ("store", "redis") if (test, s) in failures)
    print(f"| {test} | {shown('store')} | {shown('redis')} | {ratio} | {failed} |")
EOF
