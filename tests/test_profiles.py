"""profiles.yml templating: `{{ prefect.blocks... }}` and `{{ prefect.variables... }}`.

Rendering rules are checked with a fake resolver; everything that talks to Prefect runs
against the real session server (`prefect_server` in conftest.py). Rendered profiles are
always fed back through dbt's own loader and ProfileRenderer to check final values.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from dbt.config.profile import Profile, read_profile
from dbt.config.renderer import ProfileRenderer
from dbt_common.context import set_invocation_context
from pydantic import Field, SecretStr

from dbt_prefect.errors import DbtProfilesError, ProfileTemplateError
from dbt_prefect.profiles.placeholders import has_prefect_placeholders
from dbt_prefect.profiles.resolve import (
    ResolvedProfiles,
    load_profiles_yaml,
    render_profiles_text,
    resolved_profiles,
)
from dbt_prefect.profiles.resolver import (
    BlockDocumentNotFound,
    BlockTypeNotFound,
    VariableNotFound,
)

SOURCE = Path("/project/profiles.yml")

# Distinctive secret values, with characters that stress YAML, Jinja and dbt.
SF_ACCOUNT = "xy12345.eu-central-1-acct"
SF_USER = "svc_dbt_prefect_user"
SF_PASSWORD = "pw-S3cr3t'\"{{ x }}\\$ü-9f8e7d"
SECRET_PW = "db-secret-value-4f1c2a"
KEY_ID = "key-id-8b7a6c5d"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEv-private-9c8b\n-----END PRIVATE KEY-----\n"
TOKEN = "token-SecretStr-77aa11"
ALL_SECRETS = [SF_ACCOUNT, SF_USER, SF_PASSWORD, SECRET_PW, KEY_ID, PRIVATE_KEY, TOKEN]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


class FakeResolver:
    """A dict-backed resolver that counts reads."""

    def __init__(self, blocks: dict | None = None, variables: dict | None = None) -> None:
        self.blocks = blocks or {}
        self.variables = variables or {}
        self.reads: Counter = Counter()

    def block(self, type_slug: str, name: str) -> dict:
        self.reads[("block", type_slug, name)] += 1
        if type_slug not in {slug for slug, _ in self.blocks}:
            raise BlockTypeNotFound(type_slug)
        if (type_slug, name) not in self.blocks:
            raise BlockDocumentNotFound(
                type_slug, name, available=sorted(n for s, n in self.blocks if s == type_slug)
            )
        return self.blocks[(type_slug, name)]

    def variable(self, name: str) -> Any:
        self.reads[("variable", name)] += 1
        if name not in self.variables:
            raise VariableNotFound(name)
        return self.variables[name]


class ExplodingResolver:
    def block(self, type_slug, name):  # pragma: no cover - must not be called
        raise AssertionError("resolver must not be called")

    variable = block


def render(text: str, resolver: Any) -> tuple[dict, dict[str, str]]:
    rendered, env = render_profiles_text(textwrap.dedent(text), source_path=SOURCE, resolver=resolver)
    return yaml.safe_load(rendered), env


def dbt_render(value: Any, env: dict[str, str]) -> Any:
    """What dbt makes of a rendered profiles.yml value, with the secret env set."""
    set_invocation_context({**os.environ, **env})
    return ProfileRenderer({}).render_data({"v": value})["v"]


def write_profiles(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "profiles.yml").write_text(textwrap.dedent(text))
    return directory


@pytest.fixture(autouse=True)
def _reset_dbt_invocation_context():
    """Tests set dbt's invocation context with secrets in it; don't leak it to others."""
    yield
    set_invocation_context(os.environ)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


# ---------------------------------------------------------------------------------------
# pure rendering (fake resolver)
# ---------------------------------------------------------------------------------------


def test_has_prefect_placeholders_detects_only_prefect_expressions():
    assert has_prefect_placeholders('a: "{{ prefect.variables.x }}"')
    assert has_prefect_placeholders('a: "{{prefect.blocks.secret.x}}"')
    assert has_prefect_placeholders('a: "{{- prefect.variables.x -}}"')
    assert not has_prefect_placeholders("a: \"{{ env_var('PREFECT_API_URL') }}\"")
    assert not has_prefect_placeholders("a: \"{{ var('prefect') }}\"")
    assert not has_prefect_placeholders('a: "{{ prefect_thing }}"')
    assert not has_prefect_placeholders("a: prefect.variables.x")


def test_text_without_placeholders_is_returned_unchanged_without_lookups():
    text = "p:\n  target: dev  # a comment\n  outputs: {dev: {type: duckdb}}\n"
    assert render_profiles_text(text, source_path=SOURCE, resolver=ExplodingResolver()) == (
        text,
        {},
    )


def test_placeholders_in_yaml_comments_are_ignored():
    text = "# password: \"{{ prefect.blocks.secret.nope }}\"\np:\n  target: dev\n"
    assert render_profiles_text(text, source_path=SOURCE, resolver=ExplodingResolver()) == (
        text,
        {},
    )


def test_dbt_jinja_is_left_for_dbt_to_render():
    data, env = render(
        """
        p:
          target: "{{ env_var('DBT_TARGET', 'dev') }}"
          outputs:
            dev:
              type: duckdb
              path: "{{ env_var('HOME') }}/{{ prefect.variables.db }}.duckdb"
              threads: "{{ var('threads', 2) | as_number }}"
        """,
        FakeResolver(variables={"db": "warehouse"}),
    )
    assert env == {}
    assert data["p"]["target"] == "{{ env_var('DBT_TARGET', 'dev') }}"
    assert data["p"]["outputs"]["dev"]["path"] == "{{ env_var('HOME') }}/warehouse.duckdb"
    assert data["p"]["outputs"]["dev"]["threads"] == "{{ var('threads', 2) | as_number }}"
    assert dbt_render(data["p"]["outputs"]["dev"]["path"], env) == (
        f"{os.environ['HOME']}/warehouse.duckdb"
    )


def test_whole_value_variable_inserts_native_value_of_every_type():
    variables = {
        "s": "analytics",
        "numeric_string": "5432",
        "i": 8,
        "f": 2.5,
        "b": True,
        "d": {"schema": "raw", "retries": 3, "tags": ["a", "b"]},
        "l": ["one", 2, False],
    }
    data, env = render(
        "\n".join(f'{name}: "{{{{ prefect.variables.{name} }}}}"' for name in variables),
        FakeResolver(variables=variables),
    )
    assert data == variables
    assert env == {}
    # ...and dbt keeps the types (a string variable that looks like a number stays a string).
    assert {k: dbt_render(v, env) for k, v in data.items()} == variables


def test_part_of_string_inserts_variables_as_text():
    data, env = render(
        """
        a: "db_{{ prefect.variables.s }}_{{ prefect.variables.i }}"
        b: "flag={{ prefect.variables.b }} cfg={{ prefect.variables.d }}"
        c: "  {{ prefect.variables.s }}-{{prefect.variables.s}}  "
        """,
        FakeResolver(variables={"s": "x", "i": 7, "b": False, "d": {"k": [1, "v"]}}),
    )
    assert data == {
        "a": "db_x_7",
        "b": 'flag=false cfg={"k":[1,"v"]}',
        "c": "  x-x  ",
    }
    assert env == {}


def test_variable_paths_address_dict_and_list_values():
    data, _ = render(
        """
        a: "{{ prefect.variables.cfg.schemas[1] }}"
        b: "{{ prefect.variables.cfg['odd key'].n }}"
        c: "{{ prefect.variables.cfg.schemas[-1] }}"
        """,
        FakeResolver(variables={"cfg": {"schemas": ["s0", "s1", "s2"], "odd key": {"n": 4}}}),
    )
    assert data == {"a": "s1", "b": 4, "c": "s2"}


def test_variable_text_with_jinja_delimiters_stays_literal_through_dbt():
    tricky = "a{{b}} {% if %} it's \\ ü"
    data, env = render(
        """
        whole: "{{ prefect.variables.t }}"
        part: "x-{{ prefect.variables.t }}-{{ env_var('HOME') }}"
        """,
        FakeResolver(variables={"t": tricky}),
    )
    assert dbt_render(data["whole"], env) == tricky
    assert dbt_render(data["part"], env) == f"x-{tricky}-{os.environ['HOME']}"


def test_block_string_becomes_secret_env_var_reference():
    resolver = FakeResolver(blocks={("secret", "pw"): {"value": SECRET_PW}})
    data, env = render(
        """
        whole: "{{ prefect.blocks.secret.pw }}"
        explicit_value: "{{ prefect.blocks.secret.pw.value }}"
        part: "postgres://me:{{ prefect.blocks.secret.pw }}@host/db"
        """,
        resolver,
    )
    assert env == {"DBT_ENV_SECRET_PREFECT_1": SECRET_PW}
    assert data == {
        "whole": "{{ env_var('DBT_ENV_SECRET_PREFECT_1') }}",
        "explicit_value": "{{ env_var('DBT_ENV_SECRET_PREFECT_1') }}",
        "part": "postgres://me:{{ env_var('DBT_ENV_SECRET_PREFECT_1') }}@host/db",
    }
    assert dbt_render(data["whole"], env) == SECRET_PW
    assert dbt_render(data["part"], env) == f"postgres://me:{SECRET_PW}@host/db"


def test_block_dict_inserted_as_mapping_gets_one_env_var_per_string_leaf():
    keyfile = {
        "type": "service_account",
        "private_key_id": KEY_ID,
        "private_key": PRIVATE_KEY,
        "port": 443,
        "enabled": True,
        "ratio": 0.5,
        "missing": None,
        "scopes": ["s1", "s2"],
    }
    resolver = FakeResolver(blocks={("gcp-credentials", "bq"): {"service_account_info": keyfile}})
    rendered, env = render_profiles_text(
        'keyfile_json: "{{ prefect.blocks.gcp-credentials.bq.service_account_info }}"\n',
        source_path=SOURCE,
        resolver=resolver,
    )
    data = yaml.safe_load(rendered)["keyfile_json"]
    assert set(env.values()) == {"service_account", KEY_ID, PRIVATE_KEY, "s1", "s2"}
    for key in ("type", "private_key_id", "private_key"):
        assert data[key].startswith("{{ env_var('DBT_ENV_SECRET_PREFECT_")
    # Non-string scalars are inlined.
    assert (data["port"], data["enabled"], data["ratio"], data["missing"]) == (443, True, 0.5, None)
    for secret in (KEY_ID, PRIVATE_KEY, "service_account"):
        assert secret not in rendered
    assert dbt_render(data, env) == keyfile


def test_value_only_blocks_resolve_to_their_value_and_paths_address_into_it():
    resolver = FakeResolver(
        blocks={("json", "cfg"): {"value": {"value": "inner", "list": [10, "twenty"]}}}
    )
    data, env = render(
        """
        whole: "{{ prefect.blocks.json.cfg }}"
        explicit: "{{ prefect.blocks.json.cfg.value.list[1] }}"
        path: "{{ prefect.blocks.json.cfg.list[0] }}"
        field_wins: "{{ prefect.blocks.json.cfg.value }}"
        """,
        resolver,
    )
    assert dbt_render(data["whole"], env) == {"value": "inner", "list": [10, "twenty"]}
    assert dbt_render(data["explicit"], env) == "twenty"
    assert data["path"] == 10
    # An explicit `.value` addresses the block's field, not a `value` key inside it.
    assert dbt_render(data["field_wins"], env) == {"value": "inner", "list": [10, "twenty"]}


def test_several_block_values_in_one_string_become_a_single_secret():
    # dbt substitutes only one DBT_ENV_SECRET_* per value, so they are merged.
    resolver = FakeResolver(blocks={("creds", "c"): {"user": SF_USER, "password": SF_PASSWORD}})
    data, env = render(
        """
        url: "{{ env_var('HOME') }}|{{ prefect.blocks.creds.c.user }}:{{ prefect.blocks.creds.c.password }}@host"
        """,
        resolver,
    )
    assert env == {"DBT_ENV_SECRET_PREFECT_1": f"{SF_USER}:{SF_PASSWORD}"}
    assert dbt_render(data["url"], env) == f"{os.environ['HOME']}|{SF_USER}:{SF_PASSWORD}@host"


def test_each_block_and_variable_is_read_once_per_call_with_fake_resolver():
    resolver = FakeResolver(
        blocks={("creds", "c"): {"user": "u", "password": "p"}}, variables={"t": "dev"}
    )
    render(
        """
        a: "{{ prefect.blocks.creds.c.user }}"
        b: "{{ prefect.blocks.creds.c.password }}"
        c: "x{{ prefect.blocks.creds.c.user }}"
        d: "{{ prefect.variables.t }}"
        e: "{{ prefect.variables.t }}"
        """,
        resolver,
    )
    assert resolver.reads == Counter({("block", "creds", "c"): 1, ("variable", "t"): 1})
    # A new call reads again: the cache is per resolution, not global.
    render('a: "{{ prefect.variables.t }}"', resolver)
    assert resolver.reads[("variable", "t")] == 2


def test_variable_placeholder_in_a_mapping_key_is_resolved():
    data, _ = render(
        """
        p:
          target: "{{ prefect.variables.t }}"
          outputs:
            "{{ prefect.variables.t }}": {type: duckdb}
        """,
        FakeResolver(variables={"t": "ci"}),
    )
    assert data == {"p": {"target": "ci", "outputs": {"ci": {"type": "duckdb"}}}}


FIX_SYNTAX = (
    "Fix: write {{ prefect.blocks.<block-type-slug>.<block-document-name>[.<field>...] }} "
    "or {{ prefect.variables.<name> }}."
)


@pytest.mark.parametrize(
    ("value", "placeholder", "message"),
    [
        (
            "{{ prefect.blockz.x }}",
            "{{ prefect.blockz.x }}",
            "malformed placeholder: 'prefect.blockz' is neither 'prefect.blocks' nor "
            "'prefect.variables' (did you mean 'blocks'?). " + FIX_SYNTAX,
        ),
        (
            "{{ prefect.blocks.secret }}",
            "{{ prefect.blocks.secret }}",
            "malformed placeholder: it names the block type 'secret' but no block document. "
            "Fix: write {{ prefect.blocks.secret.<block-document-name> }}.",
        ),
        (
            "{{ prefect.blocks }}",
            "{{ prefect.blocks }}",
            "malformed placeholder: it names no block type. Fix: write "
            "{{ prefect.blocks.<block-type-slug>.<block-document-name>[.<field>...] }}.",
        ),
        (
            "{{ prefect.variables }}",
            "{{ prefect.variables }}",
            "malformed placeholder: it names no variable. Fix: write "
            "{{ prefect.variables.<name> }}.",
        ),
        (
            "{{ prefect }}",
            "{{ prefect }}",
            "malformed placeholder: 'prefect' must be followed by '.blocks.' or "
            "'.variables.'. " + FIX_SYNTAX,
        ),
        (
            "{{ prefect.variables.target | upper }}",
            "{{ prefect.variables.target | upper }}",
            "malformed placeholder: unexpected '| upper'; placeholders take only a dotted "
            "path with optional [index] parts (no filters, calls or expressions). " + FIX_SYNTAX,
        ),
        (
            "{{ prefect.blocks.Secret.pw }}",
            "{{ prefect.blocks.Secret.pw }}",
            "malformed placeholder: 'Secret' is not a valid block type slug (lowercase "
            "letters, numbers and dashes only). Fix: use the exact block type slug, e.g. "
            "{{ prefect.blocks.secret.my-secret }}.",
        ),
        (
            "x {{ prefect.variables.target",
            "{{ prefect.variables.target",
            "malformed placeholder: it has no closing '}}'. Fix: close it: "
            "{{ prefect.blocks.<block-type-slug>.<block-document-name>[.<field>...] }} or "
            "{{ prefect.variables.<name> }}.",
        ),
    ],
)
def test_malformed_placeholder_names_placeholder_path_and_fix(value, placeholder, message):
    text = yaml.safe_dump({"p": {"outputs": {"prod": {"user": value}}}})
    with pytest.raises(ProfileTemplateError) as info:
        render_profiles_text(text, source_path=SOURCE, resolver=ExplodingResolver())
    assert str(info.value) == (
        f"{placeholder} in /project/profiles.yml (at p.outputs.prod.user): {message}"
    )


def test_block_placeholder_in_a_mapping_key_is_rejected():
    with pytest.raises(ProfileTemplateError) as info:
        render('"{{ prefect.blocks.secret.pw }}": 1\n', FakeResolver())
    assert str(info.value) == (
        "{{ prefect.blocks.secret.pw }} in /project/profiles.yml: block placeholders cannot "
        "be used in mapping keys (keys are written to disk as-is, and block values are "
        "secret). Fix: move the placeholder to a value, or use a Prefect variable."
    )


def test_null_inserted_into_text_is_an_error_not_an_empty_string():
    with pytest.raises(ProfileTemplateError) as info:
        render('a: "x-{{ prefect.variables.n }}"\n', FakeResolver(variables={"n": None}))
    assert str(info.value) == (
        "{{ prefect.variables.n }} in /project/profiles.yml (at a): it resolves to null, "
        "which cannot be inserted into text. Fix: give it a value in Prefect, or make the "
        "placeholder the whole YAML value."
    )


def test_unknown_field_messages_never_contain_secret_values():
    resolver = FakeResolver(
        blocks={("creds", "c"): {"password": SF_PASSWORD, "nested": {"k": [SECRET_PW]}}}
    )
    cases = {
        "{{ prefect.blocks.creds.c.password.inner }}": (
            "block 'creds/c' field 'password' is a string and has no field 'inner'. "
            "Fix: end the placeholder at 'password'."
        ),
        "{{ prefect.blocks.creds.c.nested.k[3] }}": (
            "block 'creds/c' field 'nested.k' is a list of 1 items, so [3] is out of range. "
            "Fix: use an index from 0 to 0."
        ),
        "{{ prefect.blocks.creds.c.nested.k.name }}": (
            "block 'creds/c' field 'nested.k' is a list and has no field 'name'. "
            "Fix: address its items by position, e.g. [0]."
        ),
        "{{ prefect.blocks.creds.c.nested.x }}": (
            "block 'creds/c' field 'nested' has no field 'x'. Available fields: k. "
            "Fix: use one of the available fields in the placeholder."
        ),
    }
    for placeholder, message in cases.items():
        with pytest.raises(ProfileTemplateError) as info:
            render(f'a: "{placeholder}"\n', resolver)
        assert str(info.value) == f"{placeholder} in /project/profiles.yml (at a): {message}"
        assert SF_PASSWORD not in repr(info.value) and SECRET_PW not in repr(info.value)


# ---------------------------------------------------------------------------------------
# load_profiles_yaml
# ---------------------------------------------------------------------------------------


def test_load_profiles_yaml_missing_file_names_dir_and_fix(tmp_path):
    with pytest.raises(DbtProfilesError) as info:
        load_profiles_yaml(tmp_path)
    assert str(info.value) == (
        f"profiles.yml not found in {tmp_path} "
        "(set DBT_PROFILES_DIR or PrefectDbtSettings(profiles_dir=...))"
    )


def test_load_profiles_yaml_invalid_yaml_names_line_without_quoting_the_file(tmp_path):
    write_profiles(tmp_path, "p:\n  outputs:\n    dev: {password: hunter2-secret\n")
    with pytest.raises(DbtProfilesError) as info:
        load_profiles_yaml(tmp_path)
    assert str(info.value) == (
        f"profiles.yml at {tmp_path / 'profiles.yml'} is not valid YAML: line 4: "
        "expected ',' or '}', but got '<stream end>' (fix the YAML syntax)"
    )
    assert "hunter2" not in str(info.value)


def test_unquoted_placeholder_yaml_error_says_to_quote_it(tmp_path):
    write_profiles(tmp_path, "p:\n  target: {{ prefect.variables.target }}\n")
    with pytest.raises(DbtProfilesError) as info:
        load_profiles_yaml(tmp_path)
    assert str(info.value) == (
        f"profiles.yml at {tmp_path / 'profiles.yml'} is not valid YAML: line 2: found "
        "unhashable key (quote values that contain {{ ... }}, e.g. "
        'target: "{{ prefect.variables.target }}")'
    )


def test_load_profiles_yaml_rejects_empty_and_non_mapping_files(tmp_path):
    write_profiles(tmp_path, "# nothing\n")
    with pytest.raises(DbtProfilesError, match=r"profiles.yml at .* is empty; define at least one"):
        load_profiles_yaml(tmp_path)
    write_profiles(tmp_path, "- a\n- b\n")
    with pytest.raises(DbtProfilesError) as info:
        load_profiles_yaml(tmp_path)
    assert str(info.value) == (
        f"profiles.yml at {tmp_path / 'profiles.yml'} must be a mapping of profile names "
        "to profiles, not a list"
    )


def test_load_profiles_yaml_returns_the_raw_mapping(tmp_path):
    write_profiles(tmp_path, 'p:\n  target: "{{ prefect.variables.target }}"\n')
    assert load_profiles_yaml(str(tmp_path)) == {"p": {"target": "{{ prefect.variables.target }}"}}


def test_resolved_profiles_missing_file_raises_dbt_profiles_error(tmp_path):
    with pytest.raises(DbtProfilesError, match="profiles.yml not found in"):
        with resolved_profiles(tmp_path / "nowhere"):
            pass


def test_importing_the_module_does_not_import_prefect():
    code = (
        "import sys; import dbt_prefect; before = set(sys.modules); "
        "import dbt_prefect.profiles.resolve; "
        "new = [m for m in set(sys.modules) - before if m == 'prefect' or m.startswith('prefect.')]; "
        "print(new)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


# ---------------------------------------------------------------------------------------
# against a real Prefect server
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_objects(prefect_server):
    """Real blocks (Secret, JSON-like, custom nested/SecretStr) and variables."""
    from prefect.blocks.core import Block
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    class TpSnowflakeCredentials(Block):
        _block_type_slug = "snowflake-credentials"
        account: str
        user: str
        password: SecretStr

    class TpSnowflakeConnector(Block):
        _block_type_slug = "snowflake-connector"
        database: str
        schema_: str = Field(alias="schema")
        warehouse: str
        credentials: TpSnowflakeCredentials

    class TpJson(Block):
        """Like Prefect 2's JSON block: one `value` field."""

        _block_type_slug = "json"
        value: Any

    class TpServiceAccount(Block):
        """A custom block with a nested dict, a list, a SecretStr and non-string scalars."""

        _block_type_slug = "tp-service-account"
        project: str
        keyfile: dict[str, Any]
        token: SecretStr
        port: int
        enabled: bool
        scopes: list[str]

    credentials = TpSnowflakeCredentials(account=SF_ACCOUNT, user=SF_USER, password=SF_PASSWORD)
    credentials.save("warehouse-access", overwrite=True)
    TpSnowflakeConnector(
        database="ANALYTICS", schema="MARTS", warehouse="TRANSFORMING", credentials=credentials
    ).save("prod-connector", overwrite=True)
    Secret(value=SECRET_PW).save("tp-db-password", overwrite=True)
    Secret(value={"user": "dict-secret-user", "key": KEY_ID}).save("tp-dict-secret", overwrite=True)
    TpJson(value={"threads": 6, "schemas": ["alpha", "beta"], "nested": {"deep": "json-leaf"}}).save(
        "tp-config", overwrite=True
    )
    TpServiceAccount(
        project="my-gcp-project",
        keyfile={
            "type": "service_account",
            "private_key_id": KEY_ID,
            "private_key": PRIVATE_KEY,
            "client": {"email": "sa@example.iam", "ids": [11, 22]},
        },
        token=TOKEN,
        port=8443,
        enabled=True,
        scopes=["bq.read", "bq.write"],
    ).save("tp-sa", overwrite=True)

    Variable.set("tp_string", "main_schema", overwrite=True)
    Variable.set("tp_int", 4, overwrite=True)
    Variable.set("tp_bool", False, overwrite=True)
    Variable.set("tp_dict", {"retries": 2, "schema": "dict_schema"}, overwrite=True)
    Variable.set("tp_list", ["x", "y", 3], overwrite=True)
    return prefect_server


