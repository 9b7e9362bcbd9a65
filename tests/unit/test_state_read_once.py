"""state_read_once (_compat/dbt_state.py): dbt's --state read takes the artifact the
store's check already loaded, once, and reads every other file itself."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timezone
from pathlib import Path

from dbt.artifacts.schemas.manifest import ManifestMetadata, WritableManifest
from dbt.artifacts.schemas.run import RunResultsArtifact

from dbt_prefect._compat.dbt_state import read_state_artifact, state_read_once


def stored_state(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    empty = {field.name: {} for field in dataclasses.fields(WritableManifest) if field.name != "metadata"}
    WritableManifest(metadata=ManifestMetadata(), **empty).write(str(manifest))
    results = directory / "run_results.json"
    RunResultsArtifact.from_execution_results(
        results=[], elapsed_time=0.0, generated_at=datetime.now(timezone.utc).replace(tzinfo=None), args={"vars": {}, "invocation_command": "dbt build"}
    ).write(str(results))
    return {"manifest": manifest, "results": results}


def test_dbts_next_read_of_a_checked_file_returns_the_loaded_object_once(tmp_path: Path) -> None:
    files = stored_state(tmp_path / "state")
    manifest, problem = read_state_artifact(files["manifest"])
    results, results_problem = read_state_artifact(files["results"])
    assert (problem, results_problem) == (None, None)
    assert isinstance(manifest, WritableManifest) and isinstance(results, RunResultsArtifact)
    with state_read_once({files["manifest"]: manifest, files["results"]: results}):
        # dbt joins project root and state path: the same file by another spelling.
        assert WritableManifest.read_and_check_versions(str(tmp_path / "state" / ".." / "state" / "manifest.json")) is manifest
        assert RunResultsArtifact.read_and_check_versions(str(files["results"])) is results
        again = WritableManifest.read_and_check_versions(str(files["manifest"]))
        assert again is not manifest and again.metadata.dbt_schema_version == manifest.metadata.dbt_schema_version


def test_other_files_and_reads_after_the_block_are_dbts_own(tmp_path: Path) -> None:
    files = stored_state(tmp_path / "state")
    elsewhere = stored_state(tmp_path / "elsewhere")
    manifest, _ = read_state_artifact(files["manifest"])
    with state_read_once({files["manifest"]: manifest}):
        other = WritableManifest.read_and_check_versions(str(elsewhere["manifest"]))
        assert other is not manifest
    # Left unread inside the block: dropped, so a later read loads the file.
    with state_read_once({files["manifest"]: manifest}):
        pass
    assert WritableManifest.read_and_check_versions(str(files["manifest"])) is not manifest


def test_a_file_of_the_wrong_kind_is_read_by_dbt_not_handed_over(tmp_path: Path) -> None:
    files = stored_state(tmp_path / "state")
    results, _ = read_state_artifact(files["results"])
    # Registered under the manifest's path by mistake: dbt's manifest reader must not return it.
    with state_read_once({files["manifest"]: results}):
        assert isinstance(WritableManifest.read_and_check_versions(str(files["manifest"])), WritableManifest)


def test_concurrent_blocks_each_get_their_own_objects(tmp_path: Path) -> None:
    got: dict[int, bool] = {}
    start = threading.Barrier(4)

    def one(index: int) -> None:
        files = stored_state(tmp_path / f"state{index}")
        manifest, _ = read_state_artifact(files["manifest"])
        start.wait()
        with state_read_once({files["manifest"]: manifest}):
            got[index] = WritableManifest.read_and_check_versions(str(files["manifest"])) is manifest

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert got == {0: True, 1: True, 2: True, 3: True}


def test_a_corrupt_file_is_a_reason_not_an_object(tmp_path: Path) -> None:
    files = stored_state(tmp_path / "state")
    files["manifest"].write_text('{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v1.json"}}')
    artifact, problem = read_state_artifact(files["manifest"])
    assert artifact is None
    assert problem is not None and problem.startswith("manifest.json: IncompatibleSchemaError: ")
    assert "v1.json" in problem
