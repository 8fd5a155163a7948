#!/usr/bin/env python3
"""Measuring half of scripts/bench (run that, not this): given a running cluster, the agent and
the peer exporter, runs three scenarios (baseline, 2,000 extra tables, pgbench load) and prints a
markdown report. Standard library only. Every load is bounded in count and time; pgbench and wrk
run in their own process groups and are killed in `finally` blocks.
"""

import argparse
import http.client
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")
PROM_SCRAPE_EVERY = 15.0  # the SQL-per-minute window scrapes both targets like Prometheus would


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc


def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2 :].split()


def proc_cpu(pid):
    """utime + stime of a process (all its threads), seconds."""
    f = stat_fields(pid)
    if f is None:
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK


def cluster_cpu(postmaster):
    """CPU of the whole cluster: the postmaster (with its reaped children: exited backends) plus
    every live child process (backends, checkpointer, walwriter, ...)."""
    f = stat_fields(postmaster)
    total = 0.0
    if f is not None:
        total += sum(int(x) for x in f[11:15]) / CLK
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        c = stat_fields(d)
        if c is not None and int(c[1]) == postmaster:
            total += (int(c[11]) + int(c[12])) / CLK
    return total


def mem_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- PostgreSQL


class Pg:
    def __init__(self, a):
        self.bin, self.host, self.port, self.db = a.pg_bin, a.pg_host, a.pg_port, a.db
        with open(os.path.join(a.pg_data, "postmaster.pid")) as f:
            self.postmaster = int(f.readline())

    def psql(self, sql, db=None, timeout=600):
        out = subprocess.run(
            [f"{self.bin}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres",
             "-h", self.host, "-p", str(self.port), "-d", db or self.db],
            input=sql, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}\n{sql[:200]}")
        return out.stdout.strip()

    def reset_statements(self):
        self.psql("SELECT pg_stat_statements_reset()")

    def calls(self, roles):
        """pg_stat_statements calls by role name (userid)."""
        names = ",".join(f"'{r}'" for r in roles)
        rows = self.psql(
            "SELECT r.rolname, coalesce(sum(s.calls), 0) FROM pg_roles r LEFT JOIN pg_stat_statements s "
            f"ON s.userid = r.oid WHERE r.rolname IN ({names}) GROUP BY 1")
        got = {r: 0 for r in roles}
        for line in rows.splitlines():
            name, n = line.split("|")
            got[name] = int(n)
        return got

    def cost(self, roles):
        """pg_stat_statements calls and execution time (ms) by role name."""
        names = ",".join(f"'{r}'" for r in roles)
        rows = self.psql(
            "SELECT r.rolname, coalesce(sum(s.calls), 0), coalesce(sum(s.total_exec_time), 0) "
            "FROM pg_roles r LEFT JOIN pg_stat_statements s "
            f"ON s.userid = r.oid WHERE r.rolname IN ({names}) GROUP BY 1")
        got = {r: (0, 0.0) for r in roles}
        for line in rows.splitlines():
            name, n, ms = line.split("|")
            got[name] = (int(n), float(ms))
        return got

    def backends(self, roles):
        names = ",".join(f"'{r}'" for r in roles)
        rows = self.psql(
            f"SELECT usename, count(*) FROM pg_stat_activity WHERE usename IN ({names}) GROUP BY 1")
        got = {r: 0 for r in roles}
        for line in rows.splitlines():
            name, n = line.split("|")
            got[name] = int(n)
        return got


# ---------------------------------------------------------------- HTTP


class Target:
    def __init__(self, name, spec):
        pid, port, role = spec.split(":")
        self.name, self.pid, self.port, self.role = name, int(pid), int(port), role

    def get(self, conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {r.status}")
        if conn is None:
            c.close()
        return body


def wait_serving(t, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            t.get()
            return
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.2)
    raise RuntimeError(f"{t.name} did not serve /metrics on 127.0.0.1:{t.port}")


def series_sum(body, name):
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sequential(t, n):
    """n keep-alive scrapes one after another; returns sorted latencies in ms."""
    lat = []
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=30)
    try:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            try:
                t.get(conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=30)
                t.get(conn)
            lat.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        conn.close()
    lat.sort()
    return lat


