"""`bench/run --self-test`: the pure parts of bench/measure.py and bench/report.py on stored
inputs (bench/testdata/: reports of real wrk runs, one with socket errors added), without a
server or a load. Exits 1 with what differs."""
import os
import subprocess
import sys

import measure
import report

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURES = []


def expect(what, actual, expected):
    if actual != expected:
        FAILURES.append(f"{what}: got {actual!r}, expected {expected!r}")


def wrk_figures(path):
    """bench/lib.sh's own reading of a wrk report: req/s, failed, requests."""
    out = subprocess.run(["bash", "-c", 'source "$0/lib.sh"; wrk_figures "$1"', HERE, path],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def check_wrk():
    cases = {
        "wrk-latency.txt": {"rps": 365.61, "failed": 0, "requests": 668, "p50_ms": 6.12,
                            "p99_ms": 19.17},
        "wrk-errors.txt": {"rps": 199.21, "failed": 215, "requests": 215, "p50_ms": 3.64,
                           "p99_ms": 409.6},
        "wrk-socket-errors.txt": {"rps": 365.61, "failed": 16, "requests": 668, "p50_ms": 6.12,
                                  "p99_ms": 1020.0},
    }
    for name, expected in cases.items():
        path = os.path.join(HERE, "testdata", name)
        with open(path) as text:
            figures = measure.parse_wrk(text.read())
        expect(f"parse_wrk({name})", figures, expected)
        expect(f"wrk_figures({name}) (bench/lib.sh) and parse_wrk agree", wrk_figures(path),
               (figures["rps"], figures["failed"], figures["requests"]))


def check_percentile():
    values = list(range(1, 101))
    expect("p50 of 1..100", measure.percentile(values, 0.5), 50)
    expect("p99 of 1..100", measure.percentile(values, 0.99), 99)
    expect("p99 of 3 values", measure.percentile([5, 1, 9], 0.99), 9)
    expect("p50 of 1 value", measure.percentile([7], 0.5), 7)


def run_record(setup, round_, measure_, **figures):
    return {"app": "http", "setup": setup, "round": round_, "measure": measure_, **figures}


def load(setup, round_, kind, rps, requests=1000, ticks=0, rss=4096, hwm=5120, **more):
    figures = {"rps": rps, "failed": 0, "requests": requests, "p50_ms": 1.0, "p99_ms": 4.0,
               "primary_ticks": ticks, "rss_kb": rss, "hwm_kb": hwm, "other_cores": 0.01,
               "contaminated": False, "excluded": False}
    return run_record(setup, round_, kind, **{**figures, **more})


def check_report():
    ticks = os.sysconf("SC_CLK_TCK")
    records = [{"app": "http", "setup": "pm2", "round": 1, "measure": "quiet", "quiet": False,
                "other_cores": 0.5, "waited_s": 5.0},
               {"app": "http", "setup": "limit", "measure": "skipped", "reason": "node v20"},
               # The quiet check of a setup that never ran counts not.
               {"app": "http", "setup": "limit", "round": 1, "measure": "quiet", "quiet": False,
                "other_cores": 0.5, "waited_s": 5.0}]
    for round_, (pm2, herdsman) in enumerate(((1000, 2100), (1200, 2500), (900, 1900)), 1):
        records += [load("pm2", round_, "keepalive", 5000, rss=70 * 1024),
                    load("pm2", round_, "close", pm2, rss=70 * 1024),
                    load("herdsman-reuseport", round_, "keepalive", 5200),
                    # ticks: 10 µs per connection of 1,000 (the median round's)
                    load("herdsman-reuseport", round_, "close", herdsman, ticks=ticks // 100),
                    load("herdsman-reuseport", round_, "reload-close", herdsman * 0.9,
                         reloads_ok=True, reloads_within_run=True),
                    load("pm2", round_, "reload-close", pm2 * 0.8, reloads_ok=True,
                         reloads_within_run=True)]
    # A contaminated run, excluded: it must change no median.
    records.append(load("pm2", 1, "close", 99999, excluded=True, contaminated=True))
    records.append(run_record("herdsman-reuseport", 1, "distribution",
                              by_pid={"11": 1010, "12": 990}, failed=0))
    records.append(run_record("herdsman-reuseport", 1, "kill", victim=11, replaced_ms=120.5,
                              failed=2, requests=40, other_cores=0.0, excluded=False))
    runs = report.Runs(records)
    expect("excluded runs", runs.excluded, 1)
    expect("not quiet", runs.not_quiet, 1)
    expect("median close req/s of PM2", runs.median("http", "pm2", "close", "rps"), 1000)
    expect("reload ratio close", runs.reload_ratio("http", "herdsman-reuseport", "close"),
           (0.9, 0, True))
    # 10 µs per connection only if the tick rate divides evenly: compare rounded.
    expect("CPU per new connection", round(runs.cpu_per_connection_us("http",
                                                                      "herdsman-reuseport")),
           round(ticks // 100 / ticks * 1e6 / 1000))
    meta = {"date": "2026-12-03", "command": "bench/run", "commit": "abc1234", "machine": "m",
            "versions": "v", "pinning": "p", "rounds": "3", "seconds": "10",
            "reload_seconds": "10", "hol_ms": "1000", "minutes": "1", "other_limit": "0.10",
            "chart": "bench/chart.svg", "mode": "full"}
    text = "\n".join(report.section(runs, meta))
    for line in ("| herdsman reuseport | 2,100 | 5,200 | 10.0 µs | 4.0 MB | 0.90 (0) | – |",
                 "| PM2 cluster mode | 1,000 | 5,000 | 0.0 µs | 70.0 MB | 0.80 (0) | – |",
                 "| close req/s ≥ 2× PM2 | http | herdsman reuseport | 2.10× | yes |",
                 "| reload ratio (close) ≥ PM2's (0.80), 0 failed | http | herdsman reuseport | "
                 "0.90, 0 failed | yes |",
                 "| herdsman reuseport | 50.5 % (1,010/990) | – | 120 ms (2) | – | 0.90 (0) |",
                 "- skipped limit: 2 processes, own SO_REUSEPORT for http: node v20",
                 "**Noisy machine.**"):
        if line not in text:
            FAILURES.append(f"report: no line {line!r} in:\n{text}")
    expect("chart rows", report.chart_rows(runs)[:2],
           ["examples/node/http-app.js: req/s, new connection per request\tPM2 cluster mode\t1000\t0",
            "examples/node/http-app.js: req/s, new connection per request\therdsman reuseport\t"
            "2100\t1"])


def run():
    check_wrk()
    check_percentile()
    check_report()
    for failure in FAILURES:
        print(f"FAILED: {failure}", file=sys.stderr)
    checks = "wrk reports, percentiles, the report's figures"
    if FAILURES:
        sys.exit(1)
    print(f"bench self-test: ok ({checks})")
