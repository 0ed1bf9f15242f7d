"""``logwatchd run``: the daemon in the foreground, or detached with --daemon."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable

import structlog

from logwatchd.config import load, load_text
from logwatchd.config.model import Config

log = structlog.get_logger("logwatchd")

DEMO_DIR = "logwatchd-demo"


def run(args: argparse.Namespace) -> int:
    # absolute: --daemon changes the working directory before a reload reads the file again
    loader = _demo_loader() if args.demo else _file_loader(os.path.abspath(args.config))
    config = loader()  # a ConfigError here exits 78 before anything starts
    if args.demo:
        _seed_demo(config)
    from logwatchd import state_lock
    from logwatchd.service.daemon import Daemon

    if args.daemon and not args.pidfile:
        print("logwatchd: --daemon needs --pidfile", file=sys.stderr)
        return 2
    # absolute: --daemon changes the working directory to /
    state_dir = os.path.abspath(args.state_dir or config.daemon.state_dir)
    daemon = Daemon(
        loader, name="<demo>" if args.demo else args.config, state_dir=state_dir, config=config
    )
    # held for the daemon's whole life: a second daemon here would deliver everything twice
    with state_lock.acquire(state_dir) as lock:
        if args.daemon:
            from logwatchd.service.daemonize import detach

            assert lock.fd is not None
            log_file = os.path.abspath(args.log_file) if args.log_file else None
            with detach(args.pidfile, keep_fds=[lock.fd], stderr_path=log_file):
                lock.write_pid()  # the detached daemon's own pid
                daemon.install_signals()
                return daemon.run()
        daemon.install_signals()
        return daemon.run()


def _file_loader(path: str) -> Callable[[], Config]:
    return lambda: _verified(load(path))


def _demo_loader() -> Callable[[], Config]:
    from importlib import resources  # some 20 ms at start-up, for --demo only

    text = resources.files("logwatchd").joinpath("data/demo.yaml").read_text(encoding="utf-8")
    base = os.getcwd()
    return lambda: _verified(load_text(text, "demo.yaml", base_dir=base))


def _verified(config: Config) -> Config:
    """A config the daemon may start (or reload) with: what ``check`` refuses, it refuses."""
    from logwatchd.commands.check import verify

    for warning in verify(config).warnings:
        log.warning("config warning", warning=warning)
    return config


def _seed_demo(config: Config) -> None:
    """Give the demo something to find: sample lines, if the log does not exist yet."""
    os.makedirs(DEMO_DIR, exist_ok=True)
    log_path = os.path.join(DEMO_DIR, "server.log")
    if os.path.exists(log_path):
        return
    now = dt.datetime.now().replace(microsecond=0)
    lines = [
        (0, "UserLogin - IP: 198.51.100.7"),
        (1, "LoginFailed - IP: 192.0.2.44"),
        (2, "LoginFailed - IP: 192.0.2.44"),
        (3, "LoginFailed - IP: 192.0.2.44"),
        (4, "SecurityBreach - IP: 203.0.113.9"),
    ]
    with open(log_path, "w", encoding="utf-8") as handle:
        for offset, text in lines:
            stamp = (now - dt.timedelta(seconds=len(lines) - offset)).strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"{stamp} {text}\n")
    print(
        f"logwatchd demo: following {log_path}; alerts go to this console and "
        f"{DEMO_DIR}/alerts.jsonl.\n"
        f"  Try: echo \"$(date '+%F %T') SecurityBreach - IP: 203.0.113.50\" >> {log_path}\n"
        "  Stop with Ctrl-C.",
        file=sys.stderr,
    )