def pct(sorted_ms, p):
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)]


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(t, conns, seconds):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s",
           f"http://127.0.0.1:{t.port}/metrics"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=seconds + 30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    res = {"p50": None, "p99": None, "rps": 0.0, "requests": 0, "errors": 0, "raw": out}
    for line in out.splitlines():
        m = re.match(r"\s*(50|99)%\s+([\d.]+)(us|ms|s|m)\b", line)
        if m:
            res["p" + m.group(1)] = float(m.group(2)) * UNIT[m.group(3)]
        m = re.match(r"\s*(\d+) requests in", line)
        if m:
            res["requests"] = int(m.group(1))
        m = re.match(r"Requests/sec:\s+([\d.]+)", line)
        if m:
            res["rps"] = float(m.group(1))
        m = re.match(r"\s*Non-2xx or 3xx responses: (\d+)", line)
        if m:
            res["errors"] += int(m.group(1))
        m = re.match(r"\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", line)
        if m:
            res["errors"] += sum(int(x) for x in m.groups())
    if res["p99"] is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return res


# ---------------------------------------------------------------- scenarios


def measure_sequential(pg, t, others, n):
    """Sequential scrapes with CPU and SQL counted over exactly that window. For the agent, a
    window in which a scheduled check cycle ran is retried (up to 3 times) so that the SQL
    counted is the scrapes' own."""
    roles = [t.role] + [o.role for o in others]
    for attempt in range(3):
        runs0 = series_sum(t.get(), "rose_agent_check_runs_total")
        pg.reset_statements()
        c0 = (proc_cpu(t.pid), cluster_cpu(pg.postmaster))
        t0 = time.monotonic()
        lat = sequential(t, n)
        wall = time.monotonic() - t0
        c1 = (proc_cpu(t.pid), cluster_cpu(pg.postmaster))
        calls = pg.calls(roles)
        runs1 = series_sum(t.get(), "rose_agent_check_runs_total")
        if runs0 == runs1:
            break
        log(f"{t.name}: a scheduled cycle ran during the window; again ({attempt + 1}/3)")
    return {
        "lat": lat, "wall": wall, "cycle_in_window": runs0 != runs1,
        "cpu_proc_per_1k": (c1[0] - c0[0]) * 1000 / n,
        "cpu_pg_per_1k": (c1[1] - c0[1]) * 1000 / n,
        "sql": calls[t.role], "sql_per_scrape": calls[t.role] / n,
    }


def settle(pg, roles, limit=90):
    """Waits until no role issues statements for a second: after wrk, the peer keeps running the
    queries of scrapes whose clients already hung up, and they must not count against the next
    measurement."""
    deadline = time.monotonic() + limit
    prev = None
    while time.monotonic() < deadline:
        c = pg.calls(roles)
        if c == prev:
            return
        prev = c
        time.sleep(1)
    log("warning: statements still running after", limit, "s")


def sql_window(pg, targets, seconds):
    """Statements per minute of each role over a fixed window, both targets scraped every 15 s."""
    pg.reset_statements()
    start = time.monotonic()
    k = 0
    while True:
        due = start + k * PROM_SCRAPE_EVERY
        if due >= start + seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        for t in targets:
            t.get()
        k += 1
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    calls = pg.calls([t.role for t in targets])
    return {t.name: calls[t.role] * 60.0 / seconds for t in targets}, k


def backend_cpu(pid, fields):
    """CPU seconds of a (single-threaded) backend: /proc/PID/schedstat's time on CPU, in
    nanoseconds, where the kernel has it; else utime+stime from /proc/PID/stat, in clock ticks
    (10 ms: too coarse for a few milliseconds a minute)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return (int(fields[11]) + int(fields[12])) / CLK


def role_backends(postmaster, roles):
    """{pid: (role, utime+stime seconds)} of the postmaster's children whose process title names
    one of `roles` (`postgres: ROLE DB HOST(PORT) ...`): the role's backends, read from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = stat_fields(d)
        if f is None or int(f[1]) != postmaster:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as c:
                title = c.read().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        if len(title) >= 2 and title[0] == "postgres:" and title[1] in roles:
            out[int(d)] = (title[1], backend_cpu(d, f))
    return out


