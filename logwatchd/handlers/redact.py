"""Secrets in webhook URLs and headers, kept out of log lines, ``status`` and ``test`` output.

A webhook URL often carries its credential: ``https://user:pass@host/``, ``?token=...``, or a
token as a path segment (Slack's ``hooks.slack.com/services/T.../B.../XXXX``, Discord's
``/api/webhooks/ID/TOKEN``). Wherever the handler names its URL it names ``redact_url(url)``,
and every error it raises is scrubbed of the raw secrets (``Scrubber``), so a library message
that quotes the URL or a header cannot leak them either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["MASK", "Scrubber", "redact_url", "url_secrets"]

MASK = "***"
MIN_SECRET = 4  # shorter strings would mask ordinary words in a message
_TOKEN = re.compile(r"[A-Za-z0-9_\-.~+=]{16,}")


def _looks_secret(segment: str) -> bool:
    """A path segment that reads like a generated token rather than a name."""
    if not _TOKEN.fullmatch(segment):
        return False
    has_digit = any(c.isdigit() for c in segment)
    mixed_case = any(c.isupper() for c in segment) and any(c.islower() for c in segment)
    one_word = len(segment) >= 20 and segment.isalpha()  # no name is 20 letters unbroken
    return has_digit or mixed_case or one_word


def redact_url(url: str) -> str:
    """The URL as it may be shown: userinfo, query values, token-like path segments masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    path = "/".join(MASK if _looks_secret(s) else s for s in parts.path.split("/"))
    query = "&".join(_masked_item(item) for item in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _masked_item(item: str) -> str:
    name, sep, value = item.partition("=")
    return f"{name}={MASK}" if sep and value else item


def url_secrets(url: str) -> list[str]:
    """The raw pieces of ``url`` that ``redact_url`` masks (and their decoded forms)."""
    parts = urlsplit(url)
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [userinfo, *userinfo.split(":", 1)]
    found += [s for s in parts.path.split("/") if _looks_secret(s)]
    found += [item.partition("=")[2] for item in parts.query.split("&")]
    if parts.fragment:
        found.append(parts.fragment)
    return found + [unquote(piece) for piece in found]


class Scrubber:
    """Replaces every known secret in a text with ``MASK``, longest first; ``url``, when
    given, is replaced by its redacted form first (its short query values are secrets too)."""

    def __init__(self, secrets: Iterable[str] = (), *, url: str | None = None) -> None:
        self._secrets: list[str] = []
        self._url = url
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        fresh = {s for s in secrets if len(s) >= MIN_SECRET} - set(self._secrets)
        if fresh:
            self._secrets = sorted({*self._secrets, *fresh}, key=len, reverse=True)

    def add_header_value(self, value: str) -> None:
        """A secret header's value, and each word of it (``Bearer TOKEN`` leaks as TOKEN)."""
        self.add([value, value.strip(), *value.split()])

    def __call__(self, text: str) -> str:
        if self._url:
            text = text.replace(self._url, redact_url(self._url))
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
