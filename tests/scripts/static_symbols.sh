#!/usr/bin/env bash
# static_symbols.sh - proves the static libthrottle-client.a exports the API and nothing else
# (issue 13, defect 12): `nm -g --defined-only` on the installed archive lists exactly the names
# of the version script's global: blocks (the shared library's export list), and a program
# defining its own functions named like the library's internals (tests/static_clash.c) links
# with the archive and runs, the library never calling them.
#
#   static_symbols.sh BUILD_DIR SOURCE_DIR CC [FLAGS...]
#   (FLAGS: what the build's objects need at link time, e.g. the sanitizers)
set -euo pipefail
build=$1 src=$2 cc=$3
shift 3
tmp=$(mktemp -d /tmp/thr_static_symbols.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

DESTDIR=$tmp/root cmake --install "$build" --prefix /usr/local >/dev/null
archive=$(find "$tmp/root" -name libthrottle-client.a -print -quit)
[ -n "$archive" ] || fail "no libthrottle-client.a installed"
inc=$(find "$tmp/root" -path '*/include/throttle/throttle.h' -print -quit)
inc=${inc%/throttle/throttle.h}

# The API: the version script's global: names (comments dropped, up to "local:").
sed 's|/\*.*\*/||' "$src/libclient/libthrottle-client.map" |
        awk '/global:/ { g = 1; next } /local:|}/ { g = 0 } g && /;/ { gsub(/[ \t;]/, ""); print }' |
        sort -u >"$tmp/api"
[ -s "$tmp/api" ] || fail "no API names read from the version script"
nm -g --defined-only "$archive" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/exported"
echo "version script: $(wc -l <"$tmp/api") names; archive exports $(wc -l <"$tmp/exported")"
if ! diff -u "$tmp/api" "$tmp/exported" >"$tmp/diff"; then
        echo "--- version script, +++ exported by libthrottle-client.a:"
        head -n 60 "$tmp/diff"
        fail "the static library exports other symbols than the API"
fi

"$cc" "$@" -o "$tmp/static_clash" "$src/tests/static_clash.c" -I"$inc" "$archive" \
        -lhugetlbfs -lpthread 2>"$tmp/link.log" || {
        cat "$tmp/link.log"
        fail "a program with its own shm_arena_find etc. does not link with the archive"
}
"$tmp/static_clash" || fail "static_clash failed"
echo "PASS: libthrottle-client.a exports the API alone"
