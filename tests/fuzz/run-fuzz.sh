#!/bin/sh
# Runs the libFuzzer targets of tests/fuzz/ (built by `make fuzzers`).
#
#   sh tests/fuzz/run-fuzz.sh short   about 60 seconds in all (make test)
#   sh tests/fuzz/run-fuzz.sh long    30 minutes per target (make fuzz)
#   sh tests/fuzz/run-fuzz.sh short -runs=1000 ...   extra libFuzzer options
#
# FUZZ_TIME (seconds) overrides the time per target.  The corpus lives in
# $BUILD/fuzz/corpus-NAME/ and grows from run to run; the seeds are real
# layers that the target itself writes there first (FUZZ_LAYER_SEEDS, see
# fuzz-layer.c).  A crash, leak, timeout or out-of-memory input is saved in
# $BUILD/fuzz/artifacts/ and makes this script exit 1; replay it with
#   $BUILD/fuzz/fuzz-layer $BUILD/fuzz/artifacts/crash-...
# Exit 77 (skip) when the fuzzer is not built.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
mode=${1:-short}
[ $# -gt 0 ] && shift

case $mode in
short) time_per_target=${FUZZ_TIME:-60} ;;
long) time_per_target=${FUZZ_TIME:-1800} ;;
*)
    echo "usage: $0 short|long [libFuzzer options...]" >&2
    exit 2
    ;;
esac

fuzzer="$BUILD/fuzz/fuzz-layer"
if [ ! -x "$fuzzer" ]; then
    echo "run-fuzz: $fuzzer is not built (make fuzzers needs clang with libFuzzer): skipped"
    exit 77
fi

# The target's scratch files go to TMPDIR (run-tests.sh gives each test its
# own); without one, a folder of our own.
own_tmp=""
if [ -z "${TMPDIR:-}" ]; then
    own_tmp=$(mktemp -d /tmp/vdisk-fuzz.XXXXXX) || exit 1
    TMPDIR=$own_tmp
fi
export TMPDIR
trap '[ -z "$own_tmp" ] || rm -rf "$own_tmp"' EXIT

corpus="$BUILD/fuzz/corpus-layer"
artifacts="$BUILD/fuzz/artifacts"
mkdir -p "$corpus" "$artifacts" || exit 1

echo "run-fuzz: writing seed layers into $corpus"
if ! FUZZ_LAYER_SEEDS="$corpus" "$fuzzer"; then
    echo "run-fuzz: making the seed corpus failed"
    exit 1
fi

# libFuzzer exits 77 on a crash by default, which the test runner reads as
# "skipped": ask for 1 (crash, leak) and 2 (timeout) instead.  An input
# that takes longer than 30 s or allocates more than 2 GiB is a finding.
set -- -max_total_time="$time_per_target" -max_len=131072 -timeout=30 \
    -rss_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=2 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@"
echo "run-fuzz: $fuzzer $* $corpus"
"$fuzzer" "$@" "$corpus"
rc=$?
if [ $rc -ne 0 ]; then
    echo "run-fuzz: fuzz-layer FAILED (exit $rc); inputs saved in $artifacts:"
    ls -l "$artifacts" 2>/dev/null
    exit 1
fi
echo "run-fuzz: fuzz-layer ran for ${time_per_target}s with no finding; corpus: $(find "$corpus" -type f | wc -l) inputs"
exit 0
