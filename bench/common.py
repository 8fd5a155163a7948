"""Helpers the bench scripts share (imported from the scripts' own directory): a free loopback
port and a process's resident memory."""

import socket


def free_port():
    """A TCP port free on 127.0.0.1 at the time of asking."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid, missing=0):
    """VmRSS of `pid` in KiB; `missing` when the process is gone or has none."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return missing
