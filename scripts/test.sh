#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs every test.
# `.ci/run` calls exactly this (after the format and lint checks).
set -euo pipefail
cd "$(dirname "$0")/.."

# install_package DEBIAN_PACKAGE: apt-get install it.
install_package() {
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# install_missing COMMAND DEBIAN_PACKAGE: install the package when COMMAND is missing.
install_missing() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "test.sh: installing $2 (for $1)" >&2
        install_package "$2"
    fi
}

# pip_install REQUIREMENT: pip-installs a pinned Python package.
pip_install() {
    if ! python3 -m pip --version >/dev/null 2>&1; then
        install_package python3-pip
    fi
    # Debian's own python3 refuses pip installs outside a virtualenv unless told.
    python3 -m pip install --quiet "$1" ||
        python3 -m pip install --quiet --break-system-packages "$1"
}

# The examples in other languages run under herdsman in the tests.
install_missing node nodejs
install_missing npm npm
install_missing python3 python3
# The README's Go server is built and run as written (tests/readme.rs); a Go net/http server
# that binds $PORT runs behind the proxy (tests/proxy.rs).
install_missing go golang-go
# The README's Ruby line runs Debian's puma under `bundle exec` (tests/readme.rs).
install_missing puma puma
install_missing bundle ruby-bundler
# The admin dashboard runs in headless Chromium, driven by playwright-core (tests/admin.rs).
install_missing chromium chromium
# `herdsman monit` runs in a real terminal: tmux, driven by send-keys and capture-pane
# (tests/monit.rs).
install_missing tmux tmux
# The control-socket test runs a client as `nobody`; the colour test needs a pseudo-terminal.
install_missing setpriv util-linux
# The pid-1 test runs herdsman under unshare and enters its namespace with nsenter.
install_missing unshare util-linux
install_missing nsenter util-linux
install_missing script bsdutils
# The shared-state tests compare the embedded store with a real redis-server.
install_missing redis-server redis-server

# The shared-state examples and tests use redis-py 8 (RESP3 by default) and ioredis.
REDIS_PY=8.1.0
if ! python3 -c 'import redis, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
    echo "test.sh: installing redis-py $REDIS_PY (for examples/python/counter.py and tests/state/)" >&2
    pip_install "redis==$REDIS_PY"
fi
# tests/state_libraries.rs runs a job queue on the store through rq, pinned like redis-py.
RQ=3.0.0
if ! python3 -c "import rq, sys; sys.exit(rq.__version__ != '$RQ')" 2>/dev/null; then
    echo "test.sh: installing rq $RQ (for examples/python/jobs_app.py and tests/state_libraries.rs)" >&2
    pip_install "rq==$RQ"
fi
# The readiness tests (tests/python_servers.rs) and the README's Python lines (tests/readme.rs)
# run real gunicorn and uvicorn, pinned.
if ! command -v gunicorn >/dev/null 2>&1 || ! command -v uvicorn >/dev/null 2>&1; then
    echo "test.sh: installing gunicorn and uvicorn (for tests/python_servers.rs, tests/readme.rs, tests/proxy.rs)" >&2
    if [ "$(command -v python3)" = /usr/bin/python3 ]; then
        install_package gunicorn
        install_package uvicorn
    else
        python3 -m pip install --quiet gunicorn==23.0.0 uvicorn==0.32.1
    fi
fi
# The Node examples' packages (ioredis, Express: tests/node_cluster.rs; BullMQ,
# rate-limiter-flexible, connect-redis: tests/state_libraries.rs; playwright-core, which drives
# the dashboard: tests/admin.rs), installed again whenever package-lock.json differs from the one
# they were installed from (the stamp), so a checkout that adds a dependency gets it even where
# node_modules already exists.
node_stamp=examples/node/node_modules/.herdsman-installed-lock
if [ ! -d examples/node/node_modules ] || ! cmp -s examples/node/package-lock.json "$node_stamp"; then
    echo "test.sh: installing the Node examples' packages (npm ci in examples/node)" >&2
    (cd examples/node && npm ci --no-audit --no-fund --silent)
    cp examples/node/package-lock.json "$node_stamp"
fi

# The benchmark's parsers and report, on stored wrk reports (no server, no load).
bench/run --self-test

# `cargo test` builds the examples too; the integration tests run examples/testserver.
cargo test --all-targets --no-fail-fast
# The API documentation's examples compile (`--all-targets` leaves doc tests out).
cargo test --doc
