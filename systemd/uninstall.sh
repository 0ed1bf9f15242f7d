#!/bin/sh
# Remove what systemd/install.sh installed. Run as root.
#
#   systemd/uninstall.sh [--purge] [--prefix /opt/logwatchd]
#
# Stops and disables the service, removes the unit, the virtualenv and the sysusers file.
# Keeps /etc/logwatchd (your config), /var/lib/logwatchd (offsets and the undelivered-alert
# outbox), /var/log/logwatchd and the logwatchd user unless --purge is given.
set -eu

PREFIX=/opt/logwatchd
PURGE=no

die() { echo "uninstall.sh: $*" >&2; exit 1; }
say() { echo "uninstall.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=yes; shift ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run as root"

if systemctl cat logwatchd.service >/dev/null 2>&1; then
    systemctl disable --now --quiet logwatchd.service || true
fi
rm -f /etc/systemd/system/logwatchd.service
systemctl daemon-reload
systemctl reset-failed logwatchd.service 2>/dev/null || true

# Only remove PREFIX if it is the virtualenv we made, never an arbitrary directory.
if [ -x "$PREFIX/bin/logwatchd" ] && [ -f "$PREFIX/pyvenv.cfg" ]; then
    rm -rf "$PREFIX"
    say "removed $PREFIX"
fi
rm -f /usr/lib/sysusers.d/logwatchd.conf

if [ "$PURGE" = yes ]; then
    rm -rf /etc/logwatchd /var/lib/logwatchd /var/log/logwatchd /etc/systemd/system/logwatchd.service.d
    if id logwatchd >/dev/null 2>&1; then
        userdel logwatchd 2>/dev/null || say "could not remove user logwatchd (userdel missing?)"
    fi
    say "purged configuration, state, alerts and the logwatchd user"
else
    say "kept /etc/logwatchd, /var/lib/logwatchd and /var/log/logwatchd (--purge removes them)"
fi
