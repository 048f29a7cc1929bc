#!/usr/bin/env python3
"""The report of bench/run: its measures (bench/measure.py's JSON lines) as a dated section of
bench/RESULTS.md, the README's performance table and the chart's data.

    report.py report RAW RESULTS CHART_TSV README META
        appends the section to RESULTS, writes CHART_TSV (bench/chart draws it) and, when README
        is a path, replaces the block between the README's `bench/run` markers with the
        section's summary (the same lines, so that every figure there traces to RESULTS). META:
        KEY=VALUE lines (mode, command, commit, machine, …).
    report.py self-test
        checks the wrk parser (against bench/lib.sh's wrk_figures too) and the report's figures
        on stored inputs; exits 1 on the first mismatch.

Medians over the rounds, ranges in parentheses (lowest–highest); measures marked `excluded`
(contaminated by other processes) are left out and counted.
"""
import collections
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import measure  # noqa: E402  (bench/measure.py, beside this file)

TICKS = os.sysconf("SC_CLK_TCK")
APPS = {"http": "examples/node/http-app.js", "express": "examples/node/express-app.js",
        "rust": "examples/testserver (Rust, one thread per process)"}
NAMES = {"single": "single process", "limit": "limit: 2 processes, own SO_REUSEPORT",
         "node-none": "Node cluster SCHED_NONE", "node-rr": "Node cluster SCHED_RR",
         "pm2": "PM2 cluster mode", "herdsman-reuseport": "herdsman reuseport",
         "herdsman-shared": "herdsman shared", "herdsman-round-robin": "herdsman round-robin",
         "herdsman-proxy": "herdsman proxy", "herdsman-proxy-rr": "herdsman proxy-rr",
         "herdsman-least-conn": "herdsman least-conn"}
README_BEGIN = "<!-- bench/run writes from here: its summary of bench/RESULTS.md -->"
README_END = "<!-- bench/run writes up to here -->"
DASH = "–"


class Runs:
    """The measures of one run of bench/run, by (app, setup, measure)."""

    def __init__(self, records):
        self.by = collections.defaultdict(list)
        self.excluded, self.not_quiet, self.quiet_checks = 0, 0, 0
        self.skipped, self.apps, self.setups = {}, [], []
        records = list(records)
        measured = {(r["app"], r["setup"]) for r in records
                    if r["measure"] not in ("quiet", "skipped")}
        # The quiet check of a setup that never ran (made before it was found out) counts not.
        records = [r for r in records if r["measure"] != "quiet" or (r["app"], r["setup"])
                   in measured]
        for record in records:
            app, setup, kind = record["app"], record["setup"], record["measure"]
            if app not in self.apps:
                self.apps.append(app)
            if kind == "quiet":
                self.quiet_checks += 1
                self.not_quiet += not record["quiet"]
            elif kind == "skipped":
                self.skipped.setdefault((app, setup), record["reason"])
            elif record.get("excluded"):
                self.excluded += 1
            else:
                if setup not in self.setups:
                    self.setups.append(setup)
                self.by[(app, setup, kind)].append(record)

    def setups_of(self, app):
        """The setups measured for APP, in bench/run's order (NAMES')."""
        order = list(NAMES) + [s for s in self.setups if s not in NAMES]
        return [s for s in order if (app, s, "keepalive") in self.by]

    def values(self, app, setup, kind, key):
        return [r[key] for r in self.by.get((app, setup, kind), []) if r.get(key) is not None]

    def median(self, app, setup, kind, key):
        values = self.values(app, setup, kind, key)
        return statistics.median(values) if values else None

    def cpu_per_connection_us(self, app, setup):
        runs = self.by.get((app, setup, "close"), [])
        values = [r["primary_ticks"] / TICKS * 1e6 / r["requests"] for r in runs if r["requests"]]
        return statistics.median(values) if values and setup_supervised(setup) else None

    def rss_mb(self, app, setup, kinds=("keepalive", "close"), key="rss_kb"):
        values = [r[key] for kind in kinds for r in self.by.get((app, setup, kind), [])]
        return max(values) / 1024 if values and setup_supervised(setup) else None

    def reload_ratio(self, app, setup, mode):
        """(median of reload-run req/s ÷ the same round's plain run, failed over all rounds)."""
        base = {r["round"]: r["rps"] for r in self.by.get((app, setup, mode), [])}
        runs = [r for r in self.by.get((app, setup, f"reload-{mode}"), []) if r["round"] in base]
        if not runs:
            return None, None, True
        ratios = [r["rps"] / base[r["round"]] for r in runs if base[r["round"]]]
        clean = all(r.get("reloads_ok") and r.get("reloads_within_run") for r in runs)
        return statistics.median(ratios), sum(r["failed"] for r in runs), clean


