#!/usr/bin/env bash
# deb_package.sh - proves the Debian package builds from the tree and holds what it must: a tree
# configured for the prefix /usr (BUILD_DIR/deb-package, kept between runs) is built and
# `cpack -G DEB` makes throttle_VERSION_ARCH.deb; `dpkg-deb -c` must list the library (shared,
# soname link, static), the header, the pkg-config and CMake files, /usr/sbin/throttled,
# /usr/bin/shmctl, /etc/throttle/throttled.conf, the systemd unit and the man pages, and nothing
# under /usr/local; its control files must name the shared libraries it needs (dpkg-shlibdeps)
# and the config as a conffile; the unit must start /usr/sbin/throttled on /etc/throttle. cpack
# in BUILD_DIR itself must refuse when that tree has another prefix.
# As root with CI=true (a throwaway machine) the package is installed with dpkg -i, the
# installed programs run, and it is removed (dpkg -r keeps the conffile) and purged (the
# conffile goes); it is never left installed, and a throttle package installed before is never
# touched (that part is then skipped, said so). Otherwise it is extracted (dpkg -x) and checked.
#
#   deb_package.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tree=$build/deb-package
tmp=$(mktemp -d /tmp/thr_deb_package.XXXXXX)
installed_here=0
cleanup() {
        if [ "$installed_here" = 1 ]; then
                dpkg -P throttle >/dev/null 2>&1 || true
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

# The guard: this tree's prefix is not /usr, so cpack must refuse to package it.
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$build/CMakeCache.txt")
if [ "$prefix" != /usr ]; then
        if (cd "$build" && cpack -G DEB -B "$tmp/refused") >"$tmp/refused.log" 2>&1; then
                fail "cpack packaged a tree configured for $prefix"
        fi
        grep -q 'CMAKE_INSTALL_PREFIX=/usr' "$tmp/refused.log" ||
                fail "cpack refused without saying why: $(cat "$tmp/refused.log")"
        echo "cpack refuses the tree configured for $prefix: ok"
fi

echo "== build $tree (prefix /usr) and cpack -G DEB"
cmake -S "$src" -B "$tree" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DTHR_TESTS=OFF -DTHR_BENCH=OFF -DTHR_SANITIZE=OFF -DTHR_TSAN=OFF -DTHR_FUZZ=OFF \
        >"$tmp/configure.log" 2>&1 || {
        cat "$tmp/configure.log"
        fail "the package tree does not configure"
}
cmake --build "$tree" -j2 >"$tmp/build.log" 2>&1 || {
        tail -n 40 "$tmp/build.log"
        fail "the package tree does not build"
}
rm -f "$tree"/throttle_*.deb
(cd "$tree" && cpack -G DEB) >"$tmp/cpack.log" 2>&1 || {
        cat "$tmp/cpack.log"
        fail "cpack -G DEB failed"
}
deb=$(ls "$tree"/throttle_*.deb)
echo "package: $deb"

ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|; s|/$||' | sort >"$tmp/list"
for p in /usr/sbin/throttled /usr/bin/shmctl \
        "/usr/lib/$ma/libthrottle-client.so.0" "/usr/lib/$ma/libthrottle-client.so" \
        "/usr/lib/$ma/libthrottle-client.a" /usr/include/throttle/throttle.h \
        "/usr/lib/$ma/pkgconfig/throttle-client.pc" "/usr/lib/$ma/cmake/throttle/throttleConfig.cmake" \
        "/usr/lib/$ma/cmake/throttle/throttleConfigVersion.cmake" /etc/throttle/throttled.conf \
        /usr/lib/systemd/system/throttled.service /usr/share/man/man8/throttled.8 \
        /usr/share/man/man8/shmctl.8 /usr/share/man/man5/throttled.conf.5 \
        /usr/share/man/man7/throttle.7 /usr/share/man/man3/thr_limiter_try.3; do
        grep -qxF "$p" "$tmp/list" || fail "the package lacks $p"
done
grep -q "^/usr/lib/$ma/libthrottle-client\.so\.0\.[0-9.]*$" "$tmp/list" ||
        fail "the package lacks the shared library itself"
grep -q '^/usr/local' "$tmp/list" && fail "the package installs under /usr/local"
echo "contents: $(grep -vc '/$' "$tmp/list") entries, every expected path present"

dpkg-deb -e "$deb" "$tmp/control"
depends=$(sed -n 's/^Depends: //p' "$tmp/control/control")
echo "Depends: $depends"
for lib in libc6 libhugetlbfs0 libinih1 liburcu8 libsystemd0; do
        [[ ", $depends," == *", $lib "* || ", $depends," == *", $lib,"* ]] ||
                fail "Depends lacks $lib"
done
grep -qxF /etc/throttle/throttled.conf "$tmp/control/conffiles" ||
        fail "/etc/throttle/throttled.conf is not a conffile"
grep -qx 'activate-noawait ldconfig' "$tmp/control/triggers" || fail "no ldconfig trigger"

dpkg-deb -x "$deb" "$tmp/x"
unit=$tmp/x/usr/lib/systemd/system/throttled.service
grep -qxF 'ExecStart=/usr/sbin/throttled -c /etc/throttle/throttled.conf' "$unit" ||
        fail "the packaged unit does not start /usr/sbin/throttled on /etc/throttle"

if [ "$(id -u)" = 0 ] && [ "${CI:-}" = true ]; then
        status=$(dpkg-query -W -f='${Status}' throttle 2>/dev/null || true)
        if [ -n "$status" ] && [[ "$status" != *" not-installed" ]]; then
                echo "SKIPPED dpkg -i: a throttle package is on this machine ($status): left alone"
        else
                echo "== dpkg -i (root, CI=true)"
                installed_here=1
                dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || {
                        cat "$tmp/dpkg.log"
                        fail "dpkg -i failed"
                }
                env -u LD_LIBRARY_PATH /usr/sbin/throttled --help >/dev/null ||
                        fail "/usr/sbin/throttled --help failed"
                env -u LD_LIBRARY_PATH /usr/bin/shmctl --help >/dev/null ||
                        fail "/usr/bin/shmctl --help failed"
                /usr/sbin/throttled --check || fail "the installed config does not validate"
                # captured first: under pipefail, grep -q leaving at its first match
                # kills ldconfig -p with SIGPIPE and fails the pipeline (seen in CI)
                cache=$(ldconfig -p)
                grep -q 'libthrottle-client\.so\.0 ' <<<"$cache" ||
                        fail "ldconfig does not know libthrottle-client.so.0"
                dpkg -r throttle >>"$tmp/dpkg.log" 2>&1 || fail "dpkg -r failed"
                [ ! -e /usr/sbin/throttled ] || fail "dpkg -r left /usr/sbin/throttled"
                [ -f /etc/throttle/throttled.conf ] || fail "dpkg -r removed the conffile"
                dpkg -P throttle >>"$tmp/dpkg.log" 2>&1 || fail "dpkg -P failed"
                installed_here=0
                [ ! -e /etc/throttle ] || fail "dpkg -P left /etc/throttle"
                echo "installed, ran, removed (conffile kept) and purged"
        fi
else
        echo "== dpkg -x (not root with CI=true: nothing installed)"
        env -u LD_LIBRARY_PATH "$tmp/x/usr/sbin/throttled" --help >/dev/null ||
                fail "the packaged throttled --help failed"
        env -u LD_LIBRARY_PATH "$tmp/x/usr/bin/shmctl" --help >/dev/null ||
                fail "the packaged shmctl --help failed"
        "$tmp/x/usr/sbin/throttled" -c "$tmp/x/etc/throttle/throttled.conf" --check ||
                fail "the packaged config does not validate"
fi
echo "PASS: $(basename "$deb")"
