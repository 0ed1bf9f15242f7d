"""Decoding journalctl's ``-o json`` output: records split from the stream, then fields.

Kept apart from the source in ``journal.py`` (which runs journalctl and keeps the cursor)
because this part is pure data handling with its own hostile-input rules: a record may be
huge, cut, broken JSON or binary, and none of that may cost memory or lose the cursor.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any

# Inside a JSON string every '"' is escaped, so this byte pattern can only be the real key.
_CURSOR_KEY = re.compile(rb'"__CURSOR":"([^"\\]{1,512})"')
# Longer than any cursor key and value, so a cursor split across two chunks is still found.
_CURSOR_SCAN_OVERLAP = 600
SKIP_CHUNK = 1 << 16


def decode_record(data: bytes, cursor: str, cut: bool) -> tuple[dict[str, Any], bool]:
    """(fields, cut): a record's fields, text for binary values; ``cut`` if anything was lost.

    A record that was cut short or is not valid JSON keeps its complete leading fields (and
    the start of a cut MESSAGE), with the cursor put back, rather than being dropped.
    """
    fields = None if cut else _loads(data)
    if fields is None:
        fields = loads_prefix(data)
        fields["__CURSOR"] = cursor
        cut = True
    _decode_fields(fields)
    return fields, cut


def line_text(fields: dict[str, Any], max_bytes: int) -> tuple[str, bool]:
    """(text, cut): the record's MESSAGE as line text, cut to ``max_bytes`` of UTF-8."""
    raw = _message(fields.get("MESSAGE"))
    if len(raw) * 4 > max_bytes:  # cheap test before encoding
        encoded = raw.encode("utf-8")
        if len(encoded) > max_bytes:
            return encoded[:max_bytes].decode("utf-8", "ignore"), True
    return raw, False


def records(
    stream: IO[bytes], limit: int, chunk: int = SKIP_CHUNK
) -> Iterator[tuple[bytes, str | None, bool]]:
    """(record bytes, cursor, cut) per complete output line; longer ones are cut to ``limit``.

    A last line without its newline is dropped: journalctl died while writing it, and the
    restart from the previous cursor prints it again.
    """
    while True:
        data = stream.readline(limit)
        if data.endswith(b"\n"):
            found = _CURSOR_KEY.search(data)
            yield data, found.group(1).decode("ascii") if found else None, False
            continue
        if len(data) < limit:
            return
        cursor, complete = _skip_rest(stream, data, chunk)
        if not complete:
            return
        yield data, cursor, True


def _skip_rest(stream: IO[bytes], head: bytes, size: int) -> tuple[str | None, bool]:
    """Read past an over-long record, finding its cursor; (cursor, newline reached)."""
    found = _CURSOR_KEY.search(head)
    tail = head[-_CURSOR_SCAN_OVERLAP:]
    while True:
        chunk = stream.readline(size)
        if not chunk:
            return None, False
        if found is None:
            window = tail + chunk
            found = _CURSOR_KEY.search(window)
            tail = window[-_CURSOR_SCAN_OVERLAP:]
        if chunk.endswith(b"\n"):
            return (found.group(1).decode("ascii") if found else None), True


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def loads_prefix(data: bytes) -> dict[str, Any]:
    """The complete ``"key":value`` pairs at the start of a cut or broken JSON object.

    A MESSAGE string that was cut keeps its beginning, so rules still see the start of a
    huge message.
    """
    # Incremental: a character cut in half at the end is left out, not replaced.
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)
    decoder = json.JSONDecoder()
    fields: dict[str, Any] = {}
    pos = 1
    while True:
        key = None
        try:
            key, pos = decoder.raw_decode(text, pos)
            if text[pos] != ":":
                break
            pos += 1
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, IndexError):
            if key == "MESSAGE":
                fields[key] = _string_prefix(text, pos)
            break
        if isinstance(key, str):
            fields[key] = value
        if pos >= len(text) or text[pos] != ",":
            break
        pos += 1
    return fields


def _string_prefix(text: str, start: int) -> str | None:
    """Decode the beginning of a JSON string cut short (maybe inside an escape)."""
    if not text.startswith('"', start):
        return None
    body = text[start:].rstrip("\n")
    for cut in range(7):  # "\\uXXXX" is the longest escape a cut can split
        try:
            value = json.loads(body[: len(body) - cut] + '"')
        except ValueError:
            continue
        return value if isinstance(value, str) else None
    return None


def _decode_fields(fields: dict[str, Any]) -> None:
    """Binary values (lists of byte values) become text, in place."""
    for key, value in fields.items():
        if type(value) is not str:
            fields[key] = _decode(value)


def _decode(value: Any) -> Any:
    """journalctl JSON values: a string; a list of ints for a non-UTF-8 value; a list of
    such values for a field given more than once; null when too large without ``--all``."""
    if isinstance(value, list):
        if all(type(item) is int for item in value):
            try:
                return bytes(value).decode("utf-8", "replace")
            except ValueError:
                return str(value)
        return [_decode(item) for item in value]
    return value


def _message(value: Any) -> str:
    """The line text: MESSAGE (the first one if repeated), without a trailing newline."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if not isinstance(value, str):
        return ""
    return value.rstrip("\n")
