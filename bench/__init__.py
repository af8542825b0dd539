"""Benchmarks and studies whose tables the README, docs/ and the model card quote (results in ``bench/results/``)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS: dict = {}  # URL -> the app_server process serving it, while it runs


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process (default: this one) has used so far, all its threads (Linux ``/proc``)."""
    with open(f"/proc/{pid or os.getpid()}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_results(out: str, report: dict, lines: list) -> None:
    """``out.json`` (the full report) and ``out.md`` (the table ``lines``), then print the table."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


CHROMIUM = "/usr/bin/chromium"  # Debian's; driven by Playwright (the browser tests and bench.play)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(*args: str, wait_s: float = 180, log_path: str | None = None):
    """``python app.py --port P *args`` (offline; its output in ``log_path``, else discarded) until the block ends:
    yields its URL once it answers; ``RuntimeError`` with the log's end when it does not within ``wait_s``."""
    from msc.environment import OFFLINE

    port = free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=ROOT, env={**os.environ, **OFFLINE},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    SERVERS[url] = proc
    try:
        deadline = time.time() + wait_s
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    tail = open(log_path).read()[-2000:] if log_path else ""
                    raise RuntimeError(f"app.py did not come up on {url} (exit code {proc.poll()}): {tail}") from None
                time.sleep(0.5)  # polling a starting server
        yield url
    finally:
        SERVERS.pop(url, None)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()
