#!/usr/bin/env python3
"""Fleet benchmark (not a test; not run by CI): N rose-agents (default 1, 10 and 50) with a
short interval against one throwaway PostgreSQL cluster (pg_stat_statements loaded), all with the
same monitoring role. For each N: the database's statement rate from the agents (all, the
database-wide checks', the election's), leaders seen, backends held, and each agent's RSS.
Prints a markdown table.

    scripts/fleet-bench                                # N = 1 10 50, 1 s interval, 20 s window
    FLEET_BENCH_N="1 10" FLEET_BENCH_WINDOW=10 scripts/fleet-bench
    FLEET_BENCH_INTERVAL=500ms scripts/fleet-bench

Loopback only. Every wait is bounded; the agents are killed and the cluster stopped and removed
on exit, also on failure or Ctrl-C. Standard library only.
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import free_port, rss_kib

if sys.argv[1:2] in (["-h"], ["--help"]):
    print("usage: scripts/fleet-bench")  # the entry point; this file is its body
    print(__doc__)
    sys.exit(0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = [int(n) for n in os.environ.get("FLEET_BENCH_N", "1 10 50").split()]
INTERVAL = os.environ.get("FLEET_BENCH_INTERVAL", "1s")
WINDOW = float(os.environ.get("FLEET_BENCH_WINDOW", "20"))
PG_CLUSTER = os.path.join(ROOT, "scripts", "pg-cluster")
AGENT = os.environ.get("FLEET_BENCH_AGENT", os.path.join(ROOT, "target/release/agent"))
PW = "fleet-" + os.urandom(6).hex()
# Statements of the instance-local checks (normalized by pg_stat_statements) and the election.
WIDE = ["%pg_stat_archiver%", "%pg_stat_replication%", "%pg_database_size(%", "%pg_stat_statements(%"]
ELECTION = "%pg_try_advisory_lock%"


def log(*a):
    print("fleet-bench:", *a, file=sys.stderr, flush=True)


def get(port, path, timeout=2.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Cluster:
    """The throwaway cluster, made and stopped by scripts/pg-cluster (the one shell copy)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rose-fleet-bench.")
        self.port = free_port()
        self.run("init", self.dir)
        self.run("start", self.dir, str(self.port), "-c", "max_connections=200",
                 "-c", "shared_preload_libraries=pg_stat_statements",
                 "-c", "pg_stat_statements.track=all", "-c", "fsync=off")
        self.psql("CREATE DATABASE railway", db="postgres")
        self.psql("CREATE EXTENSION pg_stat_statements")
        self.psql(f"CREATE ROLE rose_monitor LOGIN CONNECTION LIMIT 120 PASSWORD '{PW}'; "
                  "GRANT pg_monitor TO rose_monitor; GRANT CONNECT ON DATABASE railway TO rose_monitor")

    @staticmethod
    def run(*args):
        subprocess.run([PG_CLUSTER, *args], check=True, stdout=subprocess.DEVNULL, timeout=120)

    def psql(self, sql, db="railway"):
        out = subprocess.run(
            [PG_CLUSTER, "psql", self.dir, str(self.port), "-At", "-d", db, "-c", sql],
            check=True, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()

    def calls(self, where=""):
        return float(self.psql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r "
            f"ON r.oid = s.userid WHERE r.rolname = 'rose_monitor' {where}"))

    def stop(self):
        subprocess.run([PG_CLUSTER, "stop", self.dir, "immediate"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_agents(pg, n, logdir):
    agents = []
    for i in range(n):
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "RUST_LOG": "warn",
            "AGENT_DATABASE_URL":
                f"postgresql://rose_monitor:{PW}@127.0.0.1:{pg.port}/railway?sslmode=disable",
            "FEATURE_DATABASE_TYPE": "postgresql",
            "AGENT_LISTEN": f"127.0.0.1:{port}",
            "AGENT_INTERVAL": INTERVAL,
            "AGENT_APP_PROBES": "off",
        }
        out = open(os.path.join(logdir, f"agent-{n}-{i}.log"), "w")
        p = subprocess.Popen([AGENT, "run"], env=env, stdout=out, stderr=subprocess.STDOUT)
        agents.append((p, port))
    return agents


def stop_agents(agents):
    for p, _ in agents:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p, _ in agents:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def measure(pg, n, logdir):
    agents = start_agents(pg, n, logdir)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if all(get(port, "/readyz")[0] == 200 for _, port in agents):
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"N={n}: not every agent became ready within 60 s")
        time.sleep(2)  # past the first round
        pg.psql("SELECT pg_stat_statements_reset()")
        t0 = time.time()
        leaders_seen = set()
        while time.time() - t0 < WINDOW:
            ls = [i for i, (_, port) in enumerate(agents)
                  if metric(get(port, "/metrics")[1], "rose_agent_leader") == 1.0]
            leaders_seen.add(len(ls))
            time.sleep(max(0.0, min(1.0, WINDOW - (time.time() - t0))))
        secs = time.time() - t0
        total = pg.calls()
        # The checks of a cycle share one statement (src/pg/batch.rs): a statement is
        # database-wide when it carries a part only database-wide checks have.
        wide = pg.calls("AND (" + " OR ".join(f"s.query LIKE '{p}'" for p in WIDE) + ")")
        election = pg.calls(f"AND s.query LIKE '{ELECTION}'")
        backends = int(pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'rose_monitor'"))
        rss = [rss_kib(p.pid) for p, _ in agents]
        rss = [r / 1024 for r in rss if r]
        return {
            "n": n, "secs": secs, "total": total / secs, "wide": wide / secs,
            "local": (total - wide - election) / secs, "election": election / secs,
            "leaders": sorted(leaders_seen), "backends": backends,
            "rss_med": statistics.median(rss), "rss_max": max(rss), "rss_sum": sum(rss),
        }
    finally:
        stop_agents(agents)


def main():
    if not os.path.exists(AGENT):
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "agent"], cwd=ROOT,
                       check=True)
    pg = Cluster()
    logdir = tempfile.mkdtemp(prefix="rose-fleet-bench-logs.")
    log(f"cluster 127.0.0.1:{pg.port}, interval {INTERVAL}, window {WINDOW:.0f} s, N = {NS}")
    rows = []
    try:
        for n in NS:
            log(f"N={n} ...")
            rows.append(measure(pg, n, logdir))
            time.sleep(1)
    finally:
        pg.stop()
    print(f"\nFleet benchmark: interval {INTERVAL}, window {WINDOW:.0f} s, one cluster, "
          "one monitoring role\n")
    print("| agents | statements/s (all) | database-wide checks /s | instance-local /s "
          "| election /s | leaders seen | backends | RSS median MiB | RSS max MiB | RSS sum MiB |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['total']:.1f} | {r['wide']:.1f} | {r['local']:.1f} | "
              f"{r['election']:.1f} | {r['leaders']} | {r['backends']} | {r['rss_med']:.1f} | "
              f"{r['rss_max']:.1f} | {r['rss_sum']:.0f} |")
    base = rows[0]["wide"]
    for r in rows[1:]:
        log(f"N={r['n']}: database-wide statement rate {r['wide'] / base:.2f}x of N={rows[0]['n']}")
    shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    main()
