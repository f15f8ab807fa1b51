#!/usr/bin/env bash
# install_rpath.sh - proves that the installed programs start from a prefix the dynamic linker
# does not search: shmctl links libthrottle-client.so and finds it through its RUNPATH
# ($ORIGIN/../lib...), with no LD_LIBRARY_PATH and no ldconfig; throttled starts from sbin.
# The install is staged with DESTDIR in a temporary directory (the config file's place is an
# absolute path fixed at configure time, so a bare --prefix install would write outside it).
#
#   install_rpath.sh BUILD_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d /tmp/thr_install_rpath.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=/opt/throttle-rpath-test

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

DESTDIR=$tmp cmake --install "$build" --prefix "$prefix" >/dev/null
root=$tmp$prefix
shmctl=$root/bin/shmctl
throttled=$root/sbin/throttled
[ -x "$shmctl" ] || fail "no $shmctl"
[ -x "$throttled" ] || fail "no $throttled (throttled is installed to sbin)"

runpath=$(readelf -d "$shmctl" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
echo "shmctl RUNPATH: ${runpath:-none}"
[[ "$runpath" == "\$ORIGIN/../lib"* ]] || fail "shmctl has no RUNPATH \$ORIGIN/../lib..."
[[ "$runpath" != *"$build"* ]] || fail "the installed shmctl still points into the build tree"

# The library must come from the staged prefix, not from a system copy or the build tree.
lib=$(env -u LD_LIBRARY_PATH ldd "$shmctl" | awk '$1 ~ /^libthrottle-client\.so/ { print $3 }')
echo "shmctl loads: ${lib:-not found}"
want=$(find "$root" -name 'libthrottle-client.so.*.*' -print -quit)
if [ -z "$lib" ] || [ "$(readlink -f "$lib")" != "$(readlink -f "$want")" ]; then
        fail "shmctl does not load libthrottle-client from $root"
fi

env -u LD_LIBRARY_PATH "$shmctl" --help >/dev/null || fail "installed shmctl --help failed"
env -u LD_LIBRARY_PATH "$throttled" --help >/dev/null || fail "installed throttled --help failed"
echo "PASS: installed shmctl and throttled start from $prefix without LD_LIBRARY_PATH"
