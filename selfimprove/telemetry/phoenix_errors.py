"""The errors a Phoenix request ends in, worded for the user: no answer within the bounded wait, unreachable,
refused (401/403: the key), or another status with the server's own detail."""

from __future__ import annotations

from typing import Any

from selfimprove.core.errors import SelfimproveError


def response_detail(response: Any) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text[:200]


def failure_text(exc: Exception) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return "no answer"
    return f"{type(exc).__name__}"


def transport_error(exc: Exception, endpoint: str, waited: float, attempts: int,
                     give_up_after: float) -> SelfimproveError:
    import httpx

    tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return SelfimproveError(f"Phoenix at {endpoint} did not answer: gave up after {waited:.0f} s ({tries}); "
                                "nothing was written",
                                hint="check that the server is up and not overloaded; a slow but healthy server "
                                     f"needs a longer wait (pull --give-up-after, now {give_up_after:g} s; "
                                     "telemetry.phoenix.timeout_s per request) or a smaller "
                                     "telemetry.phoenix.page_size")
    return SelfimproveError(f"cannot reach Phoenix at {endpoint} after {tries} ({waited:.0f} s): "
                            f"{type(exc).__name__}: {exc}", hint="is the server running? check the endpoint")


def status_error(exc: Any, endpoint: str, api_key_env: str | None) -> SelfimproveError:
    status = exc.response.status_code
    if status in (401, 403):
        where = f"${api_key_env}" if api_key_env else "an API key (phoenix.api_key_env)"
        return SelfimproveError(f"Phoenix at {endpoint} refused the request ({status})",
                                hint=f"check {where}")
    return SelfimproveError(f"Phoenix at {endpoint} answered {status} to {exc.request.method} "
                            f"{exc.request.url.path}: {response_detail(exc.response)}")