def connections_logged(log_path, offset, roles):
    """Connections authorized per role in the server log from byte `offset` (log_connections)."""
    got = {r: 0 for r in roles}
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return got
    for m in re.finditer(r"connection authorized: user=(\S+)", text):
        if m.group(1) in got:
            got[m.group(1)] += 1
    return got


def cost_window(pg, targets, seconds, log_path):
    """Database cost per minute of each role over a fixed window, both targets scraped every 15 s
    (the agent also runs its own checks on its interval): pg_stat_statements calls and execution
    time, CPU of the role's backends (time on CPU from /proc, sampled every 0.25 s: a backend
    that lives less than that is missed, the connections count shows whether any did),
    connections opened (log_connections lines)."""
    roles = [t.role for t in targets]
    pg.reset_statements()
    offset = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else 0
    base = {pid: cpu for pid, (_, cpu) in role_backends(pg.postmaster, roles).items()}
    last = {}
    role_of = {}
    start = time.monotonic()
    k = 0
    while True:
        now = time.monotonic()
        if now >= start + seconds:
            break
        if now >= start + k * PROM_SCRAPE_EVERY:
            for t in targets:
                try:
                    t.get()
                except (OSError, RuntimeError, http.client.HTTPException) as e:
                    log(f"{t.name}: scrape failed: {e}")
            k += 1
        for pid, (role, cpu) in role_backends(pg.postmaster, roles).items():
            last[pid] = cpu
            role_of[pid] = role
        time.sleep(0.25)
    cost = pg.cost(roles)
    conns = connections_logged(log_path, offset, roles) if log_path else {r: None for r in roles}
    per = 60.0 / seconds
    out = {}
    for t in targets:
        cpu = sum(c - base.get(pid, 0.0) for pid, c in last.items() if role_of[pid] == t.role)
        out[t.name] = {
            "statements": cost[t.role][0] * per,
            "exec_ms": cost[t.role][1] * per,
            "cpu_ms": cpu * 1000 * per,
            "connections": None if conns[t.role] is None else conns[t.role] * per,
        }
    return out


def scenario(pg, targets, a):
    if a.cost_only:
        return {"cost_only": True}
    return scenario_full(pg, targets, a)


def scenario_full(pg, targets, a):
    res = {t.name: {} for t in targets}
    roles = [t.role for t in targets]
    peak = {t.name: 0 for t in targets}

    def sample_backends():
        b = pg.backends(roles)
        for t in targets:
            peak[t.name] = max(peak[t.name], b[t.role])

    for t in targets:
        others = [o for o in targets if o is not t]
        settle(pg, roles)
        log(f"  {t.name}: {a.scrapes} sequential scrapes")
        res[t.name]["seq"] = measure_sequential(pg, t, others, a.scrapes)
        sample_backends()
        for c in (4, 32):
            settle(pg, roles)
            log(f"  {t.name}: wrk -c {c} for {a.wrk_seconds} s")
            timer = threading.Timer(a.wrk_seconds / 2, sample_backends)
            timer.start()
            cpu0 = proc_cpu(t.pid)
            try:
                w = wrk(t, c, a.wrk_seconds)
            finally:
                timer.cancel()
                timer.join()
            w["cpu_per_1k"] = (proc_cpu(t.pid) - cpu0) * 1000 / max(w["requests"], 1)
            res[t.name][f"wrk{c}"] = w
    settle(pg, roles)
    for t in targets:
        res[t.name]["rss_kb"] = mem_kb(t.pid, "VmRSS")
        res[t.name]["hwm_kb"] = mem_kb(t.pid, "VmHWM")
    log(f"  SQL per minute: {a.window} s window, both scraped every {PROM_SCRAPE_EVERY:.0f} s")
    per_min, scrapes = sql_window(pg, targets, a.window)
    sample_backends()
    for t in targets:
        res[t.name]["sql_per_min"] = per_min[t.name]
        res[t.name]["backends"] = peak[t.name]
    body = targets[0].get().decode()
    res["agent"]["cycle_ms"] = {
        m.group(1): float(m.group(2)) * 1e3
        for m in re.finditer(r'rose_agent_check_duration_seconds\{check="(pg_\w+)"\} (\S+)', body)}
    res["window_scrapes"] = scrapes
    return res


