"""A killed worker's private directory is removed by the next worker on the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbt_prefect.orchestrator.warm_project import WORKER_DIR_PREFIX, sweep_dead_worker_dirs


@pytest.mark.skipif(os.name != "posix", reason="pids are probed on POSIX only")
def test_only_the_directories_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{WORKER_DIR_PREFIX}{gone.pid}-abc123"
    alive = tmp_path / f"{WORKER_DIR_PREFIX}{os.getpid()}-def456"
    unnamed = tmp_path / f"{WORKER_DIR_PREFIX}q1w2e3r4"  # no pid in the name: not ours to judge
    other = tmp_path / f"dbt-prefect-profiles-{gone.pid}-x"
    for path in (dead, alive, unnamed, other):
        (path / "profiles").mkdir(parents=True)
        (path / "profiles" / "profiles.yml").write_text("shop: {}\n")

    assert sweep_dead_worker_dirs(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, unnamed, other))
    assert sweep_dead_worker_dirs(tmp_path) == []
