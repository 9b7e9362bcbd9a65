"""PrefectDbtSettings: where the dbt project is and how loud dbt is, from DBT_* variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect.settings import get_current_settings
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dbt_prefect.model.levels import to_dbt_level


def _default_profiles_dir() -> Path:
    # dbt's own rule: profiles.yml in the working directory, else ~/.dbt.
    cwd = Path.cwd()
    if (cwd / "profiles.yml").exists():
        return cwd
    return Path.home() / ".dbt"


def _default_log_level() -> str:
    # dbt's level follows Prefect's unless set; Prefect allows WARNING/CRITICAL, dbt does not.
    return to_dbt_level(get_current_settings().logging.level)


class PrefectDbtSettings(BaseSettings):
    """dbt settings that change what PrefectDbtRunner does, read from ``DBT_*`` variables.

    Precedence: flags and kwargs given to ``invoke`` win over this object, which wins over
    the environment, which wins over dbt's defaults.
    """

    model_config = SettingsConfigDict(env_prefix="DBT_", extra="ignore", env_ignore_empty=True)

    project_dir: Path = Field(default_factory=Path.cwd)
    profiles_dir: Path = Field(default_factory=_default_profiles_dir)
    # The official default; handed to dbt only when set, so dbt_project.yml's target-path stands.
    target_path: Path = Path("target")
    log_level: str = Field(default_factory=_default_log_level)

    @property
    def given_target_path(self) -> Path | None:
        """target_path when it was set (argument or DBT_TARGET_PATH), else None: dbt decides."""
        return self.target_path if "target_path" in self.model_fields_set else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _normalise_log_level(cls, value: Any) -> str:
        return to_dbt_level(value)

    @field_validator("project_dir", "profiles_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(os.path.expanduser(value))
