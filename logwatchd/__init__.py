"""logwatchd: follow Linux logs and the journal, match YAML rules, deliver alerts durably."""

__version__ = "0.1.0"
__all__ = ["__version__"]