def agent_prepares(agent):
    return series_sum(agent.get(), "rose_pg_batch_prepares_total")


# The agent's cycles take a few shapes, each prepared once: fast, slow, slow with the 5-minute
# reads (database and table sizes, pg_stat_statements, checkpoint threads), and, at the 10th slow
# run, slow with the 5-minute reads and pg_schema's periodic full catalog read (its first run's
# catalog read had a second round of its own). The first steady window starts once the agent
# has run that one, 10 slow intervals after it started.
AGENT_SLOW_EVERY = 60.0
AGENT_FULL_CATALOG_READ = 10 * AGENT_SLOW_EVERY
AGENT_STARTED = time.monotonic()


def steady_agent(agent, quiet=65, limit=200):
    """Waits until the agent has prepared every combined statement of its cycles (none for
    `quiet` seconds: a slow interval and a margin, and past its first periodic full catalog
    read), so the window measures the steady cycle; the one-time prepares are reported apart."""
    first = AGENT_STARTED + AGENT_FULL_CATALOG_READ + quiet
    if time.monotonic() < first:
        log(f"  waiting {first - time.monotonic():.0f} s for the agent's first periodic catalog read")
        time.sleep(first - time.monotonic())
    deadline = time.monotonic() + limit
    last, since = agent_prepares(agent), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(5)
        n = agent_prepares(agent)
        if n != last:
            last, since = n, time.monotonic()
    log(f"  agent steady: {last:.0f} combined statements prepared so far")


def measure_cost(pg, targets, a):
    agent = next(t for t in targets if t.name == "agent")
    # After the scenario's change (DDL: the plans are made again, the schema read again), the
    # cycles settle before the window.
    steady_agent(agent)
    settle(pg, [t.role for t in targets])
    log(f"  database cost: {a.cost_window} s window, the peer scraped every {PROM_SCRAPE_EVERY:.0f} s")
    before = agent_prepares(agent)
    out = cost_window(pg, targets, a.cost_window, a.pg_log)
    out["agent"]["prepares"] = agent_prepares(agent) - before
    out["peer"]["prepares"] = None
    return out


IDLE_CLIENTS = 300


