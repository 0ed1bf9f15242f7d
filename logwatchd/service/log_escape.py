"""Log data written so that a terminal or a log viewer shows it rather than acts on it.

A log line can hold any character. Written raw into the daemon's own log, ESC starts ANSI
and OSC sequences (colours, a new window title, a hyperlink), 0x9b is a one-byte CSI, CR
overwrites what was shown, and the bidirectional overrides reorder it. Every such character
is written as an escape instead (``\\u001b``, ``\\r``), in every format.
"""

from __future__ import annotations

import re

__all__ = ["UNSAFE", "escape_controls", "escape_lines"]

# C0 and C1 controls, DEL, line and paragraph separators, bidirectional marks and overrides
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape."""
    return UNSAFE.sub(lambda m: _SHORT.get(m[0], f"\\u{ord(m[0]):04x}"), text)


def escape_lines(text: str) -> str:
    """The same, keeping the newlines of a text that has lines (a traceback)."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))
