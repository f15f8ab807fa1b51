#!/usr/bin/env bash
# setup.sh - install what throttle needs to build, test and run on Debian 12, and reserve
# hugepages for its arenas.
#
#   scripts/setup.sh [--no-hugepages] [--hugetlbfs-group GROUP]
#
# Idempotent: packages already installed are not touched (one dpkg-query, no apt-get at all), a
# pool and a mount already in place are left alone, so a rerun takes well under a second and
# changes nothing. Every change it makes to the system is printed on a line "setup: changed: ...":
#   - the missing Debian packages, installed with apt-get. Among them redis-server, which only
#     the benchmarks use (bench_scale starts its own redis-server on a free loopback port), and
#     prometheus, whose promtool the tests use to validate throttled's /metrics: Debian starts
#     both and enables them at boot on installation, so when this script installed one, it
#     stops it and disables it at boot again (one installed before is left alone);
#   - the 2 MiB hugepage pool, raised to 64 pages (128 MiB) by writing its sysfs file,
#     /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages: never /proc/sys/vm/nr_hugepages,
#     which sizes the pool of the *default* page size (1 GiB pages with default_hugepagesz=1G);
#   - one hugetlbfs mount, of 2 MiB pages only, on /var/lib/hugetlbfs/global/pagesize-2MB (where
#     libhugetlbfs looks), owned by root and mode 0755: root's daemon creates arenas there and
#     anyone may open them as their mode allows. --hugetlbfs-group GROUP mounts it group-writable
#     (gid GROUP, mode 1770) for a daemon run as a member of GROUP. Never world-writable, and no
#     mount for other page sizes (hugeadm --create-global-mounts made world-writable mounts for
#     every size, 1 GiB included). The pool and the mount do not survive a reboot.
# Hugepages are best effort: when the pool or the mount cannot be set up (a container without
# the right to write sysfs, a kernel without hugetlbfs) it prints a NOTICE and carries on;
# throttled then falls back to /dev/shm and the tests skip their hugepage cases with a reason.
# (THR_SETUP_SYSFS, THR_SETUP_MOUNTS and THR_SETUP_MOUNT replace the three paths, for its test.)
set -euo pipefail

PACKAGES=(build-essential cmake pkg-config liburcu-dev libhugetlbfs-dev libhugetlbfs-bin
        libcriterion-dev libinih-dev libseccomp-dev libmicrohttpd-dev libhiredis-dev
        redis-server gnuplot-nox valgrind clang libclang-rt-14-dev libsystemd-dev dpkg-dev
        prometheus libjansson-dev curl python3-pytest python3-venv python3-setuptools
        python3-wheel mypy)
HUGE_PAGES=64 # 2 MiB pages: 128 MiB, room for the demo's arena and the tests' arenas
HUGE_SYSFS=${THR_SETUP_SYSFS:-/sys/kernel/mm/hugepages/hugepages-2048kB}
MOUNTS=${THR_SETUP_MOUNTS:-/proc/mounts}
HUGE_MOUNT=${THR_SETUP_MOUNT:-/var/lib/hugetlbfs/global/pagesize-2MB}