class CountingClient:
    """Wraps the real sync client and counts its read_* calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not name.startswith("read_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[(name, kwargs.get("block_type_slug"), kwargs.get("name"))] += 1
            return attr(*args, **kwargs)

        return counted


@pytest.fixture()
def sync_client(prefect_objects):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


OFFICIAL_EXAMPLE = """\
example:
  outputs:
    dev:
      type: duckdb
      path: dev.duckdb
      threads: 1

    prod:
      type: snowflake
      account: "{{ prefect.blocks.snowflake-credentials.warehouse-access.account }}"
      user: "{{ prefect.blocks.snowflake-credentials.warehouse-access.user }}"
      password: "{{ prefect.blocks.snowflake-credentials.warehouse-access.password }}"
      database: "{{ prefect.blocks.snowflake-connector.prod-connector.database }}"
      schema: "{{ prefect.blocks.snowflake-connector.prod-connector.schema }}"
      warehouse: "{{ prefect.blocks.snowflake-connector.prod-connector.warehouse }}"
      threads: 4

  target: "{{ prefect.variables.target }}"
"""


def test_official_snowflake_example_renders_through_dbt_profile_renderer(
    prefect_objects, tmp_path
):
    from prefect.variables import Variable

    Variable.set("target", "prod", overwrite=True)
    write_profiles(tmp_path, OFFICIAL_EXAMPLE)
    environ_before = dict(os.environ)
    with resolved_profiles(tmp_path) as resolved:
        assert isinstance(resolved, ResolvedProfiles) and resolved.templated
        # dbt reads the rendered file with its own loader, then renders the profile.
        raw = read_profile(str(resolved.profiles_dir))
        set_invocation_context(os.environ)
        target, output = Profile.render_profile(raw["example"], "example", None, ProfileRenderer({}))
        assert resolved.secret_values == {
            SF_ACCOUNT, SF_USER, SF_PASSWORD, "ANALYTICS", "MARTS", "TRANSFORMING"
        }
    assert target == "prod"
    assert output == {
        "type": "snowflake",
        "account": SF_ACCOUNT,
        "user": SF_USER,
        "password": SF_PASSWORD,
        "database": "ANALYTICS",
        "schema": "MARTS",
        "warehouse": "TRANSFORMING",
        "threads": 4,
    }
    assert dict(os.environ) == environ_before


def test_official_example_dev_target_builds_real_duckdb_credentials(prefect_objects, tmp_path):
    from prefect.variables import Variable

    Variable.set("target", "dev", overwrite=True)
    write_profiles(tmp_path, OFFICIAL_EXAMPLE)
    with resolved_profiles(tmp_path) as resolved:
        raw = read_profile(str(resolved.profiles_dir))
        set_invocation_context(os.environ)
        target, output = Profile.render_profile(raw["example"], "example", None, ProfileRenderer({}))
        # dbt loads the duckdb plugin and validates the output into its credentials class.
        credentials = Profile._credentials_from_profile(output, "example", target)
    assert target == "dev"
    assert credentials.type == "duckdb"
    assert credentials.path == "dev.duckdb"
    assert output["threads"] == 1


def test_every_placeholder_form_with_real_blocks_and_variables(sync_client, tmp_path):
    write_profiles(
        tmp_path,
        """
        p:
          target: "{{ prefect.variables.tp_string }}"
          outputs:
            main_schema:
              type: duckdb
              # whole values of every variable type
              schema: "{{ prefect.variables.tp_string }}"
              threads: "{{ prefect.variables.tp_int }}"
              flag: "{{ prefect.variables.tp_bool }}"
              cfg: "{{ prefect.variables.tp_dict }}"
              items: "{{ prefect.variables.tp_list }}"
              # part of a longer string
              path: "/data/{{ prefect.variables.tp_string }}_{{ prefect.variables.tp_int }}.duckdb"
              conn: "user:{{ prefect.blocks.secret.tp-db-password }}@host"
              # Secret blocks: no path, explicit .value, dict secret by path
              password: "{{ prefect.blocks.secret.tp-db-password }}"
              password2: "{{ prefect.blocks.secret.tp-db-password.value }}"
              dict_secret_key: "{{ prefect.blocks.secret.tp-dict-secret.key }}"
              # JSON-style block: nested path, list index, non-string leaf
              json_threads: "{{ prefect.blocks.json.tp-config.threads }}"
              json_schema: "{{ prefect.blocks.json.tp-config.schemas[1] }}"
              json_deep: "{{ prefect.blocks.json.tp-config.value.nested.deep }}"
              # custom block: nested dict, SecretStr, list index, ints/bools, whole dict
              keyfile_json: "{{ prefect.blocks.tp-service-account.tp-sa.keyfile }}"
              client_id: "{{ prefect.blocks.tp-service-account.tp-sa.keyfile.client.ids[1] }}"
              token: "{{ prefect.blocks.tp-service-account.tp-sa.token }}"
              port: "{{ prefect.blocks.tp-service-account.tp-sa.port }}"
              enabled: "{{ prefect.blocks.tp-service-account.tp-sa.enabled }}"
              scope: "{{ prefect.blocks.tp-service-account.tp-sa.scopes[0] }}"
              whole_block: "{{ prefect.blocks.tp-service-account.tp-sa }}"
              dbt_own: "{{ env_var('HOME') }}"
        """,
    )
    with resolved_profiles(tmp_path, client=sync_client) as resolved:
        rendered_text = (resolved.profiles_dir / "profiles.yml").read_text()
        raw = read_profile(str(resolved.profiles_dir))
        set_invocation_context(os.environ)
        target, out = Profile.render_profile(raw["p"], "p", None, ProfileRenderer({}))

    keyfile = {
        "type": "service_account",
        "private_key_id": KEY_ID,
        "private_key": PRIVATE_KEY,
        "client": {"email": "sa@example.iam", "ids": [11, 22]},
    }
    assert target == "main_schema"
    assert out == {
        "type": "duckdb",
        "schema": "main_schema",
        "threads": 4,
        "flag": False,
        "cfg": {"retries": 2, "schema": "dict_schema"},
        "items": ["x", "y", 3],
        "path": "/data/main_schema_4.duckdb",
        "conn": f"user:{SECRET_PW}@host",
        "password": SECRET_PW,
        "password2": SECRET_PW,
        "dict_secret_key": KEY_ID,
        "json_threads": 6,
        "json_schema": "beta",
        "json_deep": "json-leaf",
        "keyfile_json": keyfile,
        "client_id": 22,
        "token": TOKEN,
        "port": 8443,
        "enabled": True,
        "scope": "bq.read",
        "whole_block": {
            "project": "my-gcp-project",
            "keyfile": keyfile,
            "token": TOKEN,
            "port": 8443,
            "enabled": True,
            "scopes": ["bq.read", "bq.write"],
        },
        "dbt_own": os.environ["HOME"],
    }
    # Variables are inlined; block strings are not.
    assert "main_schema" in rendered_text and "dict_schema" in rendered_text
    for secret in ALL_SECRETS + ["json-leaf", "beta", "my-gcp-project", "dict-secret-user"]:
        assert secret not in rendered_text
    for line in PRIVATE_KEY.splitlines():
        assert line not in rendered_text


def test_rendered_file_is_private_contains_no_secret_and_is_removed(prefect_objects, tmp_path):
    write_profiles(tmp_path, OFFICIAL_EXAMPLE)
    environ_before = dict(os.environ)
    with resolved_profiles(tmp_path) as resolved:
        directory = resolved.profiles_dir
        rendered = directory / "profiles.yml"
        assert directory != tmp_path
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
        content = rendered.read_text()
        for secret in (SF_ACCOUNT, SF_USER, SF_PASSWORD, "ANALYTICS", "TRANSFORMING"):
            assert secret not in content
        assert "{{ env_var(''DBT_ENV_SECRET_PREFECT_" in content
        # The secret env is set only inside the block.
        assert all(os.environ[name] == value for name, value in resolved.secret_env.items())
        assert set(resolved.secret_env.values()) == resolved.secret_values
        assert all(name.startswith("DBT_ENV_SECRET_PREFECT_") for name in resolved.secret_env)
    assert not directory.exists()
    assert dict(os.environ) == environ_before


def test_temp_dir_removed_and_environ_restored_when_body_raises(prefect_objects, tmp_path):
    write_profiles(tmp_path, 'p:\n  password: "{{ prefect.blocks.secret.tp-db-password }}"\n')
    environ_before = dict(os.environ)
    with pytest.raises(RuntimeError, match="dbt blew up"):
        with resolved_profiles(tmp_path) as resolved:
            directory = resolved.profiles_dir
            name = next(iter(resolved.secret_env))
            assert os.environ[name] == SECRET_PW
            raise RuntimeError("dbt blew up")
    assert not directory.exists()
    assert dict(os.environ) == environ_before


def test_nested_resolutions_use_distinct_env_vars_and_restore_exactly(prefect_objects, tmp_path):
    first = write_profiles(tmp_path / "a", 'p:\n  pw: "{{ prefect.blocks.secret.tp-db-password }}"\n')
    second = write_profiles(tmp_path / "b", 'p:\n  t: "{{ prefect.blocks.tp-service-account.tp-sa.token }}"\n')
    environ_before = dict(os.environ)
    with resolved_profiles(first) as outer:
        with resolved_profiles(second) as inner:
            assert not set(outer.secret_env) & set(inner.secret_env)
            assert os.environ[next(iter(outer.secret_env))] == SECRET_PW
            assert os.environ[next(iter(inner.secret_env))] == TOKEN
        assert os.environ[next(iter(outer.secret_env))] == SECRET_PW
        assert next(iter(inner.secret_env)) not in os.environ
    assert dict(os.environ) == environ_before


def test_each_block_and_variable_is_read_once_even_when_referenced_three_times(
    sync_client, tmp_path
):
    write_profiles(
        tmp_path,
        """
        p:
          target: "{{ prefect.variables.tp_string }}"
          outputs:
            main_schema:
              a: "{{ prefect.blocks.snowflake-credentials.warehouse-access.account }}"
              b: "{{ prefect.blocks.snowflake-credentials.warehouse-access.user }}"
              c: "x-{{ prefect.blocks.snowflake-credentials.warehouse-access.password }}"
              d: "{{ prefect.variables.tp_string }}/{{ prefect.variables.tp_string }}"
        """,
    )
    counting = CountingClient(sync_client)
    with resolved_profiles(tmp_path, client=counting):
        pass
    assert counting.calls == Counter(
        {
            ("read_block_document_by_name", "snowflake-credentials", "warehouse-access"): 1,
            ("read_variable_by_name", None, "tp_string"): 1,
        }
    )


def test_unknown_block_type_names_placeholder_and_fix(prefect_objects, tmp_path):
    write_profiles(tmp_path, 'p:\n  pw: "{{ prefect.blocks.sekret.tp-db-password }}"\n')
    with pytest.raises(ProfileTemplateError) as info:
        with resolved_profiles(tmp_path):
            pass
    assert str(info.value) == (
        f"{{{{ prefect.blocks.sekret.tp-db-password }}}} in {tmp_path / 'profiles.yml'} "
        f"(at p.pw): no block type with slug 'sekret' is registered on the Prefect API at "
        f"{prefect_objects}. Fix: use the block type's slug, lowercase with dashes (e.g. "
        "'secret' or 'snowflake-credentials'; `prefect block type ls` lists them), or "
        "register the block type (`prefect block register -m <module>`)."
    )


def test_unknown_block_name_lists_existing_blocks_of_that_type(prefect_objects, tmp_path):
    write_profiles(tmp_path, 'p:\n  pw: "{{ prefect.blocks.secret.tp-db-pasword }}"\n')
    with pytest.raises(ProfileTemplateError) as info:
        with resolved_profiles(tmp_path):
            pass
    message = str(info.value)
    assert message.startswith(
        f"{{{{ prefect.blocks.secret.tp-db-pasword }}}} in {tmp_path / 'profiles.yml'} "
        f"(at p.pw): no 'secret' block named 'tp-db-pasword' exists on the Prefect API at "
        f"{prefect_objects} (existing 'secret' blocks: "
    )
    assert "tp-db-password" in message and "tp-dict-secret" in message
    assert message.endswith(
        "). Fix: create it (in the Prefect UI, or `<BlockClass>(...).save(\"tp-db-pasword\")` "
        "in Python) or correct the block name in profiles.yml."
    )
    assert SECRET_PW not in message


def test_unknown_field_lists_available_fields_but_never_values(prefect_objects, tmp_path):
    write_profiles(
        tmp_path,
        'p:\n  x: "{{ prefect.blocks.snowflake-credentials.warehouse-access.acount }}"\n',
    )
    with pytest.raises(ProfileTemplateError) as info:
        with resolved_profiles(tmp_path):
            pass
    assert str(info.value) == (
        "{{ prefect.blocks.snowflake-credentials.warehouse-access.acount }} in "
        f"{tmp_path / 'profiles.yml'} (at p.x): block 'snowflake-credentials/warehouse-access' "
        "has no field 'acount'. Available fields: account, user, password. "
        "Fix: use one of the available fields in the placeholder."
    )
    for secret in (SF_ACCOUNT, SF_USER, SF_PASSWORD):
        assert secret not in repr(info.value)


def test_unknown_variable_names_placeholder_and_fix(prefect_objects, tmp_path):
    write_profiles(tmp_path, 'p:\n  target: "{{ prefect.variables.tp_nope }}"\n')
    with pytest.raises(ProfileTemplateError) as info:
        with resolved_profiles(tmp_path):
            pass
    assert str(info.value) == (
        f"{{{{ prefect.variables.tp_nope }}}} in {tmp_path / 'profiles.yml'} (at p.target): "
        f"no Prefect variable named 'tp_nope' exists on the Prefect API at {prefect_objects}. "
        "Fix: create it (`prefect variable set tp_nope <value>`, or "
        'Variable.set("tp_nope", ...) in Python) or correct the name in profiles.yml.'
    )


def test_unreachable_api_error_names_prefect_api_url_and_server(prefect_objects, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = closed_port_url()
    write_profiles(tmp_path, 'p:\n  target: "{{ prefect.variables.target }}"\n')
    environ_before = dict(os.environ)
    with temporary_settings({PREFECT_API_URL: url}):
        with pytest.raises(ProfileTemplateError) as info:
            with resolved_profiles(tmp_path):
                pytest.fail("the body must not run")  # pragma: no cover
    message = str(info.value)
    assert message.startswith(
        f"{{{{ prefect.variables.target }}}} in {tmp_path / 'profiles.yml'} (at p.target): "
        f"cannot reach the Prefect API at {url} (ConnectError: "
    )
    assert message.endswith(
        "); profiles.yml has Prefect placeholders, so a Prefect server must be reachable to "
        "resolve them. Fix: start the Prefect server (`prefect server start`) or set "
        "PREFECT_API_URL to a reachable Prefect API (with PREFECT_API_KEY for Prefect Cloud)."
    )
    assert dict(os.environ) == environ_before


def test_profiles_without_placeholders_are_used_as_is_without_contacting_prefect(
    prefect_objects, tmp_path, monkeypatch
):
    import prefect.client.orchestration
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def tripwire(*args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("Prefect must not be contacted")

    monkeypatch.setattr(prefect.client.orchestration, "get_client", tripwire)
    write_profiles(
        tmp_path,
        """
        # password: "{{ prefect.blocks.secret.in-a-comment-only }}"
        p:
          target: dev
          outputs:
            dev: {type: duckdb, path: "{{ env_var('HOME') }}/x.duckdb"}
        """,
    )
    environ_before = dict(os.environ)
    with temporary_settings({PREFECT_API_URL: closed_port_url()}):
        with resolved_profiles(tmp_path, client=ExplodingResolver()) as resolved:
            assert resolved == ResolvedProfiles(tmp_path)
            assert resolved.secret_env == {} and resolved.secret_values == frozenset()
        # Broken YAML is reported before dbt starts, placeholders or not.
        write_profiles(tmp_path, "this is: [not: valid yaml\n")
        with pytest.raises(DbtProfilesError, match=r"profiles.yml at .* is not valid YAML: line 2: "):
            with resolved_profiles(str(tmp_path)):
                pass
    assert dict(os.environ) == environ_before
