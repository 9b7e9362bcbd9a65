"""``invoke(["build", ...], only_changed=True)``: build only what changed since the state
stored by the last build, by dbt's own state selectors.

Selection: ``state:modified+ result:error+ result:fail+ result:skipped+``, plus
``source_status:fresher+`` when the project checks source freshness, against the
previous build's ``manifest.json``, ``run_results.json`` and ``sources.json``, copied from
the store into a temporary ``--state`` directory. ``result:skipped+`` is ours: in a build,
a failing test skips the models below its model, which are not graph descendants of the
test. A user's own ``--select`` narrows this (intersection: each of their selectors
joined to each of ours with a comma); ``--exclude`` applies as usual. For
``source_status:fresher+``, ``dbt source freshness`` runs first in the same invocation and
writes ``sources.json`` into the current target path, which is where dbt compares it.
The parse done for that is the build's too: dbt builds on the parsed manifest without
parsing again (at 1,000 models, about 2.5 s of an unchanged build).

Everything is built, with a log line saying why, when the store holds no state (the first
build), when what it holds is incomplete or unreadable by dbt, when source freshness
could not be checked, and with ``--full-refresh``.

What is stored after the build (the state never moves past what did not finish):
- ``run_results.json``: the stored results with this build's results laid over them,
  node by node, so a node that failed or was skipped stays ``error``/``fail``/``skipped``
  until a build runs it successfully, and a node this build did not select keeps its
  last result.
- ``manifest.json`` and ``sources.json``: this build's, when the build covered every
  change (no ``--select``, ``--exclude``, ``--selector`` or ``--resource-type`` of the
  user's). After a narrower build the stored ones stay, so every change it left out is
  still a change next time; with no stored state, a narrower build stores nothing.
- Nothing at all when dbt stopped with an error before it reported its results.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner

from dbt_prefect._compat.dbt_state import read_state_artifact, sources_with_freshness, state_read_once
from dbt_prefect.errors import StateStoreError
from dbt_prefect.model.statuses import Outcome, classify
from dbt_prefect.runner.args import DbtInvocation, command_params
from dbt_prefect.runner.heap import freeze_what_exists_now
from dbt_prefect.runner.state_store import ARTIFACTS, WRITE_ORDER, StateStore, StoredFileMissing

CHANGE_SELECTORS = ("state:modified+", "result:error+", "result:fail+", "result:skipped+")
FRESHER_SELECTOR = "source_status:fresher+"
# A user's flags that build less than every change.
_NARROWING = ("select", "exclude", "resource_types", "exclude_resource_types")
# A user's flags that the parse and source freshness before the build need too.
_SHARED = ("target", "profile", "vars")
# What dbt build runs, as task runs; ephemeral models are inlined, not run.
_BUILT_TYPES = ("model", "seed", "snapshot", "test", "unit_test")
# A node whose result lets the state move past it (success, pass, warn, no-op).
_FINISHED = (Outcome.SUCCEEDED, Outcome.WARNED, Outcome.NO_OP)

Say = Callable[[int, str], None]


def check_request(invocation: DbtInvocation, kwargs: dict[str, Any], store: Any) -> None:
    """StateStoreError when only_changed cannot work for this call, before dbt starts."""
    if store is None:
        from dbt_prefect.runner.state_store import missing_store_error

        raise missing_store_error()
    if invocation.command != "build":
        raise StateStoreError(
            f"only_changed works with dbt build, not dbt {invocation.command} "
            "(call invoke(['build', ...], only_changed=True), or drop only_changed)"
        )
    params = {**command_params(invocation.args), **kwargs}
    if params.get("selector"):
        raise StateStoreError(
            "only_changed cannot be combined with --selector: a YAML selector cannot be intersected "
            "with the change selectors (use --select and --exclude, or drop only_changed)"
        )
    if params.get("state"):
        raise StateStoreError(
            "only_changed compares against the state store, so --state cannot be given as well "
            "(drop --state, or drop only_changed and select with state: yourself)"
        )


class ArtifactPaths:
    """A dbt callback: where dbt wrote each artifact in this invocation, by file name."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}

    def __call__(self, msg: Any) -> None:
        if msg.info.name == "ArtifactWritten":
            path = Path(msg.data.artifact_path)
            self.paths[path.name] = path


