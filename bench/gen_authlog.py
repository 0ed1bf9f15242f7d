"""Write a deterministic, realistic auth.log for the benchmarks.

Traffic is built from scenarios (a brute-force attempt, a scanner, an admin's ssh session, a
cron job, a sudo command...), each emitting the several lines a real host writes for it, so
the proportions and the per-connection structure look like a server on the Internet: most
lines are routine (cron, sessions, sudo), a sizeable share are sshd failures from a few
thousand IPv4 and IPv6 sources with a heavy-tailed distribution (a few noisy attackers, many
that try once or twice).

    python bench/gen_authlog.py /tmp/auth.log                  # 1,000,000 lines, RFC 3164
    python bench/gen_authlog.py /tmp/auth.log --format rfc3339 --lines 200000
    python bench/gen_authlog.py - --lines 20 --format mix      # to stdout

The same arguments always give the same bytes (seeded); the summary goes to stderr.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
START = datetime(2026, 11, 26, 0, 0, 0, tzinfo=UTC)

LOCAL_USERS = ("alice", "bob", "carol", "deploy", "backup", "ansible", "git")
GUESSED_USERS = (
    "admin", "test", "user", "ubuntu", "oracle", "postgres", "guest", "ftpuser", "pi", "support",
    "git", "mysql", "hadoop", "tomcat", "nagios", "dev", "www", "jenkins", "steam", "minecraft",
    "ts3", "teamspeak", "vagrant", "centos", "ec2-user", "debian", "odoo", "es", "elastic", "ftp",
)  # fmt: skip
CRON_JOBS = (
    ("root", "command -v debian-sa1 > /dev/null && debian-sa1 1 1"),
    ("root", "   cd / && run-parts --report /etc/cron.hourly"),
    ("root", "[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then "
             "/usr/lib/php/sessionclean; fi"),
    ("www-data", "php /var/www/nextcloud/cron.php"),
    ("backup", "/usr/local/bin/backup-db --quiet"),
)  # fmt: skip
SUDO_COMMANDS = (
    "/usr/bin/systemctl restart nginx",
    "/usr/bin/apt-get update",
    "/usr/bin/journalctl -u ssh -n 50",
    "/usr/bin/tail -f /var/log/syslog",
    "/usr/sbin/nft list ruleset",
    "/usr/bin/docker ps",
    "/bin/bash",
)
DISCONNECT_REASONS = ("Bye Bye", "Normal Shutdown, Thank you for playing", "Client disconnecting")
KEY_TYPES = ("ED25519", "RSA", "ECDSA")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@dataclass
class Clock:
    """Event time: advances by a random gap per scenario, with a daily rhythm left out on
    purpose (a flat rate keeps runs comparable whatever --lines is)."""

    now: datetime = START
    mean_gap: float = 0.06

    def advance(self, rng: random.Random) -> datetime:
        self.now += timedelta(seconds=rng.expovariate(1.0 / self.mean_gap))
        return self.now


@dataclass
class World:
    rng: random.Random
    attackers: list[str]
    attacker_weights: list[float]
    internal: list[str]
    sshd_session_share: float
    next_session: int = 1000
    counts: Counter[str] = field(default_factory=Counter)

    def pid(self) -> int:
        return self.rng.randrange(1000, 4_000_000)

    def port(self) -> int:
        return self.rng.randrange(1024, 65536)

    def attacker(self) -> str:
        return self.rng.choices(self.attackers, cum_weights=self.attacker_weights)[0]

    def sshd_program(self) -> str:
        # OpenSSH 9.8+ logs per-connection messages from sshd-session
        return "sshd-session" if self.rng.random() < self.sshd_session_share else "sshd"

    def session_id(self) -> int:
        self.next_session += 1
        return self.next_session


Entry = tuple[str, str]  # (program[pid] tag, message)
Scenario = Callable[[World], list[Entry]]


def make_ipv4(rng: random.Random) -> str:
    while True:
        first = rng.randrange(1, 224)
        if first not in (10, 127, 172, 192, 169, 100):
            return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def make_ipv6(rng: random.Random) -> str:
    head = rng.choice(("2001:db8", "2a01:4f8", "2604:a880", "2400:6180", "2a03:b0c0"))
    groups = [f"{rng.randrange(1 << 16):x}" for _ in range(rng.choice((2, 3, 4)))]
    return f"{head}:{':'.join(groups[:-1])}::{groups[-1]}"


def make_world(rng: random.Random, sources: int, ipv6_share: float, sshd_session: float) -> World:
    attackers = [
        make_ipv6(rng) if rng.random() < ipv6_share else make_ipv4(rng) for _ in range(sources)
    ]
    # Zipf-like: attacker i weighs 1/(i+1)^0.9, so a few dozen dominate and most are rare
    cumulative: list[float] = []
    total = 0.0
    for rank in range(sources):
        total += 1.0 / (rank + 1) ** 0.9
        cumulative.append(total)
    internal = [f"10.0.{rng.randrange(4)}.{rng.randrange(2, 250)}" for _ in range(40)]
    return World(rng, attackers, cumulative, internal, sshd_session)


# --- scenarios: each returns the lines one real-world happening writes --------------------


def brute_force(world: World) -> list[Entry]:
    """One connection of a password guesser: up to 6 tries, then a disconnect."""
    rng = world.rng
    ip, port, tag = world.attacker(), world.port(), f"{world.sshd_program()}[{world.pid()}]"
    invalid = rng.random() < 0.6
    user = rng.choice(GUESSED_USERS) if invalid else "root"
    who = f"invalid user {user}" if invalid else user
    out: list[Entry] = []
    if invalid:
        out.append((tag, f"Invalid user {user} from {ip} port {port}"))
    tries = rng.choice((1, 1, 1, 2, 3, 6))
    for attempt in range(tries):
        if attempt == 0:
            if invalid:
                out.append((tag, "pam_unix(sshd:auth): check pass; user unknown"))
            tail = "" if invalid else " user=root"
            out.append(
                (
                    tag,
                    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                    f"tty=ssh ruser= rhost={ip}{tail}",
                )
            )
        out.append((tag, f"Failed password for {who} from {ip} port {port} ssh2"))
    if tries >= 6:
        out.append(
            (
                tag,
                f"error: maximum authentication attempts exceeded for {who} from {ip} "
                f"port {port} ssh2 [preauth]",
            )
        )
        kind = "invalid" if invalid else "authenticating"
        out.append(
            (
                tag,
                f"Disconnecting {kind} user {user} {ip} port {port}: "
                "Too many authentication failures [preauth]",
            )
        )
    elif rng.random() < 0.5:
        out.append((tag, f"Received disconnect from {ip} port {port}:11: "
                         f"{rng.choice(DISCONNECT_REASONS)} [preauth]"))  # fmt: skip
        out.append((tag, f"Disconnected from {who} {ip} port {port} [preauth]"))
    else:
        kind = "invalid user" if invalid else "authenticating user"
        out.append((tag, f"Connection closed by {kind} {user} {ip} port {port} [preauth]"))
    world.counts["sshd_attack_connections"] += 1
    return out


def scanner(world: World) -> list[Entry]:
    """A banner grab or key-exchange probe that never tries a password."""
    rng = world.rng
    ip, port, tag = world.attacker(), world.port(), f"sshd[{world.pid()}]"
    pick = rng.random()
    if pick < 0.4:
        msg = f"Connection closed by {ip} port {port} [preauth]"
    elif pick < 0.6:
        msg = f"Connection reset by {ip} port {port} [preauth]"
    elif pick < 0.8:
        msg = f"banner exchange: Connection from {ip} port {port}: invalid format"
    else:
        msg = (
            f"Unable to negotiate with {ip} port {port}: no matching host key type found. "
            "Their offer: ssh-rsa,ssh-dss [preauth]"
        )
    world.counts["sshd_scans"] += 1
    return [(tag, msg)]


def _fingerprint(rng: random.Random) -> str:
    return "".join(rng.choice(B64) for _ in range(43))


def ssh_login(world: World) -> list[Entry]:
    """An admin logs in, gets a logind session, and leaves."""
    rng = world.rng
    user, ip, port = rng.choice(LOCAL_USERS), rng.choice(world.internal), world.port()
    pid, sid = world.pid(), world.session_id()
    tag, logind = f"{world.sshd_program()}[{pid}]", f"systemd-logind[{612}]"
    uid = 1000 + LOCAL_USERS.index(user)
    if rng.random() < 0.85:
        accepted = (
            f"Accepted publickey for {user} from {ip} port {port} ssh2: "
            f"{rng.choice(KEY_TYPES)} SHA256:{_fingerprint(rng)}"
        )
    else:
        accepted = f"Accepted password for {user} from {ip} port {port} ssh2"
    world.counts["ssh_logins"] += 1
    return [
        (tag, accepted),
        (tag, f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)"),
        (logind, f"New session {sid} of user {user}."),
        (tag, f"Received disconnect from {ip} port {port}:11: disconnected by user"),
        (tag, f"Disconnected from user {user} {ip} port {port}"),
        (tag, f"pam_unix(sshd:session): session closed for user {user}"),
        (logind, f"Session {sid} logged out. Waiting for processes to exit."),
        (logind, f"Removed session {sid}."),
    ]


def cron_job(world: World) -> list[Entry]:
    user, command = world.rng.choice(CRON_JOBS)
    tag = f"CRON[{world.pid()}]"
    uid = 0 if user == "root" else 33 if user == "www-data" else 34
    world.counts["cron_jobs"] += 1
    return [
        (tag, f"pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)"),
        (tag, f"({user}) CMD ({command})"),
        (tag, f"pam_unix(cron:session): session closed for user {user}"),
    ]


def sudo_command(world: World) -> list[Entry]:
    rng = world.rng
    user = rng.choice(LOCAL_USERS[:4])
    uid = 1000 + LOCAL_USERS.index(user)
    tty = f"pts/{rng.randrange(4)}"
    where = f"TTY={tty} ; PWD=/home/{user} ; USER=root ; COMMAND={rng.choice(SUDO_COMMANDS)}"
    world.counts["sudo_commands"] += 1
    opened = f"session opened for user root(uid=0) by {user}(uid={uid})"
    return [
        ("sudo", f"{user:>8} : {where}"),
        ("sudo", f"pam_unix(sudo:session): {opened}"),
        ("sudo", "pam_unix(sudo:session): session closed for user root"),
    ]


def sudo_failure(world: World) -> list[Entry]:
    rng = world.rng
    user = rng.choice(LOCAL_USERS[:4])
    uid = 1000 + LOCAL_USERS.index(user)
    tty = f"pts/{rng.randrange(4)}"
    where = f"TTY={tty} ; PWD=/home/{user} ; USER=root ; COMMAND={rng.choice(SUDO_COMMANDS)}"
    world.counts["sudo_failures"] += 1
    return [
        (
            "sudo",
            f"pam_unix(sudo:auth): authentication failure; logname={user} uid={uid} euid=0 "
            f"tty=/dev/{tty} ruser={user} rhost=  user={user}",
        ),
        ("sudo", f"{user:>8} : 3 incorrect password attempts ; {where}"),
    ]


def sudo_not_allowed(world: World) -> list[Entry]:
    rng = world.rng
    user = rng.choice(("mallory", "www-data", "intern"))
    tty = f"pts/{rng.randrange(4)}"
    where = f"TTY={tty} ; PWD=/home/{user} ; USER=root ; COMMAND={rng.choice(SUDO_COMMANDS)}"
    world.counts["sudo_not_in_sudoers"] += 1
    return [("sudo", f"{user:>8} : user NOT in sudoers ; {where}")]


def su_session(world: World) -> list[Entry]:
    user = world.rng.choice(LOCAL_USERS[:4])
    tag = f"su[{world.pid()}]"
    world.counts["su_sessions"] += 1
    return [
        (tag, f"(to root) {user} on pts/1"),
        (tag, f"pam_unix(su:session): session opened for user root(uid=0) by {user}(uid=1000)"),
        (tag, "pam_unix(su:session): session closed for user root"),
    ]


# weights in scenarios (not lines): chosen so that about 30% of lines are sshd failures
SCENARIOS: tuple[tuple[Scenario, float], ...] = (
    (cron_job, 30.0),
    (brute_force, 11.0),
    (scanner, 8.0),
    (ssh_login, 5.0),
    (sudo_command, 6.0),
    (su_session, 1.5),
    (sudo_failure, 0.4),
    (sudo_not_allowed, 0.1),
)


# --- output --------------------------------------------------------------------------------


def rfc3164(when: datetime) -> str:
    return f"{MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S}"


def rfc3339(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def generate(
    lines: int, *, seed: int, fmt: str, host: str, sources: int, ipv6_share: float,
    sshd_session: float, counts: Counter[str] | None = None,
) -> Iterator[str]:  # fmt: skip
    """Lines with their newline; ``counts`` (if given) gets scenario and line tallies."""
    rng = random.Random(seed)
    world = make_world(rng, sources, ipv6_share, sshd_session)
    if counts is not None:
        world.counts = counts
    clock = Clock()
    funcs = [s for s, _ in SCENARIOS]
    cumulative: list[float] = []
    total = 0.0
    for _, weight in SCENARIOS:
        total += weight
        cumulative.append(total)
    emitted = 0
    while emitted < lines:
        scenario = rng.choices(funcs, cum_weights=cumulative)[0]
        when = clock.advance(rng)
        for tag, message in scenario(world):
            if emitted >= lines:
                break
            use_3339 = fmt == "rfc3339" or (fmt == "mix" and rng.random() < 0.5)
            stamp = rfc3339(when) if use_3339 else rfc3164(when)
            yield f"{stamp} {host} {tag}: {message}\n"
            emitted += 1
            when += timedelta(microseconds=rng.randrange(50, 20_000))
        clock.now = max(clock.now, when)  # keep the file in time order across scenarios
    world.counts["lines"] = emitted


def write(out: TextIO, rows: Iterator[str]) -> None:
    chunk: list[str] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= 10_000:
            out.write("".join(chunk))
            chunk.clear()
    out.write("".join(chunk))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="file to write, or - for stdout")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", choices=("rfc3164", "rfc3339", "mix"), default="rfc3164")
    parser.add_argument("--host", default="web1")
    parser.add_argument("--sources", type=int, default=3000, help="distinct attacker addresses")
    parser.add_argument("--ipv6-share", type=float, default=0.2)
    parser.add_argument(
        "--sshd-session-share",
        type=float,
        default=0.3,
        help="share of sshd connections logged by sshd-session (OpenSSH 9.8+)",
    )
    args = parser.parse_args(argv)
    counts: Counter[str] = Counter()
    rows = generate(
        args.lines,
        seed=args.seed,
        fmt=args.format,
        host=args.host,
        sources=args.sources,
        ipv6_share=args.ipv6_share,
        sshd_session=args.sshd_session_share,
        counts=counts,
    )
    if args.output == "-":
        write(sys.stdout, rows)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            write(out, rows)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"gen_authlog: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
