"""The command line: run, check, test, explain, status, actions, state, report.

What each command does for a user is in README.md ("Writing and testing a rule", "Install as
a service", "Banning", "Status", "Reports").
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Callable, Sequence

from logwatchd import __version__
from logwatchd.errors import ConfigError, StateError

DEFAULT_CONFIG = "/etc/logwatchd/logwatchd.yaml"
EX_CONFIG = 78  # sysexits.h: the daemon refuses to start on a bad config
EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logwatchd",
        description="Follow logs and the journal, match YAML rules, deliver alerts.",
    )
    parser.add_argument("--version", action="version", version=f"logwatchd {__version__}")
    _log_options(parser, "auto", "info")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
        )
        _log_options(sub)
        return sub

    run = command("run", "run the daemon in the foreground (systemd Type=notify)")
    run.add_argument("--state-dir", help="override daemon.state_dir")
    run.add_argument("--daemon", action="store_true", help="detach (hosts without systemd)")
    run.add_argument("--pidfile", help="with --daemon: an flock()ed pidfile")
    run.add_argument(
        "--log-file", help="with --daemon: append the daemon's own log here (else it is discarded)"
    )
    run.add_argument(
        "--demo",
        action="store_true",
        help="run the embedded demo config on ./logwatchd-demo/ (no root, no mail server)",
    )

    command("check", "validate the config and render every template against a sample alert")

    test = command("test", "replay log files through the parser and all rules, on event time")
    test.add_argument("files", nargs="+", metavar="FILE", help="log files (.gz too); - for stdin")
    test.add_argument("--source", help="source id whose parser and rules apply")
    test.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    test.add_argument("--matches", action="store_true", help="also report every rule match")
    test.add_argument("--execute", action="store_true", help="run the handlers for each alert")

    explain = command("explain", "show parsed fields and, rule by rule, what matched or failed")
    explain.add_argument("--source", help="source id (may be left out when there is one)")
    explain.add_argument("line", metavar="LINE", help="one log line")

    status = command("status", "whether the daemon runs, and what it read, matched and delivered")
    status.add_argument("--state-dir", help="override daemon.state_dir")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    report = command("report", "alerts, events, top keys and sources over time: HTML or text")
    report.add_argument(
        "files", nargs="*", metavar="FILE", help="replay these logs (.gz too; - for stdin) "
        "instead of reading the state database's history",
    )  # fmt: skip
    report.add_argument("-o", "--output", default="-", help="an .html file, or - for text")
    report.add_argument("--since", help="with no FILE: how far back (default 7d)")
    report.add_argument("--state-dir", help="override daemon.state_dir")
    report.add_argument("--source", help="with FILEs: the source whose parser and rules apply")

    actions = command("actions", "list the active actions (bans) and revert them")
    actions.add_argument("--state-dir", help="override daemon.state_dir")
    actions.add_argument("--json", action="store_true", help="print the list as JSON")
    verbs = actions.add_subparsers(dest="actions_command", metavar="[revert]", required=False)
    revert = verbs.add_parser("revert", help="undo now: HANDLER KEY, or --all")
    revert.add_argument("handler", nargs="?", help="handler name, e.g. ban")
    revert.add_argument("key", nargs="?", help="the key, e.g. an address (one inside a /64 too)")
    revert.add_argument("--all", action="store_true", help="every active action of every handler")
    # also accepted after `revert`; SUPPRESS keeps the value given before it
    revert.add_argument("-c", "--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    revert.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    state = commands.add_parser("state", help="the state database: check, recover")
    state_commands = state.add_subparsers(dest="state_command", required=True, metavar="COMMAND")
    state_check = state_commands.add_parser(
        "check", help="check the state database; with --recover, rebuild a damaged one"
    )
    state_check.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )
    state_check.add_argument("--state-dir", help="override daemon.state_dir")
    _log_options(state_check)
    state_check.add_argument(
        "--recover",
        action="store_true",
        help="keep every readable row in a fresh database; the damaged one is moved aside",
    )
    return parser


def _log_options(
    parser: argparse.ArgumentParser,
    fmt: object = argparse.SUPPRESS,
    level: object = argparse.SUPPRESS,
) -> None:
    """``--log-format``/``--log-level`` go before or after the command (``run --log-level
    debug``); a subcommand's copy has no default, so it never undoes one given before it."""
    parser.add_argument(
        "--log-format",
        choices=["auto", "console", "json", "journal", "stderr"],
        default=fmt,
        help="the daemon's own log: auto picks the journal under systemd, console on a terminal",
    )
    parser.add_argument("--log-level", default=level, choices=["debug", "info", "warning", "error"])


# The pipeline makes and drops many small containers per line, nearly all freed by their
# reference counts; the cycle collector's default (a pass every 700 new containers) took
# about a tenth of a replay's CPU. Its memory stays bounded, only collected less often.
GC_THRESHOLD = (20_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("run", "test"):
        gc.set_threshold(*GC_THRESHOLD)
    from logwatchd.service import logging as service_logging

    fmt = args.log_format
    if args.command != "run" and fmt == "auto":
        fmt = "stderr" if not sys.stderr.isatty() else "console"
    service_logging.configure(fmt, level=args.log_level)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"logwatchd: {exc}", file=sys.stderr)
        return EX_CONFIG if args.command == "run" else EXIT_INVALID
    except StateError as exc:
        print(f"logwatchd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


# command -> the module under logwatchd.commands that runs it (a function of the same name);
# only that module is imported, so the daemon's start does not load report or status code
COMMANDS = {
    "run": "run",
    "check": "check",
    "test": "replay",
    "explain": "explain",
    "status": "status",
    "report": "report",
    "actions": "actions",
    "state": "state",
}


def _dispatch(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"logwatchd.commands.{COMMANDS[args.command]}")
    handler: Callable[[argparse.Namespace], int] = getattr(module, args.command)
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
