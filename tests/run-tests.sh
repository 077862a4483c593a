#!/bin/bash
# The test runner: `make test` builds everything, then calls this.
#
# Runs, in order, each counted as one test (pass, fail or skip):
#   1. every build/tests/test-* program (unit, model and crash tests)
#   2. the same programs from the ASan+UBSan build, build/asan/tests/
#   3. every tests/integration/*.sh script, run with sh
#   4. a short fuzz run, tests/fuzz/run-fuzz.sh short, if that script exists
#
# Every test runs from the repository root with these variables set:
#   BUILD       absolute path of the build folder (build/)
#   VDISK       $BUILD/bin/vdisk
#   VDISK_ASAN  $BUILD/asan/bin/vdisk
#   TESTDIR     a fresh empty folder of its own (also TMPDIR), removed if it passes
# Exit status 0 is a pass, 77 a skip (the test prints why), anything else a
# failure.  Each test's output goes to build/test-logs/NAME.log; failures show
# the tail of their log.  The last line is the summary (also saved in
# build/test-logs/summary); the exit status is 1 if anything failed.
#
# TEST_TIMEOUT (seconds, default 1800) bounds each test, so a hang is a failure.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
BUILD=$(cd "${BUILD:-build}" 2>/dev/null && pwd) || {
    echo "run-tests: no build folder (${BUILD:-build}): run make first" >&2
    exit 1
}
export BUILD
export VDISK="$BUILD/bin/vdisk"
export VDISK_ASAN="$BUILD/asan/bin/vdisk"
# Sanitizer failures must fail the test and say where.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
TEST_TIMEOUT=${TEST_TIMEOUT:-1800}

LOGS="$BUILD/test-logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"

passed=0
failed=0
skipped=0
failures=""

# run_test NAME COMMAND...: runs one test and records its result.
run_test() {
    local name=$1; shift
    local log="$LOGS/${name//\//-}.log"
    local dir rc
    dir=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-test.XXXXXX")
    (
        cd "$ROOT" &&
        TESTDIR="$dir" TMPDIR="$dir" exec timeout -k 10 "$TEST_TIMEOUT" "$@"
    ) >"$log" 2>&1 </dev/null
    rc=$?
    case $rc in
    0)
        echo "PASS: $name"
        passed=$((passed + 1))
        rm -rf "$dir"
        ;;
    77)
        echo "SKIP: $name ($(tail -n 1 "$log"))"
        skipped=$((skipped + 1))
        rm -rf "$dir"
        ;;
    *)
        if [ $rc = 124 ]; then
            echo "timed out after ${TEST_TIMEOUT}s" >>"$log"
        fi
        echo "FAIL: $name (exit $rc, log $log, files kept in $dir)"
        echo "---- last lines of $log ----"
        tail -n 30 "$log" | sed 's/^/    /'
        echo "----"
        failed=$((failed + 1))
        failures="$failures $name"
        ;;
    esac
}

# The folder under tests/ a test program comes from, for its name.
origin() {
    local d
    for d in unit model crash; do
        if [ -e "tests/$d/$1.c" ]; then
            echo "$d"
            return
        fi
    done
    echo "tests"
}

# 1 and 2: the test programs, plain then sanitized.  A program whose source
# is gone (stale build output) is not run.
for variant in "" asan; do
    dir="$BUILD${variant:+/$variant}/tests"
    [ -d "$dir" ] || continue
    for d in unit model crash; do
        for prog in "$dir"/test-*; do
            [ -x "$prog" ] || continue
            base=$(basename "$prog")
            [ "$(origin "$base")" = "$d" ] || continue
            run_test "${variant:+$variant/}$d/$base" "$prog"
        done
    done
done

# 3: integration scripts.
for script in tests/integration/*.sh; do
    [ -f "$script" ] || continue
    run_test "integration/$(basename "$script" .sh)" sh "$script"
done

# 4: a short fuzz run.
if [ -f tests/fuzz/run-fuzz.sh ]; then
    run_test "fuzz/short" sh tests/fuzz/run-fuzz.sh short
fi

if [ $failed -gt 0 ]; then
    echo "failed:$failures"
fi
echo "$passed passed, $failed failed, $skipped skipped" | tee "$LOGS/summary"
[ $failed -eq 0 ]
