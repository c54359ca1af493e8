# Sourced by the CLI test scripts: counts in $passed / $failed.
# expect NAME EXIT_CODE TEXT -- COMMAND...: runs COMMAND, checks its exit code
# and that TEXT appears in what it printed.
passed=0 failed=0
expect() {
    local name=$1 code=$2 text=$3
    shift 4
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [[ $rc -eq $code && "$out" == *"$text"* ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $name: exit $rc (expected $code), output:"
        echo "$out" | tail -5
    fi
}
