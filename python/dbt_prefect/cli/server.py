"""The Prefect API a ``dbt-prefect`` command talks to, and the temporary server it starts
when none is configured.

Without ``PREFECT_API_URL`` (in the environment or the active Prefect profile), Prefect's
client would start its own temporary server, give it 20 s, and let it send telemetry. On a
busy machine 20 s is not enough. So ``dbt-prefect build`` (and every dbt command) starts
that server itself, before the flow:

- with a budget that holds on a busy machine: 120 s, or
  ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` when you set it;
- once more on a new port if it exits before answering (a port taken meanwhile);
- with telemetry off, its log in a private file rather than on the terminal;
- stopped when the command ends, and also if the command dies: the server stops when its
  stdin, a pipe held by the command, closes.

If it still does not answer, the error says what to set. Runs are stored where Prefect's
own temporary server keeps them (the database of ``PREFECT_HOME``), so ``prefect server
start`` shows them later.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from dbt_prefect.errors import DbtPrefectError

# Prefect's own 20 s did not hold on a loaded 2-core machine: there, with four builds
# running, the server took 21 s to answer, and 53 s on a new database (its migrations).
STARTUP_BUDGET_SECONDS = 120.0
_STOP_SECONDS = 10.0
_FIX = (
    "Set PREFECT_API_URL to a running Prefect server (start one with `prefect server start`, "
    "then export PREFECT_API_URL=http://127.0.0.1:4200/api), or give the temporary server more "
    "time with PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (e.g. 300)."
)


class PrefectServerUnavailable(DbtPrefectError):
    """No PREFECT_API_URL is set and the temporary Prefect server did not start."""


def configured_api_url() -> str | None:
    """The Prefect API named by the environment or the active profile, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def startup_budget() -> float:
    """PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS when the user set it, else 120 s."""
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:
        return float(ephemeral.startup_timeout_seconds)
    return STARTUP_BUDGET_SECONDS


def _ephemeral_mode_allowed() -> bool:
    from prefect.settings import get_current_settings

    return bool(get_current_settings().server.ephemeral.enabled)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """Prefect's temporary API server in a child process, on a free 127.0.0.1 port."""

    def __init__(self, budget: float = STARTUP_BUDGET_SECONDS) -> None:
        self.budget = budget
        self.api_url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._directory = Path(tempfile.mkdtemp(prefix="dbt-prefect-server-"))
        self.log_path = self._directory / "server.log"

    def start(self) -> str:
        """Start the server and wait until it answers; return its API URL."""
        deadline = time.monotonic() + self.budget
        try:
            for attempt in (1, 2):
                port = _free_port()
                self._process = self._spawn(port)
                url = f"http://127.0.0.1:{port}/api"
                if self._wait_until_healthy(url, deadline):
                    self.api_url = url
                    return url
                code = self._process.poll()
                if code is None or attempt == 2 or time.monotonic() >= deadline:
                    raise PrefectServerUnavailable(self._failure(code))
                self._stop_process()  # exited before answering: once more, on a new port
        except BaseException:
            self.stop(keep_log=True)
            raise
        raise AssertionError("unreachable")

    def stop(self, keep_log: bool = False) -> None:
        self._stop_process()
        if not keep_log:
            shutil.rmtree(self._directory, ignore_errors=True)

    # -- inside -----------------------------------------------------------------------
    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        from prefect.settings import get_current_settings

        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
        env.update(
            {
                # A server started for the user sends no telemetry (offline, it would
                # print "Failed to send telemetry").
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                # invoke() waits until the server has stored the run's events, which it
                # writes in batches (every 5 s by default).
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
            }
        )
        env.pop("PREFECT_API_URL", None)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dbt_prefect._compat.prefect_server", str(port)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Ctrl-C in the terminal goes to the command, which then stops the server
                # after its flow run is finished with it.
                start_new_session=True,
            )

    def _wait_until_healthy(self, url: str, deadline: float) -> bool:
        import httpx

        assert self._process is not None
        while self._process.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)
        return False

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            try:
                process.stdin.close()  # the server shuts down at the end of its input
            except OSError:
                pass
        try:
            process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _failure(self, code: int | None) -> str:
        if code is None:
            what = f"did not answer within {self.budget:.0f} s (is this machine busy?)"
        else:
            what = f"exited with code {code} before it answered"
        message = f"No PREFECT_API_URL is set, and Prefect's temporary server {what}. {_FIX}\nIts log: {self.log_path}"
        tail = self._log_tail()
        return f"{message}\n{tail}" if tail else message

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(f"  {line}" for line in text.strip().splitlines()[-lines:])


_process_scope = ExitStack()


def use_temporary_server_if_needed() -> str | None:
    """Point this process at a temporary server when no Prefect API is configured.

    Returns the temporary server's API URL, or None when one is configured (or the active
    profile turned Prefect's temporary server off). The server stops at exit, after
    Prefect's event and log workers have sent what they hold. Raises
    PrefectServerUnavailable, with what to set, when it does not start."""
    if configured_api_url() is not None or not _ephemeral_mode_allowed():
        return None
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    print(
        "No PREFECT_API_URL is set: starting a temporary Prefect server for this command "
        "(its runs are kept in the database of PREFECT_HOME).",
        file=sys.stderr,
        flush=True,
    )
    server = TemporaryServer(startup_budget())
    url = server.start()
    # Interpreter exit runs Prefect's worker drains (threading's exit hooks) before atexit.
    atexit.register(server.stop)
    # No UI address: the server is gone when the command ends, so no link may point at it.
    # The environment is for threads without Prefect's settings context.
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_UI_URL"] = ""
    _process_scope.enter_context(temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: ""}))
    return url
