#!/usr/bin/env bash
# setup_sandbox.sh - proves what scripts/setup.sh changes on a host, run in a sandbox: stub
# package, service and mount commands that only log, and stand-ins for the 2 MiB pool's sysfs
# directory, /proc/mounts and the mount point. A first run on a host without anything installs
# the missing packages, stops and disables the redis-server and prometheus it installed, writes 64 to the 2 MiB
# pool's sysfs file, mounts one hugetlbfs of 2 MiB pages (not world-writable), and prints a
# "changed:" line for each; it never runs hugeadm --create-global-mounts and never writes
# /proc/sys/vm/nr_hugepages. A second run changes nothing and says so.
#
#   setup_sandbox.sh SOURCE_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
sb=$(mktemp -d /tmp/thr_setup.XXXXXX)
trap 'rm -rf "$sb"' EXIT
mkdir -p "$sb/bin" "$sb/sys" "$sb/mnt"
log=$sb/calls.log
: >"$log"

# Each stub logs its name and arguments.
for cmd in apt-get systemctl service update-rc.d hugeadm sudo; do
        printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$cmd" "$log" >"$sb/bin/$cmd"
done
printf '#!/bin/sh\nshift\nexec "$@"\n' >"$sb/bin/sudo" # as_root when not root: just run it
# mount: logs, and makes the mount appear in the stand-in /proc/mounts
cat >"$sb/bin/mount" <<STUB
#!/bin/sh
echo "mount \$*" >>"$log"
for last; do :; done
echo "none \$last hugetlbfs rw,relatime 0 0" >>"$sb/mounts"
STUB
# dpkg-query: every package installed except those in \$MISSING
cat >"$sb/bin/dpkg-query" <<'STUB'
#!/bin/sh
shift 2
for p; do
        case " $MISSING " in
        *" $p "*) printf '%s=not-installed ' "$p" ;;
        *) printf '%s=installed ' "$p" ;;
        esac
done
STUB
chmod +x "$sb"/bin/*
echo 0 >"$sb/sys/nr_hugepages"
echo "proc /proc proc rw 0 0" >"$sb/mounts"

run() {
        PATH="$sb/bin:$PATH" THR_SETUP_SYSFS="$sb/sys" THR_SETUP_MOUNTS="$sb/mounts" \
                THR_SETUP_MOUNT="$sb/mnt/pagesize-2MB" "$src/scripts/setup.sh" "$@"
}

fail() {
        echo "setup_sandbox: $*"
        echo "--- output"
        cat "$sb/out"
        echo "--- calls"
        cat "$log"
        exit 1
}

# Statically: the script names neither of the two system-wide knobs it must not touch.
grep -n -- '--create-global-mounts\|/proc/sys/vm/nr_hugepages' "$src/scripts/setup.sh" |
        grep -v '^[0-9]*:#' && fail "setup.sh still uses a system-wide hugepage knob" || true

MISSING="redis-server valgrind prometheus" run >"$sb/out" 2>&1 || fail "first run failed"
grep -q '^apt-get .*install .*redis-server valgrind prometheus' "$log" || fail "packages not installed"
grep -q '^setup: changed: installed packages: redis-server valgrind prometheus' "$sb/out" ||
        fail "the installation is not reported"
grep -q 'redis-server' <(grep -E '^(systemctl .*disable|service redis-server stop)' "$log") ||
        fail "the redis-server it installed was left running or enabled"
grep -q '^setup: changed: .*redis-server' "$sb/out" || fail "the redis change is not reported"
grep -q 'prometheus' <(grep -E '^(systemctl .*disable|service prometheus stop)' "$log") ||
        fail "the prometheus it installed was left running or enabled"
[ "$(cat "$sb/sys/nr_hugepages")" = 64 ] || fail "the 2 MiB pool was not set in sysfs"
grep -q '^setup: changed: 2 MiB hugepage pool: 0 -> 64 pages' "$sb/out" ||
        fail "the pool change is not reported"
grep -q -- '--create-global-mounts' "$log" && fail "hugeadm --create-global-mounts was run"
grep -q '^hugeadm' "$log" && fail "hugeadm was run"
m=$(grep '^mount ' "$log") || fail "nothing was mounted"
[ "$(grep -c '^mount ' "$log")" -eq 1 ] || fail "more than one mount"
[[ "$m" == *"-t hugetlbfs"* && "$m" == *"pagesize=2M"* && "$m" == *"$sb/mnt/pagesize-2MB" ]] ||
        fail "not one 2 MiB hugetlbfs mount: $m"
[[ "$m" == *"mode=0755"* ]] || fail "the mount is not mode 0755: $m"
grep -q '^setup: changed: mounted hugetlbfs' "$sb/out" || fail "the mount is not reported"
grep -q '^setup: changed: created the directory' "$sb/out" || fail "the mkdir is not reported"
echo "setup_sandbox: first run: packages, redis quieted, sysfs pool, one 0755 2 MiB mount"

: >"$log"
MISSING="" run >"$sb/out" 2>&1 || fail "second run failed"
grep -q 'changed:' "$sb/out" && fail "a second run changed something"
[ ! -s "$log" ] || fail "a second run ran commands"
echo "setup_sandbox: second run: nothing changed"

: >"$log"
rm -rf "$sb/mnt/pagesize-2MB"
echo "proc /proc proc rw 0 0" >"$sb/mounts"
MISSING="" run --no-hugepages --hugetlbfs-group root >"$sb/out" 2>&1 || fail "--no-hugepages"
grep -q '^mount' "$log" && fail "--no-hugepages mounted"
MISSING="" run --hugetlbfs-group root >"$sb/out" 2>&1 || fail "--hugetlbfs-group run failed"
grep -q "^mount .*gid=0,mode=1770" "$log" || fail "--hugetlbfs-group root: not gid 0, mode 1770"
echo "setup_sandbox: --hugetlbfs-group mounts 1770 for the group; every case as expected"
