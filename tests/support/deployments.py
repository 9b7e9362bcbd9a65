"""Deployments as a Prefect user runs them: the `dbt-prefect` and `prefect` commands as
subprocesses, a worker that runs once, flow runs triggered and read back through the client."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client

from support.projects import REPO_ROOT

BIN = Path(sys.executable).parent
DBT_PREFECT = BIN / "dbt-prefect"
PREFECT = BIN / "prefect"
FINAL_STATE_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def realprojects() -> Path | None:
    """The shared real projects (../shared/realprojects beside the clone, or beside the
    folder of worktrees it sits in), or DBT_PREFECT_REALPROJECTS; None when absent."""
    candidates = [os.environ.get("DBT_PREFECT_REALPROJECTS", "")]
    candidates += [str(base / "shared" / "realprojects") for base in (REPO_ROOT.parent, REPO_ROOT.parent.parent)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "use.sh").is_file():
            return Path(candidate)
    return None


def copy_realproject(name: str, destination: Path) -> Path:
    """A copy of a shared real project, with `dbt deps` done by its use.sh; the folder to build."""
    root = realprojects()
    assert root is not None
    done = subprocess.run(
        ["bash", str(root / "use.sh"), name, str(destination), sys.executable],
        capture_output=True,
        text=True,
        timeout=300,
        env=quiet_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.splitlines()[-1])


def quiet_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DBT_PROJECT_DIR", "DBT_PROFILES_DIR")) and k != "CI"
    }
    env.update(
        {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    )
    env.update(extra)
    return env


def run(
    argv: list[Any], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env or quiet_env(), capture_output=True, text=True, timeout=timeout
    )


def prefect(
    *args: Any, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The `prefect` command, as a user types it (never prompting: no terminal)."""
    done = run([PREFECT, *args], cwd=cwd, env=env, timeout=timeout)
    assert done.returncode == 0, (
        f"prefect {' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def prefect_in_a_terminal(*args: Any, cwd: Path, timeout: float = 300) -> str:
    """The `prefect` command in a terminal, as a user types it, with nothing to type: a
    prompt would read the end of input and fail. Its output; it must succeed."""
    script = shutil.which("script")  # util-linux: runs a command in a new pseudo-terminal
    assert script is not None, "the `script` command (util-linux) is needed to run prefect in a terminal"
    command = shlex.join([str(PREFECT), *map(str, args)])
    done = subprocess.run(
        [script, "-qec", command, "/dev/null"],
        cwd=cwd,
        env=quiet_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command} in a terminal exited {done.returncode}:\n{done.stdout[-4000:]}"
    return done.stdout


def git(*args: Any, cwd: Path) -> str:
    done = run(["git", "-c", "user.name=dbt-prefect tests", "-c", "user.email=tests@example.invalid", *args], cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def run_worker_once(pool: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`prefect worker start --pool POOL --run-once`: runs the flow runs that are due, then exits."""
    return prefect("worker", "start", "--pool", pool, "--run-once", cwd=cwd, env=env, timeout=600)


def deployment(full_name: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(full_name)


def trigger(full_name: str, parameters: dict[str, Any] | None = None) -> UUID:
    """A flow run of the deployment `flow/deployment`, scheduled now."""
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(full_name)
        return client.create_flow_run_from_deployment(found.id, parameters=parameters or {}).id


def wait_until_final(flow_run_id: UUID, timeout: float = 120) -> Any:
    """The flow run once it is in a final state (or as it is after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state_type is not None and flow_run.state_type.value in FINAL_STATE_TYPES:
                return flow_run
            if time.monotonic() >= deadline:
                return flow_run
            time.sleep(0.5)
