#!/usr/bin/env bash
# http_curl.sh - throttled's HTTP API through the curl CLI, as doc/http-api.md shows it: a
# throttled with a GCRA limiter (burst 2) and a semaphore on a private arena (manual clock) and a
# free loopback port; three tries of one key admit two and deny the third (200, admitted false,
# with Retry-After); a lease is taken (201), heartbeated and released; a breaker's call is allowed
# and its failure reported by the ticket, which trips it (then 429 with Retry-After); an unknown
# limiter is 404 with a JSON error. Exits 77 (skipped, with the reason) when curl is not installed: the Debian
# package curl has it, and scripts/setup.sh installs it.
#
#   http_curl.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
if ! command -v curl >/dev/null 2>&1; then
        echo "http_curl: skipped: curl is not installed (Debian package curl; scripts/setup.sh" \
                "installs it)"
        exit 77
fi
dir=$(mktemp -d /dev/shm/thrtest.curl.XXXXXX)
name=curl$$
pid=
cleanup() {
        if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
        rm -rf "$dir"
}
trap cleanup EXIT
fail() {
        echo "http_curl: $*"
        echo "--- daemon log"
        cat "$dir/daemon.log"
        exit 1
}

# A random port; one in use makes throttled exit 69 (EX_UNAVAILABLE) and another is tried.
for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 30000))
        cat >"$dir/t.conf" <<CONF
[arena]
name = $name
dir = $dir
hugepages = off
clock = manual
max_limiters = 8
max_readers = 64
spare = 1MiB
[daemon]
heartbeat_ms = 20
metrics =
http = 127.0.0.1:$port
[api]
rate = 1/s
burst = 2
capacity = 64
[conn]
kind = semaphore
max = 2
capacity = 64
[pay]
kind = breaker
failures = 1
cooldown = 30s
capacity = 64
CONF
        "$build/daemon/throttled" -c "$dir/t.conf" 2>>"$dir/daemon.log" &
        pid=$!
        for _ in $(seq 200); do
                if grep -q "http: serving" "$dir/daemon.log"; then
                        break 2
                fi
                if ! kill -0 "$pid" 2>/dev/null; then
                        wait "$pid" || true
                        pid=
                        continue 2
                fi
                sleep 0.05
        done
        fail "throttled did not serve the HTTP API"
done
[ -n "$pid" ] || fail "no free port found ($attempt attempts)"
url=http://127.0.0.1:$port/v1

try() { curl -sS -i -X POST -H 'Content-Type: application/json' -d '{"key":"alice"}' "$url/limiters/api/try"; }
for i in 1 2; do
        out=$(try) || fail "try $i: curl failed"
        grep -q '^HTTP/1.1 200' <<<"$out" && grep -q '"admitted":true' <<<"$out" ||
                fail "try $i was not admitted: $out"
done
out=$(try)
grep -q '^HTTP/1.1 200' <<<"$out" && grep -q '"admitted":false' <<<"$out" &&
        grep -qi '^Retry-After: 1' <<<"$out" || fail "third try not denied with Retry-After: $out"

out=$(curl -sS -w '\n%{http_code}' -X POST -d '{"key":"db","amount":2,"ttl_ms":30000}' \
        "$url/limiters/conn/leases")
[ "$(tail -1 <<<"$out")" = 201 ] || fail "lease: $out"
lease=$(sed -n 's/.*"lease":"\([0-9a-f]\{32\}\)".*/\1/p' <<<"$out")
[ -n "$lease" ] || fail "no lease id in: $out"
out=$(curl -sS -X POST -d '{"ttl_ms":60000}' "$url/leases/$lease/heartbeat")
grep -q '"expires_in_ms":60000' <<<"$out" || fail "heartbeat: $out"
out=$(curl -sS "$url/limiters/conn/sem?key=db")
grep -q '"held":2' <<<"$out" || fail "sem stat: $out"
out=$(curl -sS -X DELETE "$url/leases/$lease")
grep -q '"released":true' <<<"$out" || fail "release: $out"

out=$(curl -sS -X POST -d '{"key":"card-api"}' "$url/limiters/pay/breaker/allow")
ticket=$(sed -n 's/.*"ticket":"\([0-9a-f]\{32\}\)".*/\1/p' <<<"$out")
[ -n "$ticket" ] && grep -q '"state":"closed"' <<<"$out" || fail "breaker allow: $out"
out=$(curl -sS -X POST -d "{\"ticket\":\"$ticket\",\"outcome\":\"failure\"}" \
        "$url/limiters/pay/breaker/report")
grep -q '"counted":true' <<<"$out" && grep -q '"state":"open"' <<<"$out" ||
        fail "breaker report: $out"
out=$(curl -sS -i -X POST -d '{"key":"card-api"}' "$url/limiters/pay/breaker/allow")
grep -q '^HTTP/1.1 429' <<<"$out" && grep -qi '^Retry-After: 3[01]' <<<"$out" &&
        grep -q '"error":"EAGAIN"' <<<"$out" || fail "open breaker not refused: $out"
out=$(curl -sS "$url/limiters/pay/breaker?key=card-api")
grep -q '"state":"open"' <<<"$out" || fail "breaker stat: $out"

out=$(curl -sS -w '\n%{http_code}' -X POST -d '{"key":"alice"}' "$url/limiters/nope/try")
[ "$(tail -1 <<<"$out")" = 404 ] && grep -q '"error":"ENOENT"' <<<"$out" || fail "unknown: $out"
echo "http_curl: ok (port $port)"
