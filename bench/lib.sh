# Helpers shared by the benchmark scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until something answers HTTP on 127.0.0.1:PORT; given the PID of the
# server, gives up as soon as that process has exited.
wait_serving() { # PORT [PID]
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            echo "process $2 exited before serving port $1" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "nothing serves on port $1" >&2
    return 1
}

# Installs PACKAGE with apt when COMMAND is missing.
need() { # COMMAND PACKAGE
    command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }
}

# Builds bench/floor (the bare handoff and relay loops, a workspace of its own, so that the main
# crate's build never compiles it) and sets FLOOR to it.
build_floor() {
    cargo build --quiet --release --manifest-path bench/floor/Cargo.toml --target-dir target/bench-floor
    FLOOR=$PWD/target/bench-floor/release/herdsman-bench-floor
}

# Sets LOAD_CPUS and SERVER_CPUS, command prefixes that run the load generator on CPU 0 and the
# servers on the other CPUs, so that they do not trade places on the same cores (on a small
# machine that contention, not the servers, decides most of the variance). PIN=0, or a machine
# with one CPU, leaves both empty: the scheduler places everything. Sets PIN to what was done.
pin_cpus() {
    PIN=${PIN:-1}
    [ "$(nproc)" -ge 2 ] || PIN=0
    LOAD_CPUS=() SERVER_CPUS=()
    if [ "$PIN" = 1 ]; then
        LOAD_CPUS=(taskset -c 0)
        SERVER_CPUS=(taskset -c "1-$(($(nproc) - 1))")
    fi
}

# Describes pin_cpus' choice for a table's caption; LOAD names the load generator (wrk).
pinning() { # [LOAD]
    [ "$PIN" = 1 ] && echo "${1:-wrk} on CPU 0, servers on the others" || echo "unpinned"
}

# PID → utime+stime in clock ticks (every thread's, those gone included). The name in
# /proc/PID/stat may hold spaces (PM2's daemon is "PM2 v7.0.4: God"): fields count after it.
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

descendants() { # PID → the pids of every process below PID (herdsman's workers sit under a shim)
    local child
    for child in $(pgrep -P "$1"); do
        echo "$child"
        descendants "$child"
    done
}

peak_rss_kb() { # PID → the process's peak resident memory (VmHWM) in kB
    awk '/VmHWM/ { print $2 }' "/proc/$1/status"
}

# Runs wrk on LOAD_CPUS against http://127.0.0.1:PORT/ for SECONDS with CONNECTIONS (default
# 64) connections, keep-alive or, for MODE close, a new connection per request (`Connection:
# close`); its report (with `--latency`'s percentiles) goes to FILE, for wrk_figures.
wrk_load() { # PORT MODE SECONDS FILE
    local header=()
    [ "$2" = close ] && header=(-H "Connection: close")
    "${LOAD_CPUS[@]}" wrk -t1 -c"${CONNECTIONS:-64}" -d"$3s" --latency "${header[@]}" \
        "http://127.0.0.1:$1/" >"$4"
}

# The figures of a wrk report: requests per second, failed requests (socket errors and non-2xx
# answers) and requests done.
wrk_figures() { # FILE → "REQUESTS_PER_SECOND FAILED REQUESTS"
    awk '/Requests\/sec/ { rps = $2 } / requests in / { requests = $1 }
         /Socket errors/ { gsub(",", ""); failed += $4 + $6 + $8 + $10 } /Non-2xx/ { failed += $NF }
         END { print rps, failed + 0, requests + 0 }' "$1"
}

# Processes a script started, stopped by stop_started: SIGTERM, then SIGKILL after 5 s.
STARTED=()
stop_started() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    STARTED=()
}

# Installs PM2 $PM2_VERSION (default 7.0.4, the one bench/RESULTS.md measured) from npm under
# DIR (once) with a private PM2_HOME there, so that no PM2 of the machine's is touched; sets PM2
# to its command. Whoever calls this must `"$PM2" kill` on exit.
install_pm2() { # DIR
    need node nodejs
    need npm npm
    local version=${PM2_VERSION:-7.0.4} installed=""
    [ -f "$1/pm2/node_modules/pm2/package.json" ] &&
        installed=$(node -p "require('$1/pm2/node_modules/pm2/package.json').version")
    if [ "$installed" != "$version" ]; then
        npm install --silent --no-audit --no-fund --prefix "$1/pm2" "pm2@$version" >/dev/null
    fi
    PM2="$1/pm2/node_modules/.bin/pm2"
    export PM2_HOME="$1/pm2-home"
}

