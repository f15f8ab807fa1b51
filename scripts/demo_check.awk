# demo_check.awk - scripts/demo.sh's check: what the demo's workers were admitted, against what
# the limits allow over the time they ran, as a PASS/FAIL table; exit 0 only if every row passes.
#
#   awk -v pk="RATE_N PERIOD_NS BURST" -v gl="RATE_N PERIOD_NS BURST" -v keys=K \
#       -f demo_check.awk WORKER_OUTPUT...
#
# pk and gl are the limits of the limiters per_key and host as the arena holds them (shmctl
# --json limiters); keys is how many keys "user:0".."user:K-1" the workers used. Each worker
# output (examples/demo_worker.c) has lines
#   key user:N per_key P admitted A
#   total admitted A per_key P attempts T elapsed_ns E start_ns S end_ns F
# P counts what per_key admitted for the key, whatever host then said: that is what the per-key
# limit bounds (counting A there, requests both limiters admitted, could hardly ever fail). A
# summed over every key is everything host admitted. A GCRA limiter of N per P ns with burst B
# admits at most B + floor(N * elapsed / P) over any span, whatever the state it starts in; the
# span is from the first worker's start to the last one's end, on the arena clock.
$1 == "key" {
        if ($3 != "per_key" || $5 != "admitted") {
                print "demo_check: malformed line: " $0
                bad++
                next
        }
        pkadm[$2] += $4
        both[$2] += $6
}
$1 == "total" {
        for (i = 2; i < NF; i += 2) f[$i] = $(i + 1)
        total += f["admitted"]
        total_pk += f["per_key"]
        attempts += f["attempts"]
        if (start == "" || f["start_ns"] < start) start = f["start_ns"]
        if (end == "" || f["end_ns"] > end) end = f["end_ns"]
        workers++
}
function bound(lim, el_ns,  v) {
        split(lim, v, " ")
        return v[3] + int(v[1] * el_ns / v[2])
}
function describe(name, lim,  v) {
        split(lim, v, " ")
        printf "%-8s burst %d + %d per %g s * elapsed\n", name, v[3], v[1], v[2] / 1e9
}
function row(name, n, b,  ok) {
        ok = n <= b
        printf "%-24s %9d %9d  %s\n", name, n, b, ok ? "PASS" : "FAIL"
        if (!ok) fails++
}
END {
        el = end - start
        printf "%d workers, %d attempts, elapsed %.3f s (first start to last end)\n",
                workers, attempts, el / 1e9
        describe("per_key", pk)
        describe("host", gl)
        printf "\n%-24s %9s %9s  %s\n", "limit", "admitted", "bound", "result"
        for (k = 0; k < keys; k++) {
                key = "user:" k
                row("per_key " key, pkadm[key], bound(pk, el))
                if (both[key] > pkadm[key]) {
                        print key ": more admitted by both limiters than by per_key: FAIL"
                        fails++
                }
        }
        row("host (all keys)", total, bound(gl, el))
        if (workers == 0 || total == 0 || bad) {
                print "no worker output, nothing admitted, or malformed output: FAIL"
                fails++
        }
        print ""
        if (fails) print "FAIL: " fails " check(s) failed"
        else print "PASS: every limit held"
        exit (fails > 0)
}
