#!/bin/sh
# Runs the libFuzzer targets of tests/fuzz/ (built by `make fuzzers`).
#
#   sh tests/fuzz/run-fuzz.sh short   about 60 seconds in all, shared by the
#                                     targets (make test)
#   sh tests/fuzz/run-fuzz.sh long    30 minutes per target (make fuzz)
#   sh tests/fuzz/run-fuzz.sh short -runs=1000 ...   extra libFuzzer options
#
# FUZZ_TIME (seconds) overrides the time per target.  Each target NAME
# (build/fuzz/fuzz-NAME) has its corpus in $BUILD/fuzz/corpus-NAME/, which
# grows from run to run; the seeds are written there first by the target
# itself when run with FUZZ_<NAME>_SEEDS=DIR (FUZZ_LAYER_SEEDS: real layers,
# see fuzz-layer.c; FUZZ_NBD_SEEDS: client sessions, see fuzz-nbd.c).  A
# crash, leak, timeout or out-of-memory input is saved in
# $BUILD/fuzz/artifacts/ and makes this script exit 1; replay it with
#   $BUILD/fuzz/fuzz-NAME $BUILD/fuzz/artifacts/crash-...
# Exit 77 (skip) when no fuzzer is built.
set -u

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
mode=${1:-short}
[ $# -gt 0 ] && shift

fuzzers=""
for f in "$BUILD"/fuzz/fuzz-*; do
    [ -x "$f" ] && [ -f "$f" ] && fuzzers="$fuzzers $f"
done
if [ -z "$fuzzers" ]; then
    echo "run-fuzz: no fuzzer in $BUILD/fuzz (make fuzzers needs clang with libFuzzer): skipped"
    exit 77
fi
count=$(echo $fuzzers | wc -w)

case $mode in
short) time_per_target=${FUZZ_TIME:-$((60 / count))} ;;
long) time_per_target=${FUZZ_TIME:-1800} ;;
*)
    echo "usage: $0 short|long [libFuzzer options...]" >&2
    exit 2
    ;;
esac
[ "$time_per_target" -ge 1 ] || time_per_target=1

# The targets' scratch files go to TMPDIR (run-tests.sh gives each test its
# own); without one, a folder of our own.
own_tmp=""
if [ -z "${TMPDIR:-}" ]; then
    own_tmp=$(mktemp -d /tmp/vdisk-fuzz.XXXXXX) || exit 1
    TMPDIR=$own_tmp
fi
export TMPDIR
trap '[ -z "$own_tmp" ] || rm -rf "$own_tmp"' EXIT

artifacts="$BUILD/fuzz/artifacts"
mkdir -p "$artifacts" || exit 1

failed=0
for fuzzer in $fuzzers; do
    name=${fuzzer##*/fuzz-}
    corpus="$BUILD/fuzz/corpus-$name"
    mkdir -p "$corpus" || exit 1
    seeds_var="FUZZ_$(echo "$name" | tr 'a-z-' 'A-Z_')_SEEDS"

    echo "run-fuzz: writing seeds into $corpus"
    if ! env "$seeds_var=$corpus" "$fuzzer"; then
        echo "run-fuzz: making the seed corpus of fuzz-$name failed"
        failed=1
        continue
    fi

    # libFuzzer exits 77 on a crash by default, which the test runner reads
    # as "skipped": ask for 1 (crash, leak) and 2 (timeout) instead.  An
    # input that takes longer than 30 s or allocates more than 2 GiB is a
    # finding.
    echo "run-fuzz: $fuzzer for ${time_per_target}s $* $corpus"
    "$fuzzer" -max_total_time="$time_per_target" -max_len=131072 -timeout=30 \
        -rss_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=2 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" "$corpus"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "run-fuzz: fuzz-$name FAILED (exit $rc); inputs saved in $artifacts:"
        ls -l "$artifacts" 2>/dev/null
        failed=1
        continue
    fi
    echo "run-fuzz: fuzz-$name ran for ${time_per_target}s with no finding; corpus: $(find "$corpus" -type f | wc -l) inputs"
done
exit $failed