usage() {
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

say() { echo "setup: $*"; }
changed() { echo "setup: changed: $*"; }
notice() { echo "setup: NOTICE: $*" >&2; }

as_root() {
        if [ "$(id -u)" -eq 0 ]; then
                "$@"
        elif command -v sudo >/dev/null 2>&1; then
                sudo "$@"
        else
                echo "setup: need root for: $*" >&2
                return 1
        fi
}

# Service $1 (redis-server, prometheus) was installed by this run: Debian started it and enabled
# it at boot. Undo both.
quiet_service() {
        local svc=$1
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
                if as_root systemctl disable --now "$svc.service" >/dev/null 2>&1; then
                        changed "stopped $svc and disabled it at boot" \
                                "(systemctl disable --now $svc.service)"
                        return 0
                fi
        else
                if as_root service "$svc" stop >/dev/null 2>&1; then
                        changed "stopped $svc (service $svc stop)"
                fi
                if command -v systemctl >/dev/null 2>&1 &&
                        as_root systemctl disable "$svc.service" >/dev/null 2>&1; then
                        changed "disabled $svc at boot (systemctl disable)"
                fi
                if command -v update-rc.d >/dev/null 2>&1 &&
                        as_root update-rc.d "$svc" disable >/dev/null 2>&1; then
                        changed "disabled $svc's init script (update-rc.d disable)"
                fi
                return 0
        fi
        notice "could not stop and disable $svc.service: it may run as a system" \
                "service; throttle does not need it (systemctl disable --now $svc)"
}

install_packages() {
        local missing=() installed p
        installed=" $(dpkg-query -W -f='${Package}=${db:Status-Status} ' "${PACKAGES[@]}" \
                2>/dev/null || true)"
        for p in "${PACKAGES[@]}"; do
                [[ "$installed" == *" $p=installed "* ]] || missing+=("$p")
        done
        if [ ${#missing[@]} -eq 0 ]; then
                say "all ${#PACKAGES[@]} packages already installed"
                return 0
        fi
        say "installing ${#missing[@]} package(s): ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}"
        changed "installed packages: ${missing[*]}"
        local svc
        for svc in redis-server prometheus; do
                if [[ " ${missing[*]} " == *" $svc "* ]]; then
                        quiet_service "$svc"
                fi
        done
}

# Pages of 2 MiB in the pool now (0 when the kernel has no such pool).
pool_pages() {
        cat "$HUGE_SYSFS/nr_hugepages" 2>/dev/null || echo 0
}

reserve_pool() {
        local have
        have=$(pool_pages)
        if [ "$have" -ge "$HUGE_PAGES" ]; then
                say "hugepage pool: $have x 2 MiB pages already reserved"
                return 0
        fi
        if [ -e "$HUGE_SYSFS/nr_hugepages" ]; then
                echo "$HUGE_PAGES" | as_root tee "$HUGE_SYSFS/nr_hugepages" >/dev/null 2>&1 ||
                        true
        fi
        local now
        now=$(pool_pages)
        if [ "$now" -ne "$have" ]; then
                changed "2 MiB hugepage pool: $have -> $now pages" \
                        "(wrote $HUGE_PAGES to $HUGE_SYSFS/nr_hugepages)"
        fi
        if [ "$now" -lt "$HUGE_PAGES" ]; then
                notice "could reserve only $now of $HUGE_PAGES 2 MiB hugepages" \
                        "(arenas fall back to /dev/shm; hugepage tests are skipped)"
        fi
}

mounted() {
        grep -qs " $HUGE_MOUNT hugetlbfs " "$MOUNTS"
}

mount_hugetlbfs() {
        local group=$1 opts=pagesize=2M,mode=0755 what="mode 0755, root"
        if mounted; then
                say "hugetlbfs already mounted on $HUGE_MOUNT"
                return 0
        fi
        if [ -n "$group" ]; then
                local gid
                gid=$(getent group "$group" | cut -d: -f3) || true
                if [ -z "$gid" ]; then
                        notice "no group '$group': hugetlbfs not mounted"
                        return 0
                fi
                opts="pagesize=2M,gid=$gid,mode=1770"
                what="mode 1770, group $group"
        fi
        if [ ! -d "$HUGE_MOUNT" ] && as_root mkdir -p "$HUGE_MOUNT" 2>/dev/null; then
                changed "created the directory $HUGE_MOUNT"
        fi
        as_root mount -t hugetlbfs -o "$opts" none "$HUGE_MOUNT" 2>/dev/null || true
        if mounted; then
                changed "mounted hugetlbfs (2 MiB pages, $what) on $HUGE_MOUNT" \
                        "(mount -t hugetlbfs -o $opts none $HUGE_MOUNT)"
        else
                notice "could not mount hugetlbfs on $HUGE_MOUNT" \
                        "(arenas fall back to /dev/shm; hugepage tests are skipped)"
        fi
}

main() {
        local hugepages=1 group=
        while [ $# -gt 0 ]; do
                case "$1" in
                --no-hugepages) hugepages=0 ;;
                --hugetlbfs-group)
                        group=${2:?--hugetlbfs-group needs a group}
                        shift
                        ;;
                -h | --help)
                        usage
                        exit 0
                        ;;
                *)
                        echo "setup: unknown option '$1'" >&2
                        usage >&2
                        exit 2
                        ;;
                esac
                shift
        done
        install_packages
        if [ "$hugepages" -eq 1 ]; then
                reserve_pool
                mount_hugetlbfs "$group"
        else
                say "hugepages skipped (--no-hugepages)"
        fi
}

main "$@"
