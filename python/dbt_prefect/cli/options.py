"""Options that several dbt-prefect commands take, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ProjectDirOption = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        envvar="DBT_PROJECT_DIR",
        metavar="PATH",
        show_default=False,
        help="The dbt project. Default: the working directory.",
    ),
]
TimezoneOption = Annotated[
    str, typer.Option("--timezone", metavar="TZ", help="The cron schedule's time zone (IANA name).")
]
