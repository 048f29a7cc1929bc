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
# close`); its report goes to FILE, for wrk_figures.
wrk_load() { # PORT MODE SECONDS FILE
    local header=()
    [ "$2" = close ] && header=(-H "Connection: close")
    "${LOAD_CPUS[@]}" wrk -t1 -c"${CONNECTIONS:-64}" -d"$3s" "${header[@]}" \
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

# Installs PM2 7 from npm under DIR (once) with a private PM2_HOME there, so that no PM2 of the
# machine's is touched; sets PM2 to its command. Whoever calls this must `"$PM2" kill` on exit.
install_pm2() { # DIR
    need node nodejs
    need npm npm
    if [ ! -x "$1/pm2/node_modules/.bin/pm2" ]; then
        npm install --silent --no-audit --no-fund --prefix "$1/pm2" pm2@7 >/dev/null
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
