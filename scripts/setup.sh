#!/usr/bin/env bash
# setup.sh - install what throttle needs to build, test and run on Debian 12, and reserve
# hugepages for its arenas.
#
#   scripts/setup.sh [--no-hugepages]
#
# Idempotent: packages already installed are not touched (one dpkg-query, no apt-get at all), a
# pool and a mount already in place are left alone, so a rerun takes well under a second.
# Hugepages are best effort: when the pool or the mount cannot be set up (a container without
# the right to write /proc/sys, a kernel without hugetlbfs) it prints a NOTICE and carries on;
# throttled then falls back to /dev/shm and the tests skip their hugepage cases with a reason.
set -euo pipefail

PACKAGES=(build-essential cmake pkg-config liburcu-dev libhugetlbfs-dev libhugetlbfs-bin
        libcriterion-dev libinih-dev libseccomp-dev libmicrohttpd-dev libhiredis-dev
        redis-server gnuplot-nox valgrind clang libclang-rt-14-dev)
HUGE_PAGES=64 # 2 MiB pages: 128 MiB, room for the demo's arena and the tests' arenas
HUGE_MOUNT=/var/lib/hugetlbfs/global/pagesize-2MB
HUGE_SYSFS=/sys/kernel/mm/hugepages/hugepages-2048kB

usage() {
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

say() { echo "setup: $*"; }
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
        say "packages installed"
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
        if command -v hugeadm >/dev/null 2>&1; then
                as_root hugeadm --pool-pages-min "2MB:$HUGE_PAGES" >/dev/null 2>&1 || true
        fi
        if [ "$(pool_pages)" -lt "$HUGE_PAGES" ] && [ -w "$HUGE_SYSFS/nr_hugepages" ]; then
                echo "$HUGE_PAGES" >"$HUGE_SYSFS/nr_hugepages" 2>/dev/null || true
        fi
        if [ "$(pool_pages)" -lt "$HUGE_PAGES" ] && [ -w /proc/sys/vm/nr_hugepages ]; then
                echo "$HUGE_PAGES" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
        fi
        have=$(pool_pages)
        if [ "$have" -ge "$HUGE_PAGES" ]; then
                say "hugepage pool: reserved $have x 2 MiB pages"
        else
                notice "could reserve only $have of $HUGE_PAGES 2 MiB hugepages" \
                        "(arenas fall back to /dev/shm; hugepage tests are skipped)"
        fi
}

mount_hugetlbfs() {
        if grep -qs " $HUGE_MOUNT hugetlbfs " /proc/mounts; then
                say "hugetlbfs already mounted on $HUGE_MOUNT"
                return 0
        fi
        if command -v hugeadm >/dev/null 2>&1; then
                as_root hugeadm --create-global-mounts >/dev/null 2>&1 || true
        fi
        if ! grep -qs " $HUGE_MOUNT hugetlbfs " /proc/mounts; then
                as_root mkdir -p "$HUGE_MOUNT" 2>/dev/null || true
                as_root mount -t hugetlbfs -o pagesize=2M none "$HUGE_MOUNT" 2>/dev/null || true
        fi
        if grep -qs " $HUGE_MOUNT hugetlbfs " /proc/mounts; then
                say "mounted hugetlbfs on $HUGE_MOUNT"
        else
                notice "could not mount hugetlbfs on $HUGE_MOUNT" \
                        "(arenas fall back to /dev/shm; hugepage tests are skipped)"
        fi
}

main() {
        local hugepages=1
        while [ $# -gt 0 ]; do
                case "$1" in
                --no-hugepages) hugepages=0 ;;
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
                mount_hugetlbfs
        else
                say "hugepages skipped (--no-hugepages)"
        fi
}

main "$@"
