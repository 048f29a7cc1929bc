# Helpers shared by the benchmark scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until something answers HTTP on 127.0.0.1:PORT.
wait_serving() { # PORT
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "nothing serves on port $1" >&2
    return 1
}
