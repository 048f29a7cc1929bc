#!/usr/bin/env python3
"""The measures of bench/run, on one running setup; bench/run starts and stops the setups.

    measure.py quiet RAW MAX_SECONDS APP SETUP ROUND
        waits (MAX_SECONDS at most) until the machine is quiet: other processes using less than
        $OTHER_LIMIT of a core (default 0.10) over half a second; appends what it saw to RAW.
    measure.py skipped RAW APP SETUP REASON
        records that SETUP could not run for APP, and why.
    measure.py setup RAW APP SETUP ROUND PORT PRIMARY ROOTS LOG
        every measure of the setup serving on 127.0.0.1:PORT, appended to RAW as JSON lines.
        PRIMARY is the supervisor's pid ("" without one), ROOTS the pids under which all of the
        setup's processes run (space-separated), LOG its output (for reload_setup).

Environment (set by bench/run): SECONDS_PER_RUN, WARMUP, RELOAD_SECONDS, RELOAD_MODES, HOL_MS, SPIN_PATH
(`/burn` for the test server, `/spin` for the Node apps), OTHER_LIMIT, PIN, and what
bench/lib.sh's reload_setup needs (HERDSMAN, PM2, PM2_HOME, BENCH_NAME, XDG_RUNTIME_DIR).

The CPU of other processes during a measure is /proc/stat's user+nice+system ticks less those of
the setup's processes (utime+stime+cutime+cstime of everything under ROOTS, so that a process
that exits during the run still counts, in its parent's cutime), of this script and of what it
ran (wrk, the reload commands: os.times' children). A measure whose other processes used more
than OTHER_LIMIT of a core is marked `contaminated`, excluded, and run once more.
"""
import collections
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
OTHER_LIMIT = float(os.environ.get("OTHER_LIMIT", "0.10"))


# ---- /proc ----------------------------------------------------------------------------------

def busy_ticks():
    """The machine's user+nice+system ticks, all CPUs (irq, softirq, steal and idle left out)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return sum(int(value) for value in fields[1:4])


def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) of PID, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    # The name may hold spaces and parentheses: the fields count from after its last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def tree_ticks(roots):
    """CPU ticks of every process under ROOTS (themselves included), reaped children included."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(name)
            if stat:
                table[int(name)] = stat
    children = collections.defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    total, todo, seen = 0, [root for root in roots if root in table], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1] + table[pid][2]
        todo.extend(children[pid])
    return total, seen


def own_ticks(pid):
    stat = proc_stat(pid) if pid else None
    return stat[1] if stat else 0


def status_kb(pid, key):
    """VmRSS or VmHWM of PID in kB (0 when there is no such process)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def script_ticks():
    times = os.times()
    return (times.user + times.system + times.children_user + times.children_system) * TICKS


class Watch:
    """The CPU that other processes use during a `with` block, and the supervisor's own CPU and
    memory (VmRSS sampled every 50 ms: its highest; VmHWM at the end)."""

    def __init__(self, roots, primary):
        self.roots, self.primary = roots, primary

    def __enter__(self):
        self.started = time.monotonic()
        self.busy, self.script = busy_ticks(), script_ticks()
        self.tree = tree_ticks(self.roots)[0]
        self.primary_ticks = own_ticks(self.primary)
        self.rss_kb, self.sampling = 0, True
        self.sampler = threading.Thread(target=self.sample, daemon=True)
        self.sampler.start()
        return self

    def sample(self):
        while self.sampling:
            self.rss_kb = max(self.rss_kb, status_kb(self.primary, "VmRSS") if self.primary else 0)
            time.sleep(0.05)

    def __exit__(self, *_):
        self.sampling = False
        self.sampler.join()
        elapsed = time.monotonic() - self.started
        other = (busy_ticks() - self.busy) - (tree_ticks(self.roots)[0] - self.tree) \
            - (script_ticks() - self.script)
        self.figures = {
            "other_cores": round(max(other, 0) / TICKS / elapsed, 3),
            "primary_ticks": own_ticks(self.primary) - self.primary_ticks,
            "rss_kb": self.rss_kb,
            "hwm_kb": status_kb(self.primary, "VmHWM") if self.primary else 0,
        }
        self.figures["contaminated"] = self.figures["other_cores"] > OTHER_LIMIT


def wait_quiet(max_seconds):
    """Waits until other processes use less than OTHER_LIMIT of a core over 0.5 s."""
    deadline = time.monotonic() + max_seconds
    while True:
        with Watch([], None) as watch:
            time.sleep(0.5)
        cores = watch.figures["other_cores"]
        if cores <= OTHER_LIMIT:
            return True, cores
        if time.monotonic() >= deadline:
            return False, cores


# ---- wrk --------------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text):
    """The figures of a wrk --latency report: req/s, failed (socket errors and non-2xx/3xx
    answers), requests, p50 and p99 latency in ms."""
    figures = {"rps": 0.0, "failed": 0, "requests": 0, "p50_ms": None, "p99_ms": None}
    for line in text.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(words[1])
        elif " requests in " in line:
            figures["requests"] = int(words[0])
        elif line.strip().startswith("Socket errors:"):
            figures["failed"] += sum(int(n) for n in re.findall(r"\d+", line))
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            figures["failed"] += int(words[-1])
        elif len(words) == 2 and words[0] in ("50%", "99%"):
            value = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", words[1])
            if value:
                key = "p50_ms" if words[0] == "50%" else "p99_ms"
                figures[key] = round(float(value[1]) * UNITS[value[2]], 3)
    return figures


def wrk(port, mode, seconds, connections=64):
    """bench/lib.sh's wrk_load (pinned as pin_cpus says), parsed."""
    report = f"{os.environ.get('OUT', '/tmp')}/wrk-{port}.txt"
    subprocess.run(["bash", "-c", 'source "$0/lib.sh"; pin_cpus; CONNECTIONS=$5 wrk_load "$@"',
                    HERE, str(port), mode, str(seconds), report, str(connections)], check=True)
    with open(report) as text:
        return parse_wrk(text.read())


