"""Prefect's temporary API server, run by dbt-prefect itself. Checked against prefect 3.8.8 and 3.9.1.

Why: without ``PREFECT_API_URL``, Prefect's client starts a temporary ("ephemeral") server
in a subprocess and gives it 20 s to answer (``SubprocessASGIServer``). On a busy machine
that is not enough, the only error is ``Timed out while attempting to connect to
ephemeral Prefect API server``, and the server sends telemetry (which prints ``Failed to
send telemetry`` offline). ``dbt-prefect`` commands start the same server themselves
(``cli/server.py``), with their own time budget and telemetry off.

``create_app(ephemeral=True, final=True)`` in ``prefect.server.api.server`` is the app
Prefect's own ``SubprocessASGIServer`` serves (it asks for it with the private
``PREFECT__SERVER_EPHEMERAL`` variable): the REST API with the services a short-lived
server needs (task-run recorder, event persister, triggers and actions), and no UI.
"""

from __future__ import annotations

import sys
from typing import Any


def ephemeral_api_app() -> Any:
    """The ASGI app of Prefect's temporary server (imports the whole Prefect server)."""
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


def serve_until_stdin_closes(port: int) -> None:
    """Serve the app on 127.0.0.1:``port`` until this process's stdin reaches its end.

    The parent holds the other end of stdin: when it stops the server, or dies without
    doing so (even by SIGKILL), the pipe closes and the server shuts down, so no server is
    left behind."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(ephemeral_api_app(), host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )

    def stop_at_end_of_input() -> None:
        sys.stdin.buffer.read()
        server.should_exit = True

    threading.Thread(target=stop_at_end_of_input, name="stop-at-end-of-input", daemon=True).start()
    server.run()
    # uvicorn returns without raising when it cannot bind the port: tell the parent.
    sys.exit(0 if server.started else 3)


if __name__ == "__main__":
    serve_until_stdin_closes(int(sys.argv[1]))
