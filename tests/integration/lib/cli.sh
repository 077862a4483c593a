# lib/cli.sh - what the CLI tests (test-img-cli.sh, test-store-cli.sh,
# test-formats.sh) share: running a command with its output captured, and
# expectations on its status and output.  Sourced, not run (the runner runs
# tests/integration/*.sh only).  The script calls cli_test_start first and
# sets W (a folder for the captured output) before calling the others.

PY=/usr/bin/python3     # Debian's python3; the first one on PATH may differ

fail() {
    echo "FAIL: $*"
    exit 1
}

skip() {
    echo "SKIP: $*"
    exit 77
}

# run CMD...: runs it with stdout in $W/out, stderr in $W/err, status in rc.
run() {
    "$@" >"$W/out" 2>"$W/err"
    rc=$?
}

show() {
    echo "---- stdout:"
    head -c 4000 "$W/out"
    echo "---- stderr:"
    head -c 4000 "$W/err"
    echo "----"
}

# expect RC CMD...: runs CMD and fails unless it exits with RC.  A sanitizer
# report on stderr is a failure whatever the status.
expect() {
    want=$1
    shift
    run "$@"
    if [ "$rc" != "$want" ]; then
        echo "FAIL: '$*' exited $rc, expected $want"
        show
        exit 1
    fi
    if grep -q -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' \
            -e 'runtime error:' -e 'Sanitizer' "$W/err"; then
        echo "FAIL: '$*': sanitizer report"
        show
        exit 1
    fi
}

# ok CMD...: exits 0 and says nothing on stderr.
ok() {
    expect 0 "$@"
    if [ -s "$W/err" ]; then
        echo "FAIL: '$*' wrote to stderr"
        show
        exit 1
    fi
}

# expect_err RC CMD...: as expect, and stderr must be one "vdisk: " line.
expect_err() {
    expect "$@"
    if [ "$(wc -l <"$W/err")" -ne 1 ] || ! grep -q '^vdisk: ' "$W/err"; then
        echo "FAIL: '$*': expected one 'vdisk: ...' line on stderr"
        show
        exit 1
    fi
}

# expect_usage CMD...: a usage error: status 2, a message and a hint.
expect_usage() {
    expect 2 "$@"
    grep -q -e '--help' "$W/err" || {
        echo "FAIL: '$*': no usage hint on stderr"
        show
        exit 1
    }
}

# quiet: the last command wrote nothing on stderr.
quiet() {
    [ -s "$W/err" ] && { echo "FAIL: the last command wrote to stderr"; show; exit 1; }
    return 0
}

out_has() {
    grep -q -e "$1" "$W/out" || {
        echo "FAIL: output of the last command lacks '$1'"
        show
        exit 1
    }
}

err_has() {
    grep -q -e "$1" "$W/err" || {
        echo "FAIL: stderr of the last command lacks '$1'"
        show
        exit 1
    }
}

# json EXPR: evaluates a Python expression on the JSON in $W/out (as d).
json() {
    "$PY" -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$W/out" "$1" || {
        echo "FAIL: cannot evaluate '$1' on the JSON output"
        show
        exit 1
    }
}

check_eq() {
    [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"
}

file_size() {
    stat -c %s "$1"
}

disk_kb() {
    du -k "$1" | awk '{ print $1 }'
}

# cli_test_start: what every CLI test checks first (VDISK and TESTDIR from
# tests/run-tests.sh, Debian's python3), and SEED, printed so that a run
# can be replayed.
cli_test_start() {
    : "${VDISK:?VDISK must name the vdisk binary}"
    : "${TESTDIR:?TESTDIR must name a fresh folder}"
    [ -x "$VDISK" ] || fail "VDISK=$VDISK is not an executable"
    [ -x "$PY" ] || skip "$PY is not installed"
    SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
    echo "seed: $SEED (SEED=$SEED replays this run)"
}