def hold_idle_clients(pg, n, seconds):
    """n client connections held open (pgbench, each client sleeping 10 s between two trivial
    statements: the app's pool between requests), bounded by -T and killed by the caller."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle_client.sql")
    p = subprocess.Popen(
        [f"{pg.bin.rstrip('/')}/pgbench", "-n", "-c", str(n), "-j", "2", "-T", str(int(seconds)),
         "-f", script, "-h", pg.host, "-p", str(pg.port), "-U", "postgres", pg.db],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'")) >= n:
            break
        time.sleep(1)
    return p


def stop_group(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def make_tables(pg, n):
    log(f"creating {n} extra tables")
    stmts = ["CREATE SCHEMA bench_extra;"] + [
        f"CREATE TABLE bench_extra.t{i} (id int PRIMARY KEY, v text);" for i in range(n)]
    pg.psql("\n".join(stmts) + "\nANALYZE;")


def drop_tables(pg):
    log("dropping the extra tables")
    pg.psql("DROP SCHEMA bench_extra CASCADE")


# ---------------------------------------------------------------- report


def f_ms(v):
    return "n/a" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}")


def ratio_lower(agent, peer):
    if agent is None or peer is None:
        return "n/a"
    if agent <= 0:
        return "0 vs >0" if peer > 0 else "both 0"
    r = peer / agent
    if r < 1:  # the agent's figure is the larger one: say so, not "0.9x lower"
        return f"{1 / r:.1f}x higher"
    return f"{r:.0f}x lower" if r >= 10 else f"{r:.1f}x lower"


def ratio_higher(agent, peer):
    if not peer:
        return "n/a"
    r = agent / peer
    return f"{r:.0f}x higher" if r >= 10 else f"{r:.1f}x higher"


def scenario_table(name, r):
    A, P = r["agent"], r["peer"]
    rows = [
        ("scrape p50, sequential keep-alive (ms)", pct(A["seq"]["lat"], 50), pct(P["seq"]["lat"], 50), "lo", f_ms),
        ("scrape p99, sequential keep-alive (ms)", pct(A["seq"]["lat"], 99), pct(P["seq"]["lat"], 99), "lo", f_ms),
        ("scrape p50, wrk -c 4 (ms)", A["wrk4"]["p50"], P["wrk4"]["p50"], "lo", f_ms),
        ("scrape p99, wrk -c 4 (ms)", A["wrk4"]["p99"], P["wrk4"]["p99"], "lo", f_ms),
        ("throughput, wrk -c 4 (req/s)", A["wrk4"]["rps"], P["wrk4"]["rps"], "hi", lambda v: f"{v:,.0f}"),
        ("scrape p50, wrk -c 32 (ms)", A["wrk32"]["p50"], P["wrk32"]["p50"], "lo", f_ms),
        ("scrape p99, wrk -c 32 (ms)", A["wrk32"]["p99"], P["wrk32"]["p99"], "lo", f_ms),
        ("throughput, wrk -c 32 (req/s)", A["wrk32"]["rps"], P["wrk32"]["rps"], "hi", lambda v: f"{v:,.0f}"),
        ("CPU s per 1,000 scrapes, the process (sequential)", A["seq"]["cpu_proc_per_1k"], P["seq"]["cpu_proc_per_1k"], "lo", lambda v: f"{v:.3f}"),
        ("CPU s per 1,000 scrapes, the process (wrk -c 4)", A["wrk4"]["cpu_per_1k"], P["wrk4"]["cpu_per_1k"], "lo", lambda v: f"{v:.3f}"),
        ("CPU s per 1,000 scrapes, PostgreSQL (all cluster processes, sequential)", A["seq"]["cpu_pg_per_1k"], P["seq"]["cpu_pg_per_1k"], "lo", lambda v: f"{v:.3f}"),
        ("RSS, VmRSS at the end (MB)", A["rss_kb"] / 1024, P["rss_kb"] / 1024, "lo", lambda v: f"{v:.1f}"),
        ("RSS, peak VmHWM (MB)", A["hwm_kb"] / 1024, P["hwm_kb"] / 1024, "lo", lambda v: f"{v:.1f}"),
        ("SQL statements per scrape", A["seq"]["sql_per_scrape"], P["seq"]["sql_per_scrape"], "lo", lambda v: f"{v:.2f}" if v else "0"),
        ("SQL statements per minute (scraped every 15 s)", A["sql_per_min"], P["sql_per_min"], "lo", lambda v: f"{v:.0f}"),
        ("backends held (max sampled)", A["backends"], P["backends"], "lo", lambda v: f"{v}"),
    ]
    out = [f"### {name}", "", "| measure | agent | peer | agent vs peer |", "|---|---:|---:|---|"]
    for label, av, pv, way, fmt in rows:
        ratio = ratio_lower(av, pv) if way == "lo" else ratio_higher(av, pv)
        out.append(f"| {label} | {fmt(av)} | {fmt(pv)} | {ratio} |")
    errs = A["wrk4"]["errors"] + A["wrk32"]["errors"], P["wrk4"]["errors"] + P["wrk32"]["errors"]
    cyc = ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(A["cycle_ms"].items()))
    out += ["", f"wrk errors (non-2xx, socket): agent {errs[0]}, peer {errs[1]}. "
            f"Agent check durations (last run): {cyc}."]
    if "pgbench" in name:
        out.append("PostgreSQL CPU in this scenario includes pgbench's own load during the window.")
    return out + [""]
    return out


def cost_table(results, window):
    rows = [("statements (pg_stat_statements calls of the role)", "statements", lambda v: f"{v:.1f}"),
            ("execution time of those statements (ms)", "exec_ms", lambda v: f"{v:.2f}"),
            ("CPU of the role's backends, /proc schedstat (ms)", "cpu_ms", lambda v: f"{v:.1f}"),
            ("connections opened", "connections", lambda v: "n/a" if v is None else f"{v:.1f}"),
            ("combined statements prepared (one-time; steady: 0)", "prepares", lambda v: "n/a" if v is None else f"{v:.0f}")]
    out = [f"### Database cost per minute ({window} s window per scenario, both at a 15 s cadence)", "",
           "| scenario | per minute | agent | peer | agent / peer (goal <= 0.25) |", "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        A, P = r["cost"]["agent"], r["cost"]["peer"]
        for label, key, fmt in rows:
            av, pv = A[key], P[key]
            ratio = "n/a" if av is None or not pv else f"{av / pv:.2f}"
            out.append(f"| {name} | {label} | {fmt(av)} | {fmt(pv)} | {ratio} |")
    return out + [""]


def cost_goals(results):
    checks = []
    for key, label in (("statements", "statements per minute"), ("cpu_ms", "backends' CPU per minute"),
                       ("exec_ms", "execution time per minute")):
        worst = max((r["cost"]["agent"][key] / max(r["cost"]["peer"][key], 1e-9), s) for s, r in results.items())
        checks.append((f"agent's {label} at most 1/4 of the peer's", worst[0] <= 0.25,
                       f"worst agent/peer {worst[0]:.2f} ({worst[1]})"))
    return checks


def goals(results):
    if all(r.get("cost_only") for r in results.values()):
        out = ["### Goals", "", "| goal | | evidence |", "|---|---|---|"]
        out += [f"| {g} | {'met' if ok else '**not met**'} | {ev} |" for g, ok, ev in cost_goals(results)]
        return out + [""]
    return goals_full(results)


def goals_full(results):
    order = list(results)
    checks = []
    p99_ratios, tput_ratios = [], []
    for s in order:
        A, P = results[s]["agent"], results[s]["peer"]
        p99_ratios.append((pct(P["seq"]["lat"], 99) / pct(A["seq"]["lat"], 99), f"{s} sequential"))
        for c in (4, 32):
            p99_ratios.append((P[f"wrk{c}"]["p99"] / A[f"wrk{c}"]["p99"], f"{s} wrk -c {c}"))
            tput_ratios.append((A[f"wrk{c}"]["rps"] / max(P[f"wrk{c}"]["rps"], 1e-9), f"{s} wrk -c {c}"))
    worst = min(p99_ratios)
    checks.append(("scrape p99 at least 15x lower than the peer", worst[0] >= 15,
                   f"worst {worst[0]:.1f}x ({worst[1]})"))
    worst = min(tput_ratios)
    checks.append(("at least 50x the peer's throughput", worst[0] >= 50,
                   f"worst {worst[0]:.1f}x ({worst[1]})"))
    rss = max(results[s]["agent"]["hwm_kb"] for s in order) / 1024
    checks.append(("RSS at most 10 MB", rss <= 10, f"peak VmHWM {rss:.1f} MB"))
    sql = [results[s]["agent"]["seq"]["sql"] for s in order]
    checks.append(("zero SQL per scrape", all(x == 0 for x in sql),
                   f"statements during the sequential windows: {sql}"))
    be = max(results[s]["agent"]["backends"] for s in order)
    checks.append(("one backend", be <= 1, f"max sampled {be}"))
    if "baseline" in results and "2,000 extra tables" in results:
        b, t = results["baseline"]["agent"], results["2,000 extra tables"]["agent"]
        p50b, p50t = pct(b["seq"]["lat"], 50), pct(t["seq"]["lat"], 50)
        cpub, cput = b["wrk4"]["cpu_per_1k"], t["wrk4"]["cpu_per_1k"]
        flat = ((p50t <= 1.5 * p50b or p50t - p50b < 0.05)
                and (cput <= 1.5 * cpub or cput - cpub < 0.005)
                and t["sql_per_min"] <= b["sql_per_min"] * 1.25 + 2
                and t["seq"]["sql"] == 0)
        pb, pt = results["baseline"]["peer"], results["2,000 extra tables"]["peer"]
        checks.append(("cost flat with table count", flat,
                       f"agent: scrape p50 {p50b:.3f} -> {p50t:.3f} ms, CPU/1k scrapes (wrk -c 4) {cpub:.3f} -> {cput:.3f} s, "
                       f"SQL/min {b['sql_per_min']:.0f} -> {t['sql_per_min']:.0f}; peer: scrape p50 "
                       f"{pct(pb['seq']['lat'], 50):.1f} -> {pct(pt['seq']['lat'], 50):.1f} ms, PostgreSQL CPU/1k scrapes "
                       f"{pb['seq']['cpu_pg_per_1k']:.2f} -> {pt['seq']['cpu_pg_per_1k']:.2f} s"))
    checks += cost_goals(results)
    out = ["### Goals", "", "| goal | | evidence |", "|---|---|---|"]
    out += [f"| {g} | {'met' if ok else '**not met**'} | {ev} |" for g, ok, ev in checks]
    return out + [""]


def main():
    ap = argparse.ArgumentParser()
    for k in ("--pg-bin", "--pg-host", "--pg-data", "--db", "--agent", "--peer", "--out"):
        ap.add_argument(k, default="")
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--scrapes", type=int, default=2000)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--cost-window", type=int, default=120)
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--pg-log", default="")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    pg = Pg(a)
    agent, peer = Target("agent", a.agent), Target("peer", a.peer)
    targets = [agent, peer]
    for t in targets:
        wait_serving(t)
    # The agent's first round of checks, so its connection is open before measuring.
    deadline = time.monotonic() + 30
    while series_sum(agent.get(), "rose_agent_ready") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    for t in targets:  # warm-up: the peer opens its connection on its first scrape
        sequential(t, 20)

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results = {}
    log("scenario: baseline")
    results["baseline"] = scenario(pg, targets, a)
    results["baseline"]["cost"] = measure_cost(pg, targets, a)
    make_tables(pg, 2000)
    log("scenario: 2,000 extra tables")
    results["2,000 extra tables"] = scenario(pg, targets, a)
    results["2,000 extra tables"]["cost"] = measure_cost(pg, targets, a)
    drop_tables(pg)
    log("pgbench -i -s 5")
    subprocess.run([f"{pg.bin.rstrip('/')}/pgbench", "-i", "-q", "-s", "5", "-h", pg.host, "-p", str(pg.port),
                    "-U", "postgres", pg.db], check=True, capture_output=True, timeout=600)
    # Bounded twice: -T covers the scenario with margin, and it is killed when the scenario ends.
    budget = (0 if a.cost_only else 2 * (2 * a.scrapes * 0.05 + 4 * (a.wrk_seconds + 5) + a.window)) \
        + a.cost_window + 120
    bench = subprocess.Popen(
        [f"{pg.bin.rstrip('/')}/pgbench", "-n", "-c", "4", "-j", "2", "-T", str(int(budget)),
         "-h", pg.host, "-p", str(pg.port), "-U", "postgres", pg.db],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(3)
        log("scenario: pgbench -c 4 running")
        results["pgbench -c 4 running"] = scenario(pg, targets, a)
        results["pgbench -c 4 running"]["cost"] = measure_cost(pg, targets, a)
    finally:
        stop_group(bench)
    if a.cost_only:
        # The database cost with the app's pools open: 300 client connections, mostly idle.
        log(f"scenario: {IDLE_CLIENTS} client connections")
        # Held past the longest wait before the window (the steady agent, 200 s; settling, 90 s).
        idle = hold_idle_clients(pg, IDLE_CLIENTS, a.cost_window + 420)
        try:
            results[f"{IDLE_CLIENTS} client connections"] = {
                "cost_only": True, "cost": measure_cost(pg, targets, a)}
        finally:
            stop_group(idle)

    with open("/proc/meminfo") as f:
        mem_mb = int(f.readline().split()[1]) // 1024
    load = open("/proc/loadavg").read().split()[:3]
    out = [f"## Results ({started})", "",
           f"Machine: {os.cpu_count()} CPUs (nproc), {mem_mb} MB memory, load average at the end {' '.join(load)}. "
           + ("Database cost only (BENCH_COST_ONLY). " if a.cost_only else
              f"{a.scrapes} sequential scrapes per target, wrk {a.wrk_seconds} s per run, "
              f"SQL/minute over a {a.window} s window. ")
           + f"Agent interval {os.environ.get('BENCH_AGENT_INTERVAL', '15s')}.",
           ""]
    for name, r in results.items():
        if not r.get("cost_only"):
            out += scenario_table(name, r)
    out += cost_table(results, a.cost_window)
    out += goals(results)
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