# The path of a Node example app: NAME (`http`, `express`, …) is examples/node/NAME-app.js; a
# path is itself. Installs examples/node's packages (`npm ci`) if the app needs them.
node_app() { # NAME_OR_PATH → absolute path
    local app=$1
    [ -f "$app" ] || app=examples/node/$1-app.js
    [ -f "$app" ] || { echo "no Node app $1 (examples/node/$1-app.js)" >&2; return 1; }
    app=$(realpath "$app")
    if [ "$(dirname "$app")" = "$PWD/examples/node" ] && [ ! -d examples/node/node_modules ]; then
        npm ci --silent --no-audit --no-fund --prefix examples/node >/dev/null
    fi
    echo "$app"
}

# Whether this Node can bind SO_REUSEPORT (`listen({ reusePort: true })`, Node 22.12/23.1 on):
# two servers bound to one port with it. Older Node ignores the option, and the second fails.
node_reuseport() {
    node -e '
        const net = require("node:net");
        const first = net.createServer().listen({ port: 0, host: "127.0.0.1", reusePort: true }, () => {
            const second = net.createServer().on("error", () => process.exit(1));
            second.listen({ port: first.address().port, host: "127.0.0.1", reusePort: true },
                () => process.exit(0));
        });' 2>/dev/null
}

