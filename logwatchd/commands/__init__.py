"""One module per command of the command line; ``cli`` parses arguments and calls these."""

from logwatchd.commands.check import check
from logwatchd.commands.explain import explain
from logwatchd.commands.replay import test
from logwatchd.commands.report import report
from logwatchd.commands.run import run
from logwatchd.commands.state import state
from logwatchd.commands.status import status

__all__ = ["check", "explain", "report", "run", "state", "status", "test"]
