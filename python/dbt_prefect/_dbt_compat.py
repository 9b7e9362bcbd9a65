"""The only place dbt-prefect touches dbt-core internals. Checked against dbt-core 1.10 and 1.11.

Why it is needed:
- ``env_var()`` in dbt's Jinja reads the environment dbt copied when the invocation
  started (``dbt_common.context.InvocationContext.env``), not ``os.environ``. The run
  history macro asks the runner for the run's task-run ids halfway through the run (see
  events.py), so the answer has to go into that copy. It is set from dbt's own thread,
  inside the macro's ``log()`` call, and disappears with the invocation.
"""

from __future__ import annotations

from collections.abc import MutableMapping


def set_invocation_env_var(name: str, value: str) -> None:
    from dbt_common.context import get_invocation_context

    context = get_invocation_context()
    env = context.env
    if isinstance(env, MutableMapping):
        env[name] = value
    else:  # a read-only mapping (dbt's case-insensitive one on Windows): replace it
        context._env = {**env, name: value}
