#!/usr/bin/env python3
"""Measuring half of `scripts/bench flood` (run that, not this): given a running PostgreSQL and an
agent binary, floods the agent's endpoint with slow-header connections (a request line and one
header, never the blank line) and reports RSS, descriptors and `/metrics` / `/healthz` latency
before, during and after, and how long the server holds the connections. Then the same in a
64 MiB memory cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`, written directly; skipped
when the machine has neither or it is not writable): does the agent survive, how many OOM kills.
Standard library only; loopback only; bounded in count and time; the agent is killed and the
cgroup removed in `finally` blocks.
"""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

from common import free_port, rss_kib

SLOW = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def log(*a):
    print("bench-flood:", *a, file=sys.stderr, flush=True)


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def alive(proc):
    return proc.poll() is None


def get(port, path, timeout=5.0):
    """(seconds, status) of a GET on a new connection; status 0 on failure or timeout."""
    t = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.settimeout(max(0.1, timeout - (time.monotonic() - t)))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        code = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else 0
        return time.monotonic() - t, code, buf
    except (OSError, ValueError, IndexError):
        return time.monotonic() - t, 0, b""


def pg_up(port):
    _, code, body = get(port, "/metrics")
    if code != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("rose_pg_up "):
            return float(line.split()[1])
    return None


def ms(x):
    return f"{x * 1000:.1f}"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


class Flood:
    def __init__(self, port, n, limit_s):
        self.socks = []
        self.failed = 0
        t = time.monotonic()
        for _ in range(n):
            if time.monotonic() - t > limit_s:
                self.failed += 1
                continue
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(SLOW)
                s.setblocking(False)
                self.socks.append(s)
            except OSError:
                self.failed += 1
        self.opened_s = time.monotonic() - t
        self.open = set(range(len(self.socks)))

    def poll_closed(self):
        for i in list(self.open):
            try:
                d = self.socks[i].recv(4096)
                if not d:
                    self.open.discard(i)
            except BlockingIOError:
                pass
            except OSError:
                self.open.discard(i)
        return len(self.socks) - len(self.open)

    def close(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def start_agent(args, port, prefix=()):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RUST_LOG": "warn",
        "AGENT_DATABASE_URL": args.dsn,
        "FEATURE_DATABASE_TYPE": "postgresql",
        "AGENT_LISTEN": f"127.0.0.1:{port}",
        "AGENT_INTERVAL": "5s",
        "AGENT_APP_PROBES": "off",
    }
    log_f = open(args.log, "ab")
    proc = subprocess.Popen(
        [*prefix, args.bin, "run"], env=env, stdout=log_f, stderr=log_f, start_new_session=True
    )
    t = time.monotonic()
    while time.monotonic() - t < 20:
        if pg_up(port) == 1.0:
            return proc
        if not alive(proc):
            break
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"agent did not come up with rose_pg_up 1 (log: {args.log})")


def stop(proc):
    if alive(proc):
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def scrape_latencies(port, n):
    return [get(port, "/metrics")[0] for _ in range(n)]


def run_flood(args, proc, port, row):
    pid = proc.pid
    base = scrape_latencies(port, 50)
    row["rss_before"] = rss_kib(pid)
    row["fds_before"] = fds(pid)
    row["metrics_p50_before"] = statistics.median(base)
    flood = Flood(port, args.conns, args.open_limit)
    row["opened"] = len(flood.socks)
    row["open_failed"] = flood.failed
    row["opened_s"] = flood.opened_s
    t0 = time.monotonic()
    lat_m, lat_h, rss, nfds, failures = [], [], [], [], 0
    closed_at = None
    while time.monotonic() - t0 < args.hold and alive(proc):
        d, code, _ = get(port, "/metrics")
        lat_m.append(d)
        failures += code != 200
        d, code, _ = get(port, "/healthz")
        lat_h.append(d)
        failures += code != 200
        rss.append(rss_kib(pid))
        nfds.append(fds(pid))
        flood.poll_closed()
        if not flood.open and closed_at is None:
            closed_at = time.monotonic() - t0
        time.sleep(0.25)
    row["metrics_p50_during"] = statistics.median(lat_m) if lat_m else float("nan")
    row["metrics_max_during"] = max(lat_m, default=float("nan"))
    row["healthz_max_during"] = max(lat_h, default=float("nan"))
    row["failed_requests"] = failures
    row["rss_peak"] = max(rss, default=0)
    row["fds_peak"] = max(nfds, default=0)
    row["held_at_end_of_hold"] = len(flood.open)
    # How long until the server has closed every flood connection (bounded), from the moment
    # the flood was open.
    while flood.open and time.monotonic() - t0 < args.hold + args.close_wait and alive(proc):
        flood.poll_closed()
        time.sleep(0.2)
    if not flood.open and closed_at is None:
        closed_at = time.monotonic() - t0
    row["all_closed_after_s"] = closed_at
    row["still_open"] = len(flood.open)
    flood.close()
    time.sleep(5)
    row["alive"] = alive(proc)
    row["rss_after"] = rss_kib(pid) if alive(proc) else 0
    row["fds_after"] = fds(pid) if alive(proc) else 0
    after = scrape_latencies(port, 50) if alive(proc) else []
    row["metrics_p50_after"] = statistics.median(after) if after else float("nan")


# ---------------------------------------------------------------- cgroups


