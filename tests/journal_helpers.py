"""Build real journal files for tests: journal export format fed to systemd-journal-remote.

Export format: one ``KEY=value`` line per field, a blank line after each entry; a value that is
not plain one-line UTF-8 uses the binary form ``KEY\\n`` + 64-bit little-endian length + bytes
+ ``\\n``. ``systemd-journal-remote -o FILE.journal -`` appends to FILE (the name must end in
``.journal``).
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterable, Mapping

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "0123456789abcdef0123456789abcdef"
BASE_REALTIME_US = 1_700_000_000_000_000

Value = str | bytes


def have_journal_remote() -> bool:
    return os.access(JOURNAL_REMOTE, os.X_OK)


def entry(
    n: int,
    message: Value | None = None,
    *,
    ident: str = "sshd",
    unit: str = "ssh.service",
    **extra: Value,
) -> dict[str, Value]:
    """Entry number ``n`` (its timestamps grow with n); message defaults to ``msg <n>``.

    The fields journald records itself say the entry came from the daemon ``ident`` names,
    run by root (as sshd, sudo and postfix's master are); override them (``_COMM``,
    ``_UID``, ``_EXE``) to write what a local user's ``logger -t sshd`` would leave.
    """
    fields: dict[str, Value] = {
        "__REALTIME_TIMESTAMP": str(BASE_REALTIME_US + n * 1000),
        "__MONOTONIC_TIMESTAMP": str(1_000_000 + n),
        "_BOOT_ID": BOOT_ID,
        "SYSLOG_IDENTIFIER": ident,
        "_SYSTEMD_UNIT": unit,
        "PRIORITY": "6",
        "_HOSTNAME": "web1",
        "_PID": str(1000 + n),
        "_TRANSPORT": "syslog",
        "_COMM": ident[:15],
        "_EXE": f"/usr/sbin/{ident}",
        "_UID": "0",
    }
    if message is not None or "MESSAGE" not in extra:
        fields["MESSAGE"] = f"msg {n}" if message is None else message
    fields.update(extra)
    return fields


def export_entry(fields: Mapping[str, Value] | Iterable[tuple[str, Value]]) -> bytes:
    """One entry in export format; pairs may repeat a field name."""
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    out = bytearray()
    for key, value in pairs:
        data = value.encode("utf-8") if isinstance(value, str) else value
        if _plain(data):
            out += key.encode("ascii") + b"=" + data + b"\n"
        else:
            out += key.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return bytes(out) + b"\n"


def _plain(data: bytes) -> bool:
    if b"\n" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def append_journal(
    path: str, entries: Iterable[Mapping[str, Value] | list[tuple[str, Value]]]
) -> None:
    """Append entries to the journal file ``path`` (created if missing)."""
    if not path.endswith(".journal"):
        raise ValueError("systemd-journal-remote needs an output name ending in .journal")
    data = b"".join(export_entry(e) for e in entries)
    result = subprocess.run(
        [JOURNAL_REMOTE, f"--output={path}", "-"],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"systemd-journal-remote failed: {result.stderr.decode(errors='replace')}"
        )
