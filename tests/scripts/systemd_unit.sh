#!/usr/bin/env bash
# systemd_unit.sh - proves the installed systemd unit is one systemd accepts and the one the
# daemon needs: `cmake --install` (staged with DESTDIR) puts throttled.service under
# lib/systemd/system; it is Type=notify, starts and reloads (`throttled --reload`) the installed
# throttled on the configured config file, keeps the hardening that leaves /dev/shm and the
# hugetlbfs mount writable; `systemd-analyze verify` reports nothing (its man pages are found in
# the staged install) and `systemd-analyze security --offline` rates its exposure at most 4.0.
# Skipped (77) where systemd-analyze is missing.
#
#   systemd_unit.sh BUILD_DIR SBINDIR CONF UNITDIR
#   (SBINDIR, CONF: the configured absolute paths; UNITDIR: relative to the prefix)
set -euo pipefail
build=$1 sbindir=$2 conf=$3 unitdir=$4
if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "SKIP: systemd-analyze is not installed (Debian package systemd)"
        exit 77
fi
tmp=$(mktemp -d /tmp/thr_systemd_unit.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$build/CMakeCache.txt")

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

DESTDIR=$tmp/root cmake --install "$build" >/dev/null
unit=$tmp/root$prefix/$unitdir/throttled.service
[ -f "$unit" ] || fail "no unit at $prefix/$unitdir/throttled.service"

has() { # has LINE - the unit has this exact line
        grep -qxF -- "$1" "$unit" || fail "the unit lacks the line: $1"
}
has "Type=notify"
has "ExecStart=$sbindir/throttled -c $conf"
has "ExecReload=$sbindir/throttled --reload -c $conf"
has "NoNewPrivileges=yes"
has "ProtectSystem=strict"
has "ProtectHome=yes"
has "PrivateTmp=yes"
rw=$(sed -n 's/^ReadWritePaths=//p' "$unit")
[[ " $rw " == *" /dev/shm "* ]] || fail "ReadWritePaths does not hold /dev/shm: $rw"
[[ " $rw " == *" -/var/lib/hugetlbfs "* ]] ||
        fail "ReadWritePaths does not hold the hugetlbfs mount: $rw"

# verify checks that the programs exist: point the unit at the staged ones (same file name).
mkdir "$tmp/unit"
sed "s|=$sbindir/throttled |=$tmp/root$sbindir/throttled |" "$unit" >"$tmp/unit/throttled.service"
out=$(MANPATH=$tmp/root$prefix/share/man systemd-analyze verify "$tmp/unit/throttled.service" 2>&1) ||
        fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify complained: $out"
echo "systemd-analyze verify: ok"

sec=$(systemd-analyze security --offline=yes --threshold=40 "$tmp/unit/throttled.service" 2>&1) ||
        fail "exposure above 4.0: $(tail -n 1 <<<"$sec")"
tail -n 1 <<<"$sec"
echo "PASS: throttled.service"
