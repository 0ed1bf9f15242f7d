"""Shared pytest setup. Test helpers live in importable modules: ``from tests.X import ...``."""

from __future__ import annotations

import os

# The daemon's own log in tests is JSON on stderr, never the host's journal.
os.environ.pop("JOURNAL_STREAM", None)
os.environ.pop("NOTIFY_SOCKET", None)