def setup_supervised(setup):
    return setup not in ("single", "limit")


def number(value, digits=0):
    return DASH if value is None else f"{value:,.{digits}f}"


def spread(values, digits=0, unit=""):
    """The median and, over several rounds, the range: `16,722 (15,900–17,300)`."""
    if not values:
        return DASH
    text = f"{statistics.median(values):,.{digits}f}{unit}"
    if len(values) > 1 and min(values) != max(values):
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text


def ratio(a, b):
    return DASH if a is None or not b else f"{a / b:.2f}"


def latency(runs, app, setup, kind):
    p50, p99 = runs.median(app, setup, kind, "p50_ms"), runs.median(app, setup, kind, "p99_ms")
    return DASH if p50 is None else f"{p50:.1f} / {p99:.1f} ms"


def throughput_table(runs, app):
    rows = ["| setup | keep-alive req/s | p50 / p99 | close req/s | p50 / p99 | close × PM2 | "
            "close × SCHED_NONE | supervisor CPU per new connection | supervisor RSS / peak | "
            "RSS, req/s at 1,000 connections |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pm2 = runs.median(app, "pm2", "close", "rps")
    none = runs.median(app, "node-none", "close", "rps")
    for setup in runs.setups_of(app):
        close = runs.median(app, setup, "close", "rps")
        cpu = runs.cpu_per_connection_us(app, setup)
        rss, hwm = runs.rss_mb(app, setup), runs.rss_mb(app, setup, key="hwm_kb")
        memory = DASH if rss is None else f"{rss:.1f} / {hwm:.1f} MB"
        wide = runs.rss_mb(app, setup, ("keepalive-c1000",))
        wide_rps = runs.median(app, setup, "keepalive-c1000", "rps")
        wide_text = DASH if wide is None else f"{wide:.1f} MB, {number(wide_rps)}"
        rows.append(
            f"| {NAMES.get(setup, setup)} | {spread(runs.values(app, setup, 'keepalive', 'rps'))} | "
            f"{latency(runs, app, setup, 'keepalive')} | "
            f"{spread(runs.values(app, setup, 'close', 'rps'))} | "
            f"{latency(runs, app, setup, 'close')} | {ratio(close, pm2)} | {ratio(close, none)} | "
            f"{DASH if cpu is None else f'{cpu:.1f} µs'} | {memory} | {wide_text} |")
    return rows


def robustness_table(runs, app):
    rows = ["| setup | busiest worker of 2,000 fresh connections | head-of-line p99 (waited > 100 ms) | "
            "kill -9 → replacement answers (failed meanwhile) | reload ratio keep-alive (failed) | "
            "reload ratio close (failed) |",
            "|---|---:|---:|---:|---:|---:|"]
    for setup in runs.setups_of(app):
        shares = []
        for record in runs.by.get((app, setup, "distribution"), []):
            counts = sorted(record["by_pid"].values(), reverse=True)
            if counts:
                shares.append((100 * counts[0] / sum(counts), counts))
        busiest = DASH
        if shares:
            shares.sort()
            median_share, counts = shares[len(shares) // 2]
            busiest = f"{median_share:.1f} % ({'/'.join(f'{c:,}' for c in counts)})"
        hol = runs.by.get((app, setup, "head-of-line"), [])
        hol_text = DASH
        if hol and runs.values(app, setup, "head-of-line", "p99_ms"):
            slow = statistics.median(r["slow"] for r in hol if "slow" in r)
            hol_text = (f"{spread(runs.values(app, setup, 'head-of-line', 'p99_ms'), 0, ' ms')} "
                        f"({slow:.0f} of {hol[0]['requests']})")
        kills = [r for r in runs.by.get((app, setup, "kill"), []) if "replaced_ms" in r]
        kill_text = DASH
        if kills:
            seen = [r["replaced_ms"] for r in kills if r["replaced_ms"] is not None]
            kill_text = spread(seen, 0, " ms") if seen else "none within 10 s"
            if len(seen) < len(kills) and seen:
                kill_text += f", {len(kills) - len(seen)} rounds none within 10 s"
            kill_text += f" ({sum(r['failed'] for r in kills)})"
        reloads = []
        for mode in ("keepalive", "close"):
            value, failed, clean = runs.reload_ratio(app, setup, mode)
            text = DASH if value is None else f"{value:.2f} ({failed})"
            reloads.append(text if clean else text + " (a reload failed or outlasted the run)")
        rows.append(f"| {NAMES.get(setup, setup)} | {busiest} | {hol_text} | {kill_text} | "
                    f"{reloads[0]} | {reloads[1]} |")
    return rows


def targets(runs):
    """Issue 13/15/17's targets against what was measured: rows of a table."""
    rows = ["| target | app | setup | measured | met |", "|---|---|---|---:|---|"]

    def check(target, app, setup, value, limit, higher=True, unit=""):
        if value is None:
            return
        met = value >= limit if higher else value <= limit
        rows.append(f"| {target} | {app} | {NAMES.get(setup, setup)} | {value:,.2f}{unit} | "
                    f"{'yes' if met else '**no**'} |")

    for app in runs.apps:
        get = lambda setup, kind="close": runs.median(app, setup, kind, "rps")  # noqa: E731
        node = app != "rust"
        for setup in ("herdsman-reuseport", "herdsman-shared"):
            if node and get(setup) and get("pm2"):
                check("close req/s ≥ 2× PM2", app, setup, get(setup) / get("pm2"), 2, unit="×")
            if node and get(setup) and get("node-none"):
                check("close req/s ≥ 0.95× SCHED_NONE", app, setup,
                      get(setup) / get("node-none"), 0.95, unit="×")
        if node and get("herdsman-round-robin") and get("pm2"):
            check("round-robin close req/s ≥ 1.5× PM2", app, "herdsman-round-robin",
                  get("herdsman-round-robin") / get("pm2"), 1.5, unit="×")
            check("round-robin supervisor CPU per new connection ≤ 10 µs", app,
                  "herdsman-round-robin", runs.cpu_per_connection_us(app, "herdsman-round-robin"),
                  10, higher=False, unit=" µs")
        for setup in runs.setups_of(app):
            if not setup.startswith("herdsman-"):
                continue
            if "proxy" not in setup:
                check("supervisor RSS under load ≤ 8 MB", app, setup, runs.rss_mb(app, setup), 8,
                      higher=False, unit=" MB")
            else:
                check("proxy RSS at 1,000 connections ≤ 16 MB", app, setup,
                      runs.rss_mb(app, setup, ("keepalive-c1000",)), 16, higher=False, unit=" MB")
                for kind, limit in (("keepalive", 0.7), ("close", 0.8)):
                    if get(setup, kind) and get("herdsman-reuseport", kind):
                        check(f"proxy {kind} req/s ≥ {limit}× direct (reuseport)", app, setup,
                              get(setup, kind) / get("herdsman-reuseport", kind), limit, unit="×")
            for mode in ("keepalive", "close"):
                mine, failed, _ = runs.reload_ratio(app, setup, mode)
                theirs, _, _ = runs.reload_ratio(app, "pm2", mode)
                if mine is not None and theirs is not None:
                    met = mine >= theirs and failed == 0
                    rows.append(f"| reload ratio ({mode}) ≥ PM2's ({theirs:.2f}), 0 failed | {app} "
                                f"| {NAMES[setup]} | {mine:.2f}, {failed} failed | "
                                f"{'yes' if met else '**no**'} |")
    return rows if len(rows) > 2 else []


def summary_tables(runs):
    """The README's tables: for each app, the figures a user compares first."""
    lines = []
    for app in runs.apps:
        lines += [f"**{APPS.get(app, app)}**, 2 workers:", "",
                  "| setup | close req/s | keep-alive req/s | supervisor CPU per new connection | "
                  "supervisor RSS | reload ratio, close (failed) | head-of-line p99 |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for setup in runs.setups_of(app):
            cpu = runs.cpu_per_connection_us(app, setup)
            rss = runs.rss_mb(app, setup)
            value, failed, _ = runs.reload_ratio(app, setup, "close")
            hol = runs.median(app, setup, "head-of-line", "p99_ms")
            lines.append(
                f"| {NAMES.get(setup, setup)} | {number(runs.median(app, setup, 'close', 'rps'))} | "
                f"{number(runs.median(app, setup, 'keepalive', 'rps'))} | "
                f"{DASH if cpu is None else f'{cpu:.1f} µs'} | "
                f"{DASH if rss is None else f'{rss:.1f} MB'} | "
                f"{DASH if value is None else f'{value:.2f} ({failed})'} | "
                f"{DASH if hol is None else f'{hol:,.0f} ms'} |")
        lines.append("")
    return lines


def section(runs, meta):
    quick = meta.get("mode") == "quick"
    lines = [f"## {meta['date']} — `{meta['command']}`{' (quick pass)' if quick else ''}",
             "",
             f"Commit {meta['commit']}, release build. Machine: {meta['machine']}; "
             f"{meta['versions']}; {meta['pinning']}. Interleaved rounds: {meta['rounds']}, of "
             f"{meta['seconds']} s runs (reloads: {meta['reload_seconds']} s runs, "
             f"{meta.get('reload_modes', 'keepalive close').replace(' ', ' and ')}, 2 reloads at "
             f"30 % and 60 %), wrk -t1 -c64 --latency; head-of-line: one worker spins "
             f"{meta['hol_ms']} ms; {meta['minutes']} min in all.", ""]
    noise = (f"Quiet check: {runs.quiet_checks - runs.not_quiet} of {runs.quiet_checks} setups "
             f"started on a quiet machine (other processes < {meta['other_limit']} of a core); "
             f"{runs.excluded} measure(s) excluded as contaminated (other processes above that "
             f"during the run) and run once more.")
    if runs.not_quiet or runs.excluded:
        noise = "**Noisy machine.** " + noise
    lines += [noise, ""]
    for (app, setup), reason in runs.skipped.items():
        lines.append(f"- skipped {NAMES.get(setup, setup)} for {app}: {reason}")
    if runs.skipped:
        lines.append("")
    lines += ["### Summary", ""] + summary_tables(runs)
    for app in runs.apps:
        lines += [f"### {APPS.get(app, app)}", "", "Throughput and the supervisor's cost:", ""]
        lines += throughput_table(runs, app) + ["", "Balance and failures:", ""]
        lines += robustness_table(runs, app) + [""]
    rows = targets(runs)
    if rows:
        lines += ["### Targets (issues 13, 15, 17)", ""] + rows + [""]
    lines += [f"Chart: [{meta['chart']}]({os.path.relpath(meta['chart'], 'bench')}). Supervisor: "
              "herdsman's primary, PM2's daemon (God), Node's cluster primary; its CPU is its "
              "utime+stime during the close run ÷ the requests (one connection each); RSS is its "
              "highest VmRSS sampled during the 64-connection runs, peak its VmHWM. Head-of-line: "
              "quick requests on fresh connections every 10 ms while one worker spins; kill -9: "
              "4 clients on fresh connections, the ms until a new process answers. "
              "Reload ratio: req/s during 2 reloads ÷ the same round's run without. Proxy targets: "
              "\"direct\" is herdsman reuseport, whose workers accept themselves.", ""]
    return lines


def chart_rows(runs):
    """Panels of the chart, as `panel TAB label TAB value TAB highlight` lines."""
    rows = []
    for app in runs.apps:
        for kind, title in (("close", "new connection per request"), ("keepalive", "keep-alive")):
            for setup in runs.setups_of(app):
                value = runs.median(app, setup, kind, "rps")
                if value is not None:
                    rows.append(f"{APPS.get(app, app).split(' (')[0]}: req/s, {title}\t"
                                f"{NAMES.get(setup, setup)}\t{value:.0f}\t"
                                f"{int(setup.startswith('herdsman-'))}")
    return rows


def fill_readme(path, runs, meta):
    with open(path) as readme:
        text = readme.read()
    if README_BEGIN not in text or README_END not in text:
        sys.exit(f"report.py: {path} has no `bench/run` block ({README_BEGIN} … {README_END}); "
                 "put them back in its performance section")
    before, rest = text.split(README_BEGIN, 1)
    _, after = rest.split(README_END, 1)
    block = [README_BEGIN, "",
             f"From the section **{meta['date']} — `{meta['command']}`** of "
             f"[bench/RESULTS.md](bench/RESULTS.md) (commit {meta['commit']}, {meta['machine']}; "
             f"medians of {meta['rounds']} rounds):", "",
             f"![req/s of every setup]({meta['chart']})", ""] + summary_tables(runs) + [README_END]
    with open(path, "w") as readme:
        readme.write(before + "\n".join(block) + after)


def report(raw, results, chart_tsv, readme, meta_text):
    with open(raw) as lines:
        runs = Runs(json.loads(line) for line in lines if line.strip())
    meta = dict(line.split("=", 1) for line in meta_text.splitlines() if "=" in line)
    meta.setdefault("date", subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True,
                                           text=True).stdout.strip())
    text = "\n".join(section(runs, meta))
    print("\n" + text)
    with open(results, "a") as out:
        out.write("\n" + text)
    with open(chart_tsv, "w") as out:
        out.write("\n".join(chart_rows(runs)) + "\n")
    if readme:
        fill_readme(readme, runs, meta)
        print(f"README: {readme}'s performance table rewritten")


def main(argv):
    if len(argv) == 7 and argv[1] == "report":
        report(*argv[2:])
    elif len(argv) == 2 and argv[1] == "self-test":
        import report_test  # bench/report_test.py
        report_test.run()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
