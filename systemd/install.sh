#!/bin/sh
# Install logwatchd as a systemd service on a Debian/Ubuntu host. Run as root.
#
#   systemd/install.sh [--wheels DIR] [--no-start] [--prefix /opt/logwatchd]
#
#   --wheels DIR   install from a directory of wheels (logwatchd and all its dependencies, e.g.
#                  made with `pip wheel /path/to/checkout -w DIR`) without network access;
#                  default: install from the checkout this script is in (needs PyPI access).
#                  --wheelhouse is accepted as a synonym.
#   --no-start     install and enable, but do not (re)start the service.
#
# What it does: a virtualenv in PREFIX with logwatchd in it; the system user logwatchd
# (sysusers.d); the unit in /etc/systemd/system; /etc/logwatchd/logwatchd.yaml from the
# example (an existing one is never overwritten) and the shipped rule packs in
# /etc/logwatchd/rules.d (existing files are kept); then enable, and start or restart.
# Running it again upgrades the package in place. systemd/uninstall.sh reverses it.
set -eu

PREFIX=/opt/logwatchd
WHEELS=""
START=yes
CONF_DIR=/etc/logwatchd
UNIT_DIR=/etc/systemd/system
SYSUSERS_DIR=/usr/lib/sysusers.d

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels|--wheelhouse) [ $# -ge 2 ] || die "$1 needs a directory"; WHEELS=$2; shift 2 ;;
        --wheels=*|--wheelhouse=*) WHEELS=${1#*=}; shift ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --no-start) START=no; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
command -v systemctl >/dev/null || die "systemctl not found: this script installs a systemd service"
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$SRC/systemd/logwatchd.service" ] || die "run from a logwatchd checkout ($SRC has no systemd/)"
if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die "$WHEELS is not a directory"
fi

# 1. The virtualenv. python3-venv brings ensurepip, so this needs no network.
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "logwatchd needs Python 3.11 or newer"
if [ ! -x "$PREFIX/bin/python" ]; then
    say "creating virtualenv $PREFIX"
    python3 -m venv "$PREFIX" || die "python3 -m venv failed (apt-get install python3-venv)"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "$WHEELS" ]; then
    say "installing logwatchd from $WHEELS"
    "$PREFIX/bin/pip" install --quiet --no-index --find-links "$WHEELS" --upgrade logwatchd
else
    say "installing logwatchd from $SRC"
    "$PREFIX/bin/pip" install --quiet --upgrade "$SRC"
fi
"$PREFIX/bin/logwatchd" --version >/dev/null || die "$PREFIX/bin/logwatchd does not run"

# 2. The user, before anything is owned by it.
install -D -m 0644 "$SRC/systemd/logwatchd.sysusers" "$SYSUSERS_DIR/logwatchd.conf"
systemd-sysusers "$SYSUSERS_DIR/logwatchd.conf"

# 3. Configuration: the admin's files win over the shipped ones.
install -d -m 0755 "$CONF_DIR" "$CONF_DIR/rules.d"
if [ -e "$CONF_DIR/logwatchd.yaml" ]; then
    say "keeping existing $CONF_DIR/logwatchd.yaml"
else
    install -m 0644 "$SRC/config/logwatchd.yaml" "$CONF_DIR/logwatchd.yaml"
    say "installed example $CONF_DIR/logwatchd.yaml: edit it for this host"
fi
for pack in "$SRC"/config/rules.d/*.yaml; do
    [ -e "$pack" ] || continue
    target="$CONF_DIR/rules.d/$(basename "$pack")"
    if [ -e "$target" ]; then
        cmp -s "$pack" "$target" || say "keeping your $target (the shipped one differs: $pack)"
    else
        install -m 0644 "$pack" "$target"
    fi
done

# 4. The unit. ExecStart names $PREFIX; rewrite it when installing elsewhere.
sed "s#/opt/logwatchd/bin/logwatchd#$PREFIX/bin/logwatchd#" "$SRC/systemd/logwatchd.service" \
    > "$UNIT_DIR/logwatchd.service.tmp"
chmod 0644 "$UNIT_DIR/logwatchd.service.tmp"
mv "$UNIT_DIR/logwatchd.service.tmp" "$UNIT_DIR/logwatchd.service"
systemctl daemon-reload
systemctl enable --quiet logwatchd.service

# 5. Start, but only a config that passes `check`: a bad one would exit 78 and stay down.
if [ "$START" = no ]; then
    say "installed; start with: systemctl start logwatchd"
    exit 0
fi
if ! "$PREFIX/bin/logwatchd" check -c "$CONF_DIR/logwatchd.yaml"; then
    die "$CONF_DIR/logwatchd.yaml does not pass check: fix it, then systemctl restart logwatchd"
fi
systemctl restart logwatchd.service
say "logwatchd is $(systemctl is-active logwatchd.service); its log: journalctl -u logwatchd"
