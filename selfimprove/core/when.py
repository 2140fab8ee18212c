"""Reading a point in time from the command line. Pure: the caller passes `now`.

Accepted: an ISO date (`2024-05-01`), an ISO datetime with or without an offset (`2024-05-01T12:00`,
`2024-05-01 12:00:00Z`, `...+02:00`), `now`, or an age such as `90m`, `36h`, `7d`, `2w` (that long before now).
A value without an offset is read as UTC and flagged, so the caller can say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from selfimprove.core.errors import UsageError

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class When:
    at: datetime  # timezone-aware UTC
    naive: bool  # the input had no offset and was read as UTC


def parse_when(value: str | datetime, now: datetime, what: str = "time") -> When:
    """`value` as a UTC datetime; raises UsageError naming `what` when it cannot be read."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return When(value.replace(tzinfo=UTC), True)
        return When(value.astimezone(UTC), False)
    text = str(value).strip()
    if text.lower() == "now":
        return When(now.astimezone(UTC), False)
    age = _AGE.match(text.lower())
    if age:
        delta = timedelta(**{_UNITS[age.group(2)]: float(age.group(1))})
        return When((now - delta).astimezone(UTC), False)
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        raise UsageError(f"cannot read {what} {text!r}",
                         hint="use an ISO date or datetime (2024-05-01, 2024-05-01T12:00Z) or an age (7d, 12h)"
                         ) from None
    return parse_when(parsed, now, what)


def iso(at: datetime | None) -> str | None:
    """Microsecond ISO-8601 in UTC with a `Z`-free `+00:00` offset; None stays None."""
    return None if at is None else at.astimezone(UTC).isoformat(timespec="microseconds")
