#!/usr/bin/env bash
# install_consumers.sh - proves an installed throttle can be built against both ways the README
# says: the programs of examples/ are built outside this build, against an install staged in a
# temporary directory, once by a CMake project using find_package(throttle) (tests/consumer:
# throttle::client, and throttle::client-static for the demo worker) and once with the flags of
# pkg-config's throttle-client; then the installed throttled serves an arena and the three demo
# workers (CMake shared, CMake static, pkg-config) are admitted by it.
#
#   install_consumers.sh BUILD_DIR SOURCE_DIR CC [FLAGS...]
#   (FLAGS: what the build's objects need at compile and link time, e.g. the sanitizers)
set -euo pipefail
build=$1 src=$2 cc=$3
shift 3
flags="$*"
strict="-Wall -Wextra -Werror" # the examples must build cleanly outside this build
tmp=$(mktemp -d /tmp/thr_install_consumers.XXXXXX)
trap 'kill -9 "${daemon:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

fail() {
        echo "FAIL: $*" >&2
        [ -f "$tmp/daemon.log" ] && sed 's/^/  daemon: /' "$tmp/daemon.log" >&2
        exit 1
}

prefix=/opt/throttle-consumer-test
DESTDIR=$tmp/root cmake --install "$build" --prefix "$prefix" >/dev/null
pfx=$tmp/root$prefix
libdir=$(dirname "$(find "$pfx" -name libthrottle-client.so -print -quit)")

# find_package(throttle)
echo "== find_package(throttle)"
cmake -S "$src/tests/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$pfx" \
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DTHR_EXAMPLES="$src/examples" \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$strict $flags" \
        -DCMAKE_EXE_LINKER_FLAGS="$flags" \
        >"$tmp/cmake.log" 2>&1 || {
        cat "$tmp/cmake.log"
        fail "the consumer project does not configure"
}
grep -F "throttle 0.1.0 from $libdir/cmake/throttle" "$tmp/cmake.log" ||
        fail "find_package did not find the staged install: $(grep 'throttle ' "$tmp/cmake.log")"
cmake --build "$tmp/cmake" -j2 >"$tmp/build.log" 2>&1 || {
        cat "$tmp/build.log"
        fail "the examples do not build with find_package(throttle)"
}
dynsyms=$(nm -D "$tmp/cmake/demo_worker_static" 2>/dev/null || true)
grep -q 'thr_arena_open' <<<"$dynsyms" &&
        fail "demo_worker_static links libthrottle-client.so, not the archive"

# pkg-config
echo "== pkg-config throttle-client"
export PKG_CONFIG_PATH=$libdir/pkgconfig
pc_cflags=$(pkg-config --cflags throttle-client) || fail "pkg-config does not find throttle-client"
pc_libs=$(pkg-config --libs throttle-client)
pc_libdir=$(pkg-config --variable=libdir throttle-client)
echo "cflags: $pc_cflags  libs: $pc_libs"
[ "$(readlink -f "$pc_libdir")" = "$(readlink -f "$libdir")" ] ||
        fail "the .pc file's libdir $pc_libdir is not the staged $libdir"
mkdir "$tmp/pc"
for ex in demo_worker serial_downstream sem_workers budget_interp llm_tenants api_pool; do
        # shellcheck disable=SC2086 # the flags are words
        "$cc" $strict $flags $pc_cflags -o "$tmp/pc/$ex" "$src/examples/$ex.c" $pc_libs -lpthread \
                -Wl,-rpath,"$pc_libdir" || fail "$ex does not build with pkg-config's flags"
done

# The installed daemon and the three demo workers on an arena of their own.
echo "== run"
cat >"$tmp/t.conf" <<CONF
[arena]
name = consumers
hugepages = off
dir = $tmp
[daemon]
metrics =
[per_key]
rate = 100/s
burst = 10
capacity = 256
[host]
rate = 1000/s
burst = 100
capacity = 16
CONF
env -u LD_LIBRARY_PATH "$pfx/sbin/throttled" -c "$tmp/t.conf" 2>"$tmp/daemon.log" &
daemon=$!
for _ in $(seq 200); do [ -e "$tmp/throttle.consumers" ] && break; sleep 0.05; done
[ -e "$tmp/throttle.consumers" ] || fail "the installed throttled made no arena"
for w in cmake/demo_worker cmake/demo_worker_static pc/demo_worker; do
        out=$(env -u LD_LIBRARY_PATH "$tmp/$w" -a "$tmp/throttle.consumers" -s 1 -k 5) ||
                fail "$w failed: $out"
        total=$(grep '^total admitted' <<<"$out") || fail "$w printed no total: $out"
        echo "$w: $total"
        if ! [[ "$total" =~ ^total\ admitted\ ([0-9]+) ]] || [ "${BASH_REMATCH[1]}" -eq 0 ]; then
                fail "$w was admitted nothing"
        fi
done
kill -TERM "$daemon"
wait "$daemon" || fail "throttled exited $? on SIGTERM"
daemon=
echo "PASS: examples built with find_package and with pkg-config against the staged install"
