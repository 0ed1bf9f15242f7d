"""Boot a real systemd in systemd-nspawn for system tests.

This machine has no machined and no host D-Bus, so the container runs with
``--register=no --keep-unit`` and is entered with ``nsenter -t <its PID 1> -a`` rather than
``machinectl``/``systemctl -M``. The Debian root is built once with debootstrap and cached;
every boot uses ``--volatile=overlay`` so nothing a test does reaches the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("LOGWATCHD_TEST_CACHE", "/var/cache/logwatchd-test"))
ROOTFS = CACHE_DIR / "rootfs"
SUITE = "bookworm"
# nftables: the nftables handler bans inside a container with a network of its own.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "procps", "nftables")
# Written last into a finished root: a root without it (or without one of PACKAGES) is rebuilt.
STAMP = ".logwatchd-rootfs"
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_requirements() -> str | None:
    """Why the system tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "system tests need root (debootstrap, systemd-nspawn, nsenter)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        needed = ", ".join(missing)
        return f"system tests need {needed} (apt-get install debootstrap systemd-container)"
    return None


def apt_mirror() -> str:
    """The Debian mirror apt on this host uses, so debootstrap goes where the network allows."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = dict(_deb822_fields(stanza))
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites:
                return fields["URIs"].split()[0]
    lists = [*sorted(glob.glob("/etc/apt/sources.list.d/*.list")), "/etc/apt/sources.list"]
    for path in lists:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                found = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line + " ")
                if found:
                    return found.group(1)
    return DEFAULT_MIRROR


def _deb822_fields(stanza: str) -> Iterator[tuple[str, str]]:
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        yield key.strip(), value.strip()


def _stamp_text() -> str:
    return f"{SUITE} {' '.join(PACKAGES)}\n"


def root_is_ready(root: Path = ROOTFS) -> bool:
    """The stamp names this suite and (at least) every package of PACKAGES."""
    stamp = root / STAMP
    if not stamp.is_file():
        return False
    suite, *packages = stamp.read_text().split()
    return suite == SUITE and set(PACKAGES) <= set(packages)


def ensure_rootfs(root: Path = ROOTFS, *, timeout: float = 900) -> Path:
    """Return a finished Debian root, building it first if the cache has none.

    The build goes into a temporary directory next to the cache and is renamed into place only
    once complete, so an interrupted build never leaves a half root that looks usable. A lock
    file serialises concurrent test runs.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root_is_ready(root):
            return root
        build = Path(tempfile.mkdtemp(prefix="rootfs-build-", dir=root.parent))
        try:
            _debootstrap(build, timeout)
            (build / STAMP).write_text(_stamp_text())
            if root.exists():
                shutil.rmtree(root)
            build.rename(root)
        finally:
            if build.exists():
                shutil.rmtree(build, ignore_errors=True)
    return root


def _debootstrap(target: Path, timeout: float) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
        apt_mirror(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{tail}")


@dataclass
class Container:
    """A booted container: the nspawn process and the container's PID 1."""

    name: str
    nspawn: subprocess.Popen[bytes]
    pid1: int
    console: Path

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the container (all its namespaces) with a clean environment."""
        command = ["nsenter", "-t", str(self.pid1), "-a", *argv]
        env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"}
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}\n"
                f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
            )
        return done

    def write_file(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("install", "-D", "-m", mode, "/dev/stdin", path, input=text)

    def read_file(self, path: str) -> str:
        return self.run("cat", path).stdout

    def wait_for(self, predicate_argv: Sequence[str], *, timeout: float = 30) -> str:
        """Poll a command inside the container until it exits 0; return its stdout."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.run(*predicate_argv, check=False)
            if done.returncode == 0:
                return done.stdout
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{' '.join(predicate_argv)} did not succeed within {timeout}s: "
                    f"{done.stdout[-1000:]} {done.stderr[-1000:]}"
                )
            time.sleep(0.2)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(child) for child in Path(task).read_text().split())
    return children


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _find_pid1(nspawn_pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        for child in _children(nspawn_pid):
            if _comm(child) == "systemd":
                return child
        time.sleep(0.05)
    raise AssertionError("the container's systemd (PID 1) did not appear")


def boot(
    root: Path,
    *,
    name: str,
    binds_ro: Sequence[tuple[str, str]] = (),
    console: Path,
    timeout: float = 60,
    private_network: bool = False,
) -> Container:
    """Boot root as an ephemeral overlay container and wait until systemd is up.

    ``private_network``: a network namespace of its own (only loopback), where the container
    keeps CAP_NET_ADMIN and its nft changes never reach the host's ruleset.
    """
    argv = [
        "systemd-nspawn",
        "-D",
        str(root),
        "--register=no",
        "--keep-unit",
        "--volatile=overlay",
        "-M",
        name,
        *(f"--bind-ro={src}:{dst}" for src, dst in binds_ro),
        *(["--private-network"] if private_network else []),
        "-b",
        "--console=passive",
    ]
    log = console.open("wb")
    # setsid: nspawn must not share our session or terminal; we stop it by pid, never by name.
    nspawn = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + timeout
    try:
        container = Container(name, nspawn, _find_pid1(nspawn.pid, deadline), console)
        _wait_running(container, deadline)
    except BaseException:
        shutdown(nspawn)
        raise
    return container


def _wait_running(container: Container, deadline: float) -> None:
    state = ""
    while time.monotonic() < deadline:
        if container.nspawn.poll() is not None:
            break
        state = container.run("systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.2)
    console = container.console.read_text(errors="replace")[-3000:]
    raise AssertionError(f"container did not finish booting (state {state!r}):\n{console}")


def shutdown(nspawn: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Power the container off (SIGTERM to nspawn), then kill its process group if it hangs."""
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(nspawn.pid, signal.SIGKILL)
            nspawn.wait(timeout)


def build_wheelhouse(repo: Path, target: Path, *, timeout: float = 600) -> Path:
    """Wheels of logwatchd and all its runtime dependencies: the container has no network.

    Built from a clean copy of the working tree, so a stale ``build/`` left in the checkout
    cannot slip removed modules into the wheel (and nothing is written into the checkout).
    """
    source = target.parent / "source"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(repo, source, ignore=skip)
    target.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", str(source), "-w", str(target)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return target


if __name__ == "__main__":
    # `python -m tests.system.nspawn` builds the cached root ahead of a test run.
    print(ensure_rootfs())