# The setups the benchmarks compare, one app on WORKERS (default 2) workers:
#   single            the app alone: one process that binds $PORT
#   limit             WORKERS copies that bind $PORT with SO_REUSEPORT themselves, no primary
#   node-rr/node-none Node's cluster module as the primary (bench/node-cluster-primary.js)
#   pm2               PM2's cluster mode, `pm2 start APP -i WORKERS` (private PM2_HOME)
#   herdsman-BALANCE  `herdsman run --balance BALANCE`
# APP_KIND=node runs `node $APP_PATH` (an app that listens on $PORT); APP_KIND=rust runs $SERVER
# (examples/testserver). Uses HERDSMAN, PM2 (install_pm2), SERVER_CPUS (pin_cpus) and
# BENCH_NAME (the cluster's --name, for `herdsman reload`).
#
# start_setup NAME PORT LOG → starts NAME serving on 127.0.0.1:PORT, its output in LOG. Sets
# PRIMARY, the pid whose CPU and memory are the supervisor's ("" without one), and ROOTS, the
# pids under which every process of the setup runs. Returns 0 once it serves; 3 with
# SKIP_REASON set when this setup cannot run here (a Node-only setup for the Rust server, a
# --balance value this herdsman rejects, a Node without reusePort); 1 if it does not serve.
start_setup() {
    local name=$1 port=$2 log=$3 workers=${WORKERS:-2} command=() status=0
    PRIMARY="" ROOTS="" SKIP_REASON=""
    if [ "$APP_KIND" = rust ]; then command=("$SERVER"); else command=(node "$APP_PATH"); fi
    case $name in
        single)
            PORT=$port TESTSERVER_HOST=127.0.0.1 "${SERVER_CPUS[@]}" "${command[@]}" >"$log" 2>&1 &
            STARTED+=($!) ROOTS=$! ;;
        limit)
            if [ "$APP_KIND" = node ]; then
                node_reuseport || {
                    SKIP_REASON="node $(node --version) cannot bind SO_REUSEPORT (reusePort: Node 22.12 on)"
                    return 3
                }
                command=(node --require "$PWD/bench/reuseport.js" "$APP_PATH")
            fi
            for _ in $(seq 1 "$workers"); do
                TESTSERVER_REUSEPORT=1 TESTSERVER_HOST=127.0.0.1 PORT=$port "${SERVER_CPUS[@]}" \
                    "${command[@]}" >>"$log" 2>&1 &
                STARTED+=($!) ROOTS="${ROOTS:+$ROOTS }$!"
            done ;;
        node-rr | node-none | pm2)
            if [ "$APP_KIND" != node ]; then
                SKIP_REASON="Node's cluster module and PM2's cluster mode run Node apps only"
                return 3
            fi
            if [ "$name" = pm2 ]; then
                PORT=$port "${SERVER_CPUS[@]}" "$PM2" start "$APP_PATH" --name "$BENCH_NAME" \
                    -i "$workers" >"$log" 2>&1
                PRIMARY=$(cat "$PM2_HOME/pm2.pid") ROOTS=$PRIMARY
            else
                BENCH_SCHED=${name#node-} PORT=$port "${SERVER_CPUS[@]}" \
                    node bench/node-cluster-primary.js "$APP_PATH" "$workers" >"$log" 2>&1 &
                STARTED+=($!) PRIMARY=$! ROOTS=$!
            fi ;;
        floor-relay) # bench/floor's bare relay (FLOOR: build_floor)
            "${SERVER_CPUS[@]}" "$FLOOR" relay "$port" "$workers" -- "${command[@]}" >"$log" 2>&1 &
            STARTED+=($!) PRIMARY=$! ROOTS=$! ;;
        floor-node) # bench/floor's bare handoff in Node's dialect (FLOOR: build_floor)
            if [ "$APP_KIND" != node ]; then
                SKIP_REASON="the Node handoff floor runs Node apps only"
                return 3
            fi
            "${SERVER_CPUS[@]}" "$FLOOR" node-handoff "$port" "$workers" -- "${command[@]}" >"$log" 2>&1 &
            STARTED+=($!) PRIMARY=$! ROOTS=$! ;;
        herdsman-*)
            local balance=${name#herdsman-} ready=() notify=0 admin=() ipc=()
            # NAME+admin: the same with the admin server on (what it costs the data path).
            if [[ $balance == *+admin ]]; then
                balance=${balance%+admin} admin=(--admin 127.0.0.1:0)
            fi
            # The test server says when it serves (READY=1); behind the proxy, the primary
            # sees its private port accept.
            if [ "$APP_KIND" = rust ] && [[ $balance != proxy* ]]; then
                ready=(--ready notify) notify=1
            fi
            # The primary hands the test server its connections over its IPC channel
            # (`Worker::listener()`).
            if [ "$APP_KIND" = rust ] && [[ $balance == round-robin || $balance == least-conn ]]; then
                ipc=(--ipc)
            fi
            TESTSERVER_NOTIFY=$notify TESTSERVER_HOST=127.0.0.1 "${SERVER_CPUS[@]}" "$HERDSMAN" run \
                --workers "$workers" --host 127.0.0.1 --port "$port" --name "$BENCH_NAME" \
                --balance "$balance" "${ready[@]}" "${admin[@]}" "${ipc[@]}" -- "${command[@]}" >"$log" 2>&1 &
            STARTED+=($!) PRIMARY=$! ROOTS=$! ;;
        *) echo "unknown setup $name" >&2; return 1 ;;
    esac
    wait_serving "$port" "${ROOTS%% *}" 2>>"$log" && return 0
    if [[ $name == herdsman-* ]] && ! kill -0 "$PRIMARY" 2>/dev/null; then
        wait "$PRIMARY" || status=$?
        if [ "$status" = 2 ]; then # a usage error: this herdsman has no such mode for this app
            SKIP_REASON="herdsman refuses it (exit 2): $(grep -m1 -i 'error' "$log" || head -1 "$log")"
            return 3
        fi
    fi
    echo "$name did not serve; its log ($log):" >&2
    tail -20 "$log" >&2
    return 1
}

stop_setup() { # NAME
    if [ "$1" = pm2 ]; then "$PM2" kill >/dev/null 2>&1 || true; else stop_started; fi
}

# reload_setup NAME LOG PRIMARY → a rolling restart of the running setup NAME, returning once it
# is done: `herdsman reload`, `pm2 reload`, or for Node's cluster module SIGUSR2 to
# bench/node-cluster-primary.js, which logs "rolling restart done" (in LOG) when it is. Returns 3
# for a setup without a supervisor (single, limit).
reload_setup() {
    local name=$1 log=$2 primary=$3 done_before
    case $name in
        herdsman-*) "$HERDSMAN" reload "$BENCH_NAME" >/dev/null ;;
        pm2) "$PM2" reload "$BENCH_NAME" >/dev/null ;;
        node-*)
            done_before=$(grep -c 'rolling restart done' "$log" || true)
            kill -USR2 "$primary"
            for _ in $(seq 1 600); do
                [ "$(grep -c 'rolling restart done' "$log" || true)" -gt "$done_before" ] && return 0
                sleep 0.05
            done
            echo "node cluster primary $primary: no rolling restart done within 30 s" >&2
            return 1 ;;
        *) return 3 ;;
    esac
}