def reload_setup(setup, log, primary):
    """bench/lib.sh's reload_setup: True once the rolling restart is done."""
    done = subprocess.run(["bash", "-c", 'source "$0/lib.sh"; reload_setup "$@"', HERE,
                           setup, log, str(primary or "")])
    return done.returncode == 0


# ---- plain HTTP on fresh connections ----------------------------------------------------------

def get(port, path="/", timeout=5.0):
    """GET PATH on a new connection (`Connection: close`) → (status, pid in the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    status = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    pid = re.search(rb'"pid":\s*(\d+)', data)
    if not status:
        raise OSError(f"no HTTP answer: {data[:80]!r}")
    return int(status[1]), int(pid[1]) if pid else None


def distribution(port, connections=2000):
    """How many of CONNECTIONS fresh connections, one after the other, each worker answered."""
    by_pid, failed = collections.Counter(), 0
    for _ in range(connections):
        try:
            status, pid = get(port)
            if status == 200 and pid:
                by_pid[pid] += 1
            else:
                failed += 1
        except OSError:
            failed += 1
    return {"by_pid": dict(by_pid.most_common()), "failed": failed}


def percentile(values, share):
    """Nearest-rank percentile (share 0.99 → p99) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * share) - 1)]


def head_of_line(port, spin_path, busy_ms, gap_ms=10):
    """One request keeps a worker in CPU work for BUSY_MS; meanwhile a quick request on a fresh
    connection every GAP_MS (for 80 % of that time): their latency."""
    spin = threading.Thread(target=lambda: get(port, f"{spin_path}?ms={busy_ms}",
                                               timeout=busy_ms / 1e3 + 10))
    spin.start()
    time.sleep(0.05)  # the spin request reaches a worker
    latencies, failed, threads = [], [0], []

    def quick():
        started = time.monotonic()
        try:
            get(port, timeout=busy_ms / 1e3 + 10)
            latencies.append((time.monotonic() - started) * 1e3)
        except OSError:
            failed[0] += 1

    start = time.monotonic()
    for index in range(int(busy_ms * 0.8 / gap_ms)):
        time.sleep(max(0.0, start + index * gap_ms / 1e3 - time.monotonic()))
        thread = threading.Thread(target=quick)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    spin.join()
    if not latencies:
        return {"requests": 0, "failed": failed[0]}
    return {"requests": len(latencies), "failed": failed[0], "busy_ms": busy_ms,
            "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "slow": sum(latency > 100 for latency in latencies)}


def recovery(port, roots, answering, cap_seconds=10.0):
    """kill -9 of the worker that answered most, while 4 clients open fresh connections in a
    loop: ms until a process that was not there before answers (the replacement accepts), and
    the requests started meanwhile that failed."""
    victim = max(answering, key=answering.get)
    known = tree_ticks(roots)[1] | set(answering)
    results, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, pid = get(port, timeout=2.0)
                results.append((started, time.monotonic(), pid if status == 200 else None))
            except OSError:
                results.append((started, time.monotonic(), None))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(0.2)
    killed = time.monotonic()
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        stop.set()
        for thread in clients:
            thread.join()
        return {"victim": victim, "error": "the worker had exited already"}
    replaced = None
    while replaced is None and time.monotonic() < killed + cap_seconds:
        time.sleep(0.005)
        fresh = [done for started, done, pid in list(results) if pid and pid not in known]
        replaced = min(fresh) if fresh else None
    stop.set()
    for thread in clients:
        thread.join()
    until = replaced or killed + cap_seconds
    window = [pid for started, _, pid in results if killed <= started <= until]
    replaced_ms = round((replaced - killed) * 1e3, 1) if replaced else None
    return {"victim": victim, "replaced_ms": replaced_ms,
            "failed": sum(pid is None for pid in window), "requests": len(window)}


# ---- one setup --------------------------------------------------------------------------------

def measure_setup(raw, app, setup, round_, port, primary, roots, log):
    # wrk takes whole seconds.
    seconds = int(os.environ.get("SECONDS_PER_RUN", "10"))
    reload_seconds = max(seconds, int(os.environ.get("RELOAD_SECONDS", "10")))
    spin_path = os.environ.get("SPIN_PATH", "/spin")
    busy_ms = int(os.environ.get("HOL_MS", "1000"))
    supervised = bool(primary)

    def record(measure, figures):
        line = {"app": app, "setup": setup, "round": round_, "measure": measure, **figures}
        with open(raw, "a") as out:
            out.write(json.dumps(line) + "\n")
        shown = {k: v for k, v in figures.items() if k not in ("by_pid",)}
        print(f"  {app} {setup} round {round_} {measure}: {shown}", flush=True)

    def watched(measure, run, again=True):
        """RUN under a Watch; once more if others used the CPU meanwhile."""
        for attempt in (1, 2):
            with Watch(roots, primary) as watch:
                figures = run()
            figures.update(watch.figures, excluded=watch.figures["contaminated"], attempt=attempt)
            record(measure, figures)
            if not figures["contaminated"] or not again:
                return figures

    wrk(port, "keepalive", int(os.environ.get("WARMUP", "1")))
    watched("keepalive", lambda: wrk(port, "keepalive", seconds))
    watched("close", lambda: wrk(port, "close", seconds))
    if supervised:
        # For the supervisor's memory with 1,000 connections open: 5 s are enough.
        watched("keepalive-c1000", lambda: wrk(port, "keepalive", min(seconds, 5),
                                               connections=1000))
    spread = distribution(port)
    record("distribution", spread)
    watched("head-of-line", lambda: head_of_line(port, spin_path, busy_ms))
    if supervised:
        # Before the reloads, which replace the workers that the spread saw answer.
        answering = {int(pid): count for pid, count in spread["by_pid"].items()}
        if answering:
            watched("kill", lambda: recovery(port, roots, answering), again=False)
        for mode in os.environ.get("RELOAD_MODES", "keepalive close").split():
            watched(f"reload-{mode}", lambda: reload_run(port, mode, reload_seconds, setup, log,
                                                         primary))


def reload_run(port, mode, seconds, setup, log, primary):
    """wrk for SECONDS, with a rolling restart at 30 % and another at 60 % of the run (or as
    soon as the first is done)."""
    outcome = {}
    load = threading.Thread(target=lambda: outcome.update(wrk(port, mode, seconds)))
    started = time.monotonic()
    load.start()
    reloads = []
    for at in (0.3, 0.6):
        time.sleep(max(0.0, started + seconds * at - time.monotonic()))
        began = time.monotonic()
        reloads.append((reload_setup(setup, log, primary), round(time.monotonic() - began, 2)))
    within = time.monotonic() - started <= seconds
    load.join()
    outcome.update(reloads_ok=all(ok for ok, _ in reloads), reload_seconds=[s for _, s in reloads],
                   reloads_within_run=within, run_seconds=seconds)
    return outcome


def main(argv):
    if len(argv) == 7 and argv[1] == "quiet":
        raw, max_seconds, app, setup, round_ = argv[2:]
        began = time.monotonic()
        quiet, cores = wait_quiet(float(max_seconds))
        waited = round(time.monotonic() - began, 1)
        if not quiet:
            print(f"  machine NOT quiet after {waited} s: other processes used {cores:.2f} of a "
                  f"core; measuring {app} {setup} anyway", flush=True)
        with open(raw, "a") as out:
            out.write(json.dumps({"app": app, "setup": setup, "round": int(round_),
                                  "measure": "quiet", "quiet": quiet, "other_cores": cores,
                                  "waited_s": waited}) + "\n")
    elif len(argv) == 6 and argv[1] == "skipped":
        raw, app, setup, reason = argv[2:]
        with open(raw, "a") as out:
            out.write(json.dumps({"app": app, "setup": setup, "measure": "skipped",
                                  "reason": reason}) + "\n")
    elif len(argv) == 10 and argv[1] == "setup":
        raw, app, setup, round_, port, primary, roots, log = argv[2:]
        measure_setup(raw, app, setup, int(round_), int(port), int(primary) if primary else None,
                      [int(pid) for pid in roots.split()], log)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