def make_cgroup(limit_bytes):
    """(kind, path) of a fresh memory cgroup limited to limit_bytes, or None (with why)."""
    name = f"rose-bench-flood-{os.getpid()}"
    v2 = "/sys/fs/cgroup"
    try:
        with open(os.path.join(v2, "cgroup.controllers")) as f:
            if "memory" in f.read().split():
                path = os.path.join(v2, name)
                os.mkdir(path)
                with open(os.path.join(path, "memory.max"), "w") as f:
                    f.write(str(limit_bytes))
                with open(os.path.join(path, "memory.swap.max"), "w") as f:
                    f.write("0")
                return ("v2", path), None
    except OSError as e:
        if "path" in locals() and os.path.isdir(path):
            os.rmdir(path)
        v2_err = str(e)
    else:
        v2_err = "no cgroup v2 memory controller"
    v1 = "/sys/fs/cgroup/memory"
    if os.path.isdir(v1):
        try:
            path = os.path.join(v1, name)
            os.mkdir(path)
            with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit_bytes))
            try:
                with open(os.path.join(path, "memory.memsw.limit_in_bytes"), "w") as f:
                    f.write(str(limit_bytes))
            except OSError:
                pass  # no swap accounting: the limit still holds RSS
            return ("v1", path), None
        except OSError as e:
            if os.path.isdir(path):
                os.rmdir(path)
            return None, f"{v2_err}; cgroup v1: {e}"
    return None, v2_err


def cgroup_stats(cg):
    kind, path = cg
    out = {}

    def read(n):
        try:
            with open(os.path.join(path, n)) as f:
                return f.read()
        except OSError:
            return ""

    if kind == "v2":
        out["peak"] = int(read("memory.peak").strip() or 0)
        for line in read("memory.events").splitlines():
            k, v = line.split()
            if k == "oom_kill":
                out["oom_kills"] = int(v)
    else:
        out["peak"] = int(read("memory.max_usage_in_bytes").strip() or 0)
        for line in read("memory.oom_control").splitlines():
            k, v = line.split()
            if k == "oom_kill":
                out["oom_kills"] = int(v)
    return out


def remove_cgroup(cg):
    _, path = cg
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.1)
    log(f"could not remove {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--conns", type=int, default=4000)
    ap.add_argument("--hold", type=float, default=15.0)
    ap.add_argument("--close-wait", type=float, default=45.0)
    ap.add_argument("--open-limit", type=float, default=30.0)
    ap.add_argument("--memory-mib", type=int, default=64)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    rows = []

    port = free_port()
    proc = start_agent(args, port)
    row = {"scenario": "no memory limit"}
    try:
        run_flood(args, proc, port, row)
    finally:
        stop(proc)
    rows.append(row)

    cg, why = make_cgroup(args.memory_mib * 1024 * 1024)
    if cg is None:
        log(f"no {args.memory_mib} MiB cgroup: {why}")
        rows.append({"scenario": f"{args.memory_mib} MiB cgroup: skipped ({why})"})
    else:
        port = free_port()
        procs_file = os.path.join(cg[1], "cgroup.procs")
        # The shell joins the cgroup, then execs the agent: every byte it maps is charged there.
        prefix = ("sh", "-c", f'echo $$ > {procs_file} && exec "$0" "$@"')
        row = {"scenario": f"{args.memory_mib} MiB {cg[0]} cgroup"}
        try:
            proc = start_agent(args, port, prefix)
            try:
                run_flood(args, proc, port, row)
            finally:
                row.update(cgroup_stats(cg))
                stop(proc)
        finally:
            remove_cgroup(cg)
        rows.append(row)

    def f(r, k, fmt=str):
        v = r.get(k)
        return "-" if v is None else fmt(v)

    mib = lambda k: f"{k / 1024:.1f}"
    lines = [
        f"### Slow-header flood{(' (' + args.label + ')') if args.label else ''}: "
        f"{args.conns} connections held {args.hold:.0f} s",
        "",
        "| scenario | opened (failed) | RSS before / peak / 5 s after (MiB) | fds before / peak / after "
        "| /metrics p50 before / during / after (ms) | /metrics max during (ms) | /healthz max during (ms) "
        "| failed requests | held at end of hold | all closed after (s) | survived | cgroup peak (MiB) / OOM kills |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "opened" not in r:
            lines.append(f"| {r['scenario']} |" + " - |" * 11)
            continue
        lines.append(
            f"| {r['scenario']} | {r['opened']} ({r['open_failed']}) "
            f"| {mib(r['rss_before'])} / {mib(r['rss_peak'])} / {mib(r['rss_after'])} "
            f"| {r['fds_before']} / {r['fds_peak']} / {r['fds_after']} "
            f"| {ms(r['metrics_p50_before'])} / {ms(r['metrics_p50_during'])} / {ms(r['metrics_p50_after'])} "
            f"| {ms(r['metrics_max_during'])} | {ms(r['healthz_max_during'])} | {r['failed_requests']} "
            f"| {r['held_at_end_of_hold']} | {f(r, 'all_closed_after_s', lambda v: f'{v:.1f}')} "
            f"| {'yes' if r['alive'] else 'NO'} "
            f"| {f(r, 'peak', lambda v: f'{v / 1048576:.1f}')} / {f(r, 'oom_kills')} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(report + "\n")


if __name__ == "__main__":
    main()
