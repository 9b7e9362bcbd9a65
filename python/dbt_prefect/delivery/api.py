"""The Prefect API as dbt-prefect talks to it while delivering and reading back a run:
plain HTTP with short timeouts and no hidden retries, so every wait has a bound we chose.

Prefect's own client retries a failing request for up to a minute or more; against a
server that went away, that is what turned a finished dbt run into a two-minute hang.
Here a request fails fast, and the caller decides whether to try again.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from prefect.settings import get_current_settings

# Connecting to a live server takes milliseconds; a refused or dropped connection must
# not hold a thread for long. A busy server may take seconds to answer a large batch.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 15.0


class ApiUnavailable(Exception):
    """The request did not reach the API or the API could not take it (connection, timeout, 5xx, 429)."""


class ApiRejected(Exception):
    """The API answered that the request itself is wrong (4xx): sending it again will not help."""


class PrefectApi:
    """A thin HTTP client for the Prefect API named by the current settings."""

    def __init__(self) -> None:
        settings = get_current_settings().api
        if not settings.url:
            raise ValueError("no Prefect API URL is configured")
        headers = {"Content-Type": "application/json"}
        if settings.key is not None:
            headers["Authorization"] = f"Bearer {settings.key.get_secret_value()}"
        elif settings.auth_string is not None:
            import base64

            token = base64.b64encode(settings.auth_string.get_secret_value().encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        verify: Any = True
        if settings.url.startswith("http://") or settings.tls_insecure_skip_verify:
            # Plain HTTP uses no certificates: loading the CA bundle would cost ~50 ms per client.
            verify = False
        elif settings.ssl_cert_file:
            verify = ssl.create_default_context(cafile=settings.ssl_cert_file)
        self.url = settings.url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    def post(self, path: str, content: bytes) -> httpx.Response:
        try:
            response = self._client.post(path, content=content)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ApiUnavailable(f"HTTP {response.status_code} from {path}")
        if response.status_code >= 400:
            raise ApiRejected(f"HTTP {response.status_code} from {path}: {response.text[:300]}")
        return response

    def healthy(self) -> bool:
        try:
            return self._client.get("/health", timeout=CONNECT_TIMEOUT).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._client.close()


def api_answers() -> bool:
    """Whether the configured Prefect API answers its health check now."""
    try:
        api = PrefectApi()
    except Exception:
        return False
    try:
        return api.healthy()
    finally:
        api.close()
