"""Loading the YAML configuration into validated, frozen ``Config`` data.

``load(path)`` reads the file and its includes, checks everything README's "Configuration" and
"Handlers" describe, and raises ``ConfigError`` (file, line, key path, message) for the first
problem.
"""

from __future__ import annotations

from logwatchd.config.durations import parse_duration
from logwatchd.config.loader import read_layers, read_text_layers
from logwatchd.config.model import Config
from logwatchd.config.schema import build_config
from logwatchd.errors import ConfigError

__all__ = ["Config", "ConfigError", "load", "load_text", "parse_duration"]


def load(path: str, *, base_dir: str | None = None) -> Config:
    """The config in ``path``. Relative paths inside it resolve against ``base_dir`` when
    given, else against the directory of the file that holds them."""
    return build_config(read_layers(path, base_dir=base_dir))


def load_text(text: str, name: str, *, base_dir: str) -> Config:
    """A config given as text; ``name`` appears in error marks, includes resolve in base_dir."""
    return build_config(read_text_layers(text, name, base_dir=base_dir))
