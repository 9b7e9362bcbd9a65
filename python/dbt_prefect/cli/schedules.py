"""The schedules ``dbt-prefect init`` and ``dbt-prefect serve`` accept, checked before
anything is written or served."""

from __future__ import annotations

from dbt_prefect.errors import DbtPrefectError

DEFAULT_CRON = "0 6 * * *"


class InvalidSchedule(DbtPrefectError):
    """A cron expression or time zone Prefect does not accept."""


def check_cron(cron: str, timezone: str = "UTC") -> None:
    """InvalidSchedule unless Prefect accepts the cron expression in the time zone."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        if "timezone" in reason:
            raise InvalidSchedule(f"--timezone {timezone!r}: {reason}") from None
        raise InvalidSchedule(
            f"--cron {cron!r} is not a cron expression Prefect accepts ({reason}). Give five fields, "
            'minute hour day-of-month month day-of-week: "0 6 * * *" is 06:00 every day, '
            '"*/15 * * * *" every 15 minutes (or @hourly, @daily, @weekly).'
        ) from None
