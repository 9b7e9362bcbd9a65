"""A real `prefect server` process on 127.0.0.1 for tests: started, then waited for with a bound."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def start_prefect_server(port: int, env: Mapping[str, str], log_path: Path, timeout: float = 120.0) -> subprocess.Popen:
    """`prefect server start` on 127.0.0.1:`port`, its output in `log_path`; returns once
    its API answers /health, or raises with the end of its log."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"prefect server did not start; its log:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.25)


def stop_prefect_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