@dataclass
class ChangedBuild:
    store: StateStore
    say: Say
    state_dir: Path
    narrowed: bool
    usable: bool  # the stored state can be compared against
    select: tuple[str, ...] | None = None  # None: build everything the user selected
    sources_json: Path | None = None  # written by this invocation's source freshness
    artifacts: ArtifactPaths = field(default_factory=ArtifactPaths)
    # The parse done here for source freshness; the build reuses it instead of parsing again.
    manifest: Any = None
    # dbt's objects for the stored artifacts, loaded by the check in _load; the build's
    # --state takes them instead of loading the same files again.
    loaded: dict[Path, Any] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls, store: StateStore, invocation: DbtInvocation, kwargs: dict[str, Any], dbt_args: Sequence[str], say: Say
    ) -> ChangedBuild:
        """Read the store, run source freshness if the project checks it, and decide the
        selection. ``dbt_args`` are --project-dir, --profiles-dir and --target-path."""
        params = {**command_params(invocation.args), **kwargs}
        build = cls(
            store=store,
            say=say,
            state_dir=Path(tempfile.mkdtemp(prefix="dbt-prefect-state-")),
            narrowed=any(params.get(name) for name in _NARROWING),
            usable=False,
        )
        try:
            build._decide(params, dbt_args)
        except BaseException:
            shutil.rmtree(build.state_dir, ignore_errors=True)
            raise
        return build

    def _decide(self, params: dict[str, Any], dbt_args: Sequence[str]) -> None:
        build, say, where = self, self.say, self.store.describe()
        found, problem = build._load()
        freeze_what_exists_now()  # the stored artifacts live until the build has read them
        build.usable = problem is None and "manifest.json" in found
        shared = {name: params[name] for name in _SHARED if params.get(name)}
        fresh_problem = build._check_freshness(dbt_args, shared)

        if params.get("full_refresh"):
            say(logging.INFO, f"only_changed: --full-refresh builds everything, ignoring the state stored in {where}")
            return
        if not found and problem is None:
            # A warning: a first run and a store emptied or moved look alike.
            say(
                logging.WARNING,
                f"only_changed: no state stored in {where} (a first run, or the store was emptied or moved): "
                "building everything",
            )
            return
        if not build.usable:
            say(
                logging.WARNING,
                f"only_changed: the state stored in {where} cannot be used ({problem}): building everything",
            )
            return
        selectors = list(CHANGE_SELECTORS)
        if build.sources_json is not None and "sources.json" in found:
            selectors.append(FRESHER_SELECTOR)
        elif fresh_problem is not None:
            say(logging.WARNING, f"only_changed: {fresh_problem}: building everything")
            return
        elif build.sources_json is not None and _checked_freshness(build.state_dir / "manifest.json"):
            say(
                logging.WARNING,
                f"only_changed: the state stored in {where} has no sources.json, so new rows in sources "
                "cannot be told apart: building everything",
            )
            return
        users = [item for token in params.get("select") or () for item in str(token).split()]
        build.select = tuple(f"{u},{s}" for u in users for s in selectors) if users else tuple(selectors)
        say(
            logging.INFO,
            f"only_changed: building what changed since the state stored in {where}: --select {' '.join(build.select)}",
        )

    def dbt_kwargs(self) -> dict[str, Any]:
        if self.select is None:
            return {}
        return {"select": self.select, "state": self.state_dir}

    def state_read_once(self) -> AbstractContextManager[None]:
        """Around the build: dbt's --state takes the artifacts _load already read."""
        if self.select is None:
            self.loaded.clear()
            return nullcontext()
        loaded, self.loaded = self.loaded, {}
        return state_read_once(loaded)

    def finish(self, result: Any, dbt_raised: bool) -> None:
        """Save the state this build leaves (see the module docstring); never raises."""
        where = self.store.describe()
        try:
            if dbt_raised or getattr(result, "result", None) is None:
                self.say(
                    logging.WARNING, f"only_changed: dbt stopped with an error; the state in {where} is left as it was"
                )
                return
            manifest_path = self.artifacts.paths.get("manifest.json")
            results_path = self.artifacts.paths.get("run_results.json")
            if manifest_path is None or results_path is None:
                self.say(
                    logging.WARNING,
                    f"only_changed: dbt wrote no manifest.json or run_results.json (--no-write-json?); "
                    f"the state in {where} is left as it was",
                )
                return
            manifest = json.loads(manifest_path.read_bytes())
            results = json.loads(results_path.read_bytes())
            ran = {entry["unique_id"] for entry in results.get("results", [])}
            if self.select is not None:
                self._say_not_selected(manifest, ran)
            self._save(manifest_path, results, manifest)
        except Exception as exc:
            self.say(
                logging.WARNING,
                f"only_changed: could not save the state to {where}: {type(exc).__name__}: {exc}; "
                "the next build compares against the state stored before this one",
            )
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- internals -------------------------------------------------------------------
    def _load(self) -> tuple[set[str], str | None]:
        """Copy the stored artifacts into state_dir: the names found, and what is wrong."""
        found: set[str] = set()
        for name in ARTIFACTS:
            try:
                content = self.store.read(name)
            except StoredFileMissing:
                continue
            except Exception as exc:
                return found, f"reading {name} failed: {type(exc).__name__}: {exc}"
            (self.state_dir / name).write_bytes(content)
            found.add(name)
        if found and not {"manifest.json", "run_results.json"} <= found:
            missing = sorted({"manifest.json", "run_results.json"} - found)
            return found, f"{' and '.join(missing)} missing"
        for name in sorted(found):
            artifact, reason = read_state_artifact(self.state_dir / name)
            if reason is not None:
                self.loaded.clear()
                return found, reason
            self.loaded[self.state_dir / name] = artifact
        return found, None

    def _check_freshness(self, dbt_args: Sequence[str], shared: dict[str, Any]) -> str | None:
        """Run dbt source freshness when the project configures it, writing sources.json
        into the target path; what went wrong, or None."""
        # It writes manifest.json, which a build on this parse does not write again.
        parsed = dbtRunner(callbacks=[self.artifacts]).invoke(["parse", *dbt_args], log_level="none", **shared)
        if parsed.exception is not None or parsed.result is None or not parsed.success:
            self.artifacts.paths.clear()
            return None  # the build parses again and reports the error
        manifest: Any = parsed.result  # parse returns the Manifest
        self.manifest = manifest
        freeze_what_exists_now()  # the build runs on this manifest
        if not sources_with_freshness(manifest):
            return None
        capture = ArtifactPaths()
        checked = dbtRunner(manifest=manifest, callbacks=[capture]).invoke(
            ["source", "freshness", *dbt_args], log_level="none", **shared
        )
        self.sources_json = capture.paths.get("sources.json")
        if checked.exception is not None or self.sources_json is None:
            self.sources_json = None
            detail = f": {checked.exception}" if checked.exception is not None else ""
            return f"dbt source freshness failed, so new rows in sources cannot be told apart{detail}"
        return None

    def _say_not_selected(self, manifest: dict[str, Any], ran: set[str]) -> None:
        left_out = sorted(
            f"{entry.get('resource_type')} {entry.get('name')}"
            for uid, entry in [*manifest.get("nodes", {}).items(), *manifest.get("unit_tests", {}).items()]
            if uid not in ran and _built(entry)
        )
        if not left_out:
            return
        why = (
            "are unchanged since the last successful build or outside the build's own --select, --exclude or --resource-type"
            if self.narrowed
            else "are unchanged since the last successful build"
        )
        self.say(
            logging.INFO, f"only_changed: {len(left_out)} nodes {why}, so were not selected: {', '.join(left_out)}"
        )

    def _save(self, manifest_path: Path, results: dict[str, Any], manifest: dict[str, Any]) -> None:
        where = self.store.describe()
        known = {*manifest.get("nodes", {}), *manifest.get("unit_tests", {}), *manifest.get("sources", {})}
        new_results = results.get("results", [])
        ran = {entry["unique_id"] for entry in new_results}
        previous: list[dict[str, Any]] = []
        if self.usable and (self.state_dir / "run_results.json").is_file():
            previous = json.loads((self.state_dir / "run_results.json").read_bytes()).get("results", [])
        kept = [entry for entry in previous if entry.get("unique_id") not in ran and entry.get("unique_id") in known]
        merged = {**results, "results": [*kept, *new_results]}
        unfinished = sorted(e["unique_id"] for e in new_results if classify(e.get("status")).outcome not in _FINISHED)
        if self.narrowed and not self.usable:
            self.say(
                logging.INFO,
                f"only_changed: nothing saved to {where}: this build was narrowed by its own selection "
                "and there is no earlier state to add its results to",
            )
            return
        files: dict[str, bytes] = {"run_results.json": json.dumps(merged).encode()}
        if not self.narrowed:
            if self.sources_json is not None and self.sources_json.is_file():
                files["sources.json"] = self.sources_json.read_bytes()
            files["manifest.json"] = manifest_path.read_bytes()
        for name in WRITE_ORDER:
            if name in files:
                self.store.write(name, files[name])
        kept_note = (
            "" if not self.narrowed else "; the stored manifest.json stays, as this build covered only part of it"
        )
        failed_note = (
            f"; {len(unfinished)} nodes that did not succeed stay marked to be built next time" if unfinished else ""
        )
        self.say(logging.INFO, f"only_changed: saved the state of this build to {where}{kept_note}{failed_note}")


def _built(entry: dict[str, Any]) -> bool:
    kind = entry.get("resource_type")
    if kind not in _BUILT_TYPES:
        return False
    return not (kind == "model" and (entry.get("config") or {}).get("materialized") == "ephemeral")


def _checked_freshness(manifest_path: Path) -> bool:
    """Whether the stored manifest has a source with a freshness threshold."""
    try:
        sources = json.loads(manifest_path.read_bytes()).get("sources", {})
    except Exception:
        return True
    for source in sources.values():
        freshness = source.get("freshness") or {}
        for threshold in ("warn_after", "error_after"):
            if (freshness.get(threshold) or {}).get("count"):
                return True
    return False
