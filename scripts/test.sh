#!/usr/bin/env bash
# test.sh - build throttle and run every test: the test command of the README and of CI.
#
#   scripts/test.sh [--quick] [--no-hugepages]
#
# Runs scripts/setup.sh, then for each suite configures and builds a tree and runs its CTest
# tests (Criterion programs and the short stress run):
#   release  build/        -DTHR_WERROR=ON
#   asan     build-asan/   -DTHR_SANITIZE=ON -DTHR_WERROR=ON -DTHR_BENCH=ON (ASan + UBSan)
#   tsan     build-tsan/   -DTHR_TSAN=ON -DTHR_WERROR=ON: stress_threads, stress_peer (peers and
#                          leases) and daemon_threads (the
#                          daemon's main and maintenance threads under 20 reloads), the tests
#                          that are not Criterion programs. Criterion 2.4 cannot start under
#                          TSan: its inheritable arena looks for free address space where TSan
#                          keeps its shadow and aborts with "Could not initialize inheritable
#                          arena" (Snaipe/Criterion#274).
#   fuzz     build-fuzz/   clang -DTHR_FUZZ=ON: the config and HTTP fuzz targets under libFuzzer
#                          with ASan and UBSan for 60 s each, the feedback parsers' for 30 s
#                          (tests/fuzz); only the fuzz targets
#                          are built. Where clang cannot link -fsanitize=fuzzer it is skipped
#                          with a notice (the asan suite's fuzz_config_short and fuzz_http_short,
#                          the same targets over generated files, still run).
# --quick runs the release suite alone; --no-hugepages is passed to setup.sh.
# A tree that fails to configure or build counts as one failed test. The last line is the sum
# over the suites, "N passed, M failed"; the exit status is 0 only if nothing failed.
# Needs no TTY and reads no stdin, so it runs the same under CI.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

passed=0
failed=0
summaries=()

# ASLR with more than 28 random bits breaks the sanitizers' shadow-memory layout on some
# kernels; run sanitized tests with ASLR off there (setarch -R) rather than fail on it.
sanitizer_prefix() {
        local bits
        bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)
        if [ "$bits" -gt 28 ] && setarch "$(uname -m)" -R true 2>/dev/null; then
                echo "setarch $(uname -m) -R"
        fi
}

# record NAME PASSED FAILED NOTE - add one suite's counts to the totals.
record() {
        passed=$((passed + $2))
        failed=$((failed + $3))
        summaries+=("$(printf '%-8s %3d passed, %3d failed%s' "$1" "$2" "$3" "${4:+  ($4)}")")
}

# suite NAME DIR "CMAKE OPTIONS" [CTEST OPTIONS...] - configure, build, test one tree (only the
# target $SUITE_TARGET when it is set).
suite() {
        local name=$1 dir=$2 opts=$3 start=$SECONDS
        shift 3
        local -a cmake_opts prefix
        read -ra cmake_opts <<<"$opts"
        read -ra prefix <<<"$([ "$name" = release ] || sanitizer_prefix)"
        echo
        echo "==== $name: configure and build $dir ($opts)"
        # $SUITE_TARGET unquoted: it may name several targets
        # shellcheck disable=SC2086
        if ! cmake -S . -B "$dir" --log-level=WARNING "${cmake_opts[@]}" ||
                ! cmake --build "$dir" -j2 ${SUITE_TARGET:+--target $SUITE_TARGET}; then
                echo "==== $name: BUILD FAILED"
                record "$name" 0 1 "build failed"
                return 0
        fi
        echo "==== $name: ctest${*:+ $*}"
        local log="$dir/ctest-output.log" rc=0
        (cd "$dir" && "${prefix[@]}" ctest --output-on-failure "$@") 2>&1 | tee "$log" ||
                rc=$?
        local line n_failed n_total
        line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
        if [ -z "$line" ]; then
                echo "==== $name: ctest ran no tests (exit status $rc)"
                record "$name" 0 1 "no tests ran"
                return 0
        fi
        n_failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
        n_total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
        if [ "$rc" -ne 0 ] && [ "$n_failed" -eq 0 ]; then
                n_failed=1 # ctest failed without a failing test (e.g. an error of its own)
        fi
        record "$name" $((n_total - n_failed)) "$n_failed" "$((SECONDS - start)) s"
}

# Whether clang can build a libFuzzer target (Debian: clang and libclang-rt-14-dev).
have_libfuzzer() {
        command -v clang >/dev/null 2>&1 &&
                echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
                clang -x c -fsanitize=fuzzer,address -o /dev/null - >/dev/null 2>&1
}

main() {
        local quick=0
        local -a setup_opts=()
        while [ $# -gt 0 ]; do
                case "$1" in
                --quick) quick=1 ;;
                --no-hugepages) setup_opts+=(--no-hugepages) ;;
                -h | --help)
                        usage
                        exit 0
                        ;;
                *)
                        echo "test.sh: unknown option '$1'" >&2
                        usage >&2
                        exit 2
                        ;;
                esac
                shift
        done
        scripts/setup.sh "${setup_opts[@]}"

        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
        export TSAN_OPTIONS=${TSAN_OPTIONS:-second_deadlock_stack=1:halt_on_error=1}
        # Every option is given, so a tree configured otherwise by hand is put back.
        local common="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHR_WERROR=ON -DTHR_TESTS=ON"
        suite release build "$common -DTHR_SANITIZE=OFF -DTHR_TSAN=OFF -DTHR_BENCH=ON"
        if [ "$quick" -eq 0 ]; then
                suite asan build-asan "$common -DTHR_SANITIZE=ON -DTHR_TSAN=OFF -DTHR_BENCH=ON"
                suite tsan build-tsan "$common -DTHR_SANITIZE=OFF -DTHR_TSAN=ON -DTHR_BENCH=OFF" \
                        -R '^(stress_threads|stress_peer|daemon_threads)$'
                if have_libfuzzer; then
                        SUITE_TARGET="fuzz_config fuzz_http fuzz_feedback" suite fuzz build-fuzz \
                                "-DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
                                -DTHR_WERROR=ON -DTHR_TESTS=OFF -DTHR_BENCH=OFF -DTHR_FUZZ=ON" \
                                -R '^fuzz_(config|http|feedback)_libfuzzer$'
                else
                        echo "test.sh: NOTICE: clang cannot link -fsanitize=fuzzer: the libFuzzer" \
                                "run is skipped (the asan suite ran fuzz_config_short)" >&2
                        summaries+=("fuzz     skipped (no libFuzzer)")
                fi
        fi

        echo
        echo "==== summary"
        printf '%s\n' "${summaries[@]}"
        echo "$passed passed, $failed failed"
        [ "$failed" -eq 0 ]
}

main "$@"
