"""Faults on 127.0.0.1: a Prefect server process a test may kill and restart, a TCP proxy
in front of it that can add latency, answer 503 or drop connections, and a flow run in a
child process whose timings the test reads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A `prefect server` with its own home and database, on a fixed port across restarts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120.0) -> None:
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
            }
        )
        log = open(self.home / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"prefect server did not start:\n{(self.home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port``.

    Modes: "pass"; "latency" (each chunk towards the server waits ``latency`` seconds);
    "health-503" (the API's health check answers 503, everything else passes);
    "503" (every new connection gets ``503 Service Unavailable`` and is closed);
    "drop" (every new connection, and every open one, is closed at once).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.mode = "pass"
        self.latency = 0.0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode: str, latency: float = 0.0) -> None:
        self.mode, self.latency = mode, latency
        if mode == "drop":
            with self._lock:
                for sock in list(self._open):
                    _close(sock)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.set_mode("drop")

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.mode == "health-503":
            # Only the API's health check fails: what a worker that cannot reach the API sees.
            client.settimeout(5)
            try:
                first_line = client.recv(65536, socket.MSG_PEEK).split(b"\r\n", 1)[0]
            except OSError:
                first_line = b""
            if b" /api/health" in first_line:
                try:
                    client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
                _close(client)
                return
            client.settimeout(None)
        if self.mode == "drop":
            _close(client)
            return
        if self.mode == "503":
            client.settimeout(5)
            try:
                client.recv(65536)
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            _close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
        self._pipe(upstream, client, False)

    def _pipe(self, source: socket.socket, sink: socket.socket, towards_server: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if towards_server and self.mode == "latency":
                    time.sleep(self.latency)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


FLOW_SCRIPT = r'''
import json, sys, threading, time
marks = {"started": time.time()}
from prefect import flow
from dbt_prefect import PrefectDbtRunner, PrefectDbtSettings

project, signal_file = sys.argv[1], sys.argv[2]

def watch(event):
    name = event.info.name
    if name == "NodeFinished" and "first_node" not in marks:
        marks["first_node"] = time.time()
        open(signal_file, "w").write("first node finished")
    elif name == "CommandCompleted":
        marks["dbt_done"] = time.time()
        threading.Thread(target=take_the_dbt_lock, daemon=True).start()


def take_the_dbt_lock():
    # When another invocation in this process could start: the process-wide dbt lock is free.
    from dbt_prefect.runner.invocation import DBT_INVOCATION_LOCK

    if DBT_INVOCATION_LOCK.acquire(timeout=120):
        marks["lock_free"] = time.time()
        DBT_INVOCATION_LOCK.release()

@flow(name="dbt-faults", persist_result=False)
def build():
    from prefect.context import FlowRunContext
    marks["flow_run_id"] = str(FlowRunContext.get().flow_run.id)
    runner = PrefectDbtRunner(settings=PrefectDbtSettings(project_dir=project, profiles_dir=project), raise_on_failure=False)
    try:
        result = runner.invoke(["build"], callbacks=[watch])
        marks["results"] = {r.node.unique_id: str(getattr(r.status, "value", r.status)) for r in result.result.results}
        marks["success"] = result.success
    except BaseException as exc:
        marks["invoke_raised"] = f"{type(exc).__name__}: {exc}"
    marks["invoke_returned"] = time.time()

try:
    build()
except BaseException as exc:
    marks["flow_raised"] = f"{type(exc).__name__}: {exc}"
marks["flow_done"] = time.time()
print("MARKS " + json.dumps(marks), flush=True)
'''


@dataclass
class FlowProcess:
    process: subprocess.Popen
    signal_file: Path
    started: float

    def wait_for_first_node(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.signal_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dbt did not finish a first node: {self.process.stdout.read() if self.process.poll() is not None else 'timeout'}")
            time.sleep(0.05)

    def finish(self, timeout: float = 300.0) -> tuple[dict[str, Any], str, float]:
        """The child's marks, its output, and when it exited (time.time())."""
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            output, _ = self.process.communicate()
            raise AssertionError(f"the flow process did not exit within {timeout} s:\n{output[-4000:]}")
        exited = time.time()
        line = next((line for line in output.splitlines() if line.startswith("MARKS ")), None)
        assert line is not None, f"the flow process printed no marks:\n{output[-4000:]}"
        return json.loads(line[len("MARKS "):]), output, exited


def start_flow(project: Path, api_url: str, work: Path) -> FlowProcess:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    signal_file = work / f"first-node-{time.time_ns()}"
    script = work / "fault_flow.py"
    script.write_text(FLOW_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(project), str(signal_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return FlowProcess(process, signal_file, time.time())


ORCHESTRATOR_SCRIPT = r'''
import json, sys
from prefect import flow
from dbt_prefect import ExecutionMode, PrefectDbtOrchestrator, PrefectDbtSettings

project = sys.argv[1]

@flow(name="dbt-faults-orchestrator", persist_result=False)
def build():
    orchestrator = PrefectDbtOrchestrator(
        settings=PrefectDbtSettings(project_dir=project, profiles_dir=project),
        execution_mode=ExecutionMode.PER_NODE,
        raise_on_failure=False,
        record_timeout_seconds=10,
    )
    return dict(orchestrator.run_build())

print("RESULTS " + json.dumps(build(), default=str), flush=True)
'''


def run_orchestrator(project: Path, api_url: str, work: Path, timeout: float = 300.0) -> tuple[dict[str, Any], str]:
    """A per-node orchestrated build in a child process against ``api_url``: its results and output."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    script = work / "fault_orchestrator.py"
    script.write_text(ORCHESTRATOR_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(project)], env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULTS ")), None)
    assert line is not None, output[-4000:]
    return json.loads(line[len("RESULTS "):]), output
