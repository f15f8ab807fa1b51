#!/usr/bin/env bash
# python_install.sh - `pip install ./python` works on Debian 12 offline: a venv made by Debian's
# python3 with its site packages (setuptools, wheel), pip install --no-build-isolation --no-index
# of a copy of python/ (the build writes build/ and *.egg-info beside its sources: never into the
# source tree), then the installed package, imported from outside the source tree, makes one
# decision on a real throttled of this build.
#
#   python_install.sh BUILD_DIR SOURCE_DIR
# THROTTLE_LIBRARY, if set, names the library to load (ctest sets it); else BUILD_DIR's.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
export THROTTLE_LIBRARY=${THROTTLE_LIBRARY:-$build/libclient/libthrottle-client.so.0}
fail() { echo "python_install: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d /tmp/pyinstall-XXXXXX)
daemon=
cleanup() {
        if [ -n "$daemon" ]; then
                kill "$daemon" 2>/dev/null || true
                wait "$daemon" 2>/dev/null || true
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT

/usr/bin/python3 -m venv --system-site-packages "$tmp/v" || fail "python3 -m venv (python3-venv)"
cp -r "$src/python" "$tmp/src"
rm -rf "$tmp/src/build" "$tmp/src"/*.egg-info
"$tmp/v/bin/pip" install --no-build-isolation --no-index --no-cache-dir "$tmp/src" \
        >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; fail "pip install"; }

name=pyinst$$
mkdir "$tmp/arena"
cat >"$tmp/throttled.conf" <<CONF
[arena]
name = $name
dir = $tmp/arena
clock = manual
hugepages = off
mode = 0600
max_limiters = 4
max_readers = 16
spare = 1MiB

[daemon]
metrics =

[g]
rate = 10/s
burst = 3
capacity = 16
CONF
"$build/daemon/throttled" -c "$tmp/throttled.conf" >"$tmp/daemon.log" 2>&1 &
daemon=$!

cd / # nothing of the source tree on sys.path
"$tmp/v/bin/python" - "$tmp/arena/throttle.$name" "$tmp/v" <<'PY' ||
import sys, time
arena_path, venv = sys.argv[1], sys.argv[2]
import throttle
assert throttle.__file__.startswith(venv), "not the installed package: " + throttle.__file__
import os
assert os.path.exists(os.path.join(os.path.dirname(throttle.__file__), "py.typed")), "no py.typed"
deadline = time.monotonic() + 10
while True:
    try:
        arena = throttle.Arena(arena_path)
        lim = arena.limiter("g")
        break
    except throttle.ThrottleError as e:
        if time.monotonic() > deadline:
            sys.exit("no arena after 10 s: %s" % e)
        time.sleep(0.02)
d = lim.try_acquire("k")
assert d.admitted and d.remaining == 2 and d.limit == 3, d
print("python_install: installed throttle %s from %s: %r" % (throttle.__version__,
                                                                throttle.__file__, d))
PY
        { cat "$tmp/daemon.log" >&2; fail "the installed package did not decide"; }
