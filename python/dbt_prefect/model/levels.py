"""dbt log levels and Python logging levels, mapped explicitly in both directions.

dbt's EventLevel has debug, test, info, warn and error; Python has WARNING and CRITICAL,
which dbt lacks. Neither side's names can be handed to the other unchanged.
"""

from __future__ import annotations

import logging

DBT_TO_PYTHON: dict[str, int] = {
    "debug": logging.DEBUG,
    "test": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

# Python level names (and dbt spellings) to the dbt level that keeps the same records.
_NAME_TO_DBT: dict[str, str] = {
    "notset": "debug",
    "debug": "debug",
    "test": "test",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "critical": "error",
    "fatal": "error",
}


def to_dbt_level(value: object) -> str:
    """Normalise a dbt or Python level (name, EventLevel or int) to a dbt level name.

    'none' is kept: it silences dbt's logs entirely.
    """
    if isinstance(value, int):
        for name, number in (("error", 40), ("warn", 30), ("info", 20)):
            if value >= number:
                return name
        return "debug"
    raw = getattr(value, "value", value)
    name = str(raw).strip().lower()
    if name == "none":
        return "none"
    if name.isdigit():
        return to_dbt_level(int(name))
    try:
        return _NAME_TO_DBT[name]
    except KeyError:
        raise ValueError(
            f"unknown log level {raw!r}: use one of debug, info, warn, error, none (or a Python level such as WARNING)"
        ) from None


def python_level(dbt_level: str) -> int:
    """The Python level of a dbt level name; 'none' maps above CRITICAL."""
    if dbt_level == "none":
        return logging.CRITICAL + 10
    return DBT_TO_PYTHON[dbt_level]
