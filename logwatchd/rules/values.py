"""How a condition sees a field value, and the shape of a compiled test.

Shared by the predicate compiler, compiled rules and the scan's selection. Values are
hostile: these conversions never raise, they answer None.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

Test = Callable[[dict[str, Any], dict[str, Any] | None, int], bool]  # (fields, ext, hits)
Getter = Callable[[dict[str, Any], dict[str, Any] | None], Any]

MISSING: Any = object()
IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


def fold(text: str) -> str:
    """Case folding for ``icase``: casefold works character by character, so a casefolded
    substring is a substring of the casefolded whole (``str.lower`` is not: final sigma)."""
    return text.casefold()


def as_text(value: Any) -> str | None:
    """The string a text operator sees: a str as is, an int by its digits, else None.

    Only these keep the scan sound: the digits of an int parsed from the line are part
    of the line. The text of an IP object or a float may be spelled differently there
    (``2001:DB8::1`` is ``2001:db8::1``), so text operators do not see them; ``equals`` and
    ``in`` compare IPs as addresses, and ``cidr``/``in_list`` are the tools for IPs.
    """
    if value.__class__ is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # an int past sys.get_int_max_str_digits()
            return None
    return None


def as_key(value: Any) -> str | None:
    """A field value as a group_by key or list member: its text, IPs included; None if absent."""
    if value is None or value is MISSING or isinstance(value, bool):
        return None
    text = as_text(value)
    if text is not None:
        return text
    try:
        return str(value)
    except ValueError:  # holds an int too long to print
        return None


def as_number(value: Any) -> float | None:
    """Numbers as they are; numeric strings converted; NaN, bools and the rest: None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value)
        except ValueError:
            return None
        return None if math.isnan(number) else number
    return None


def as_ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(value, IP_TYPES):
        return value
    if isinstance(value, str) and 2 <= len(value) <= 64:
        try:
            return ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            return None
    return None
