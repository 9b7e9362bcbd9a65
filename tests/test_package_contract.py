"""The strings the Python runner shares with the dbt package's macros are spelled alike on both sides.

A unit test: it reads the macro files as text and runs neither dbt nor Prefect. A string
counts as spelled out only in macro code, not in a Jinja comment.
"""

from __future__ import annotations

import re
from pathlib import Path

from dbt_prefect.model import package_contract
from dbt_prefect.model.package_contract import (
    METADATA_RECORD,
    PREFECT_CONFIG_KEYS,
    RECORD_PREFIX,
    RUN_CONTEXT_REQUEST,
    SHARED_WITH_MACROS,
)

MACROS = Path(__file__).resolve().parents[1] / "dbt_packages_src" / "macros"
JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)


def macro_code() -> dict[Path, str]:
    files = sorted(MACROS.rglob("*.sql"))
    assert files, f"no macros under {MACROS}"
    return {path: JINJA_COMMENT.sub("", path.read_text()) for path in files}


def contract_constants() -> dict[str, str]:
    return {name: value for name, value in vars(package_contract).items() if name.isupper() and isinstance(value, str)}


def test_every_shared_string_is_spelled_out_in_the_macros() -> None:
    code = macro_code()
    names = {value: [n for n, v in contract_constants().items() if v == value] for value in SHARED_WITH_MACROS}
    missing = [f"{'/'.join(names[value]) or '?'} = {value!r}" for value in dict.fromkeys(SHARED_WITH_MACROS)
               if not any(value in text for text in code.values())]
    assert not missing, f"not in any macro under {MACROS}: " + ", ".join(missing)


def test_every_string_constant_of_the_contract_is_listed_as_shared() -> None:
    unlisted = sorted(name for name, value in contract_constants().items() if value not in SHARED_WITH_MACROS)
    assert not unlisted, f"add to SHARED_WITH_MACROS: {', '.join(unlisted)}"


def test_the_macro_defaults_of_meta_prefect_have_exactly_the_keys_the_runner_lists() -> None:
    (path,) = [p for p in macro_code() if p.name == "prefect_config_defaults.sql"]
    returned = re.search(r"return\(\s*(\{.*?\})\s*\)", macro_code()[path], re.S)
    assert returned, f"no `return({{...}})` dict literal in {path}"
    keys = re.findall(r"""['"](\w+)['"]\s*:""", returned.group(1))
    assert sorted(keys) == sorted(PREFECT_CONFIG_KEYS), f"{path.name} has {keys}, package_contract has {PREFECT_CONFIG_KEYS}"


def test_every_line_for_the_runner_starts_with_the_record_prefix() -> None:
    # The runner's dbt callback looks only at log lines that start with RECORD_PREFIX.
    assert METADATA_RECORD.startswith(RECORD_PREFIX)
    assert RUN_CONTEXT_REQUEST.startswith(RECORD_PREFIX)
