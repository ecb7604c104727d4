#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ (cargo-fuzz) for a fixed time and
# prints a table of executions and executions per second per target.
#
#   tests/fuzz.sh                          60 s per target, two at a time
#   FUZZ_SECONDS=3600 tests/fuzz.sh        an hour per target
#   FUZZ_TARGETS="decision" tests/fuzz.sh  only these targets
#   FUZZ_JOBS=1 tests/fuzz.sh              one target at a time
#
# Under CI (CI=true, as .ci/run sets it) these may make the run bigger than
# the documented one (docs/security.md: every target, 60 s each, two at a
# time), never smaller: fewer seconds, fewer targets or more at once fail.
# A target that executed no input fails, CI or not.
#
# One target, open-ended, keeping what it finds in fuzz/corpus/TARGET:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET
#
# Each target starts from a copy of fuzz/corpus/TARGET in a temporary
# directory, so a run never changes the repository. A crash, a panic (a
# broken invariant), a leak or a timeout fails the run (exit 1); the input
# is kept in fuzz/artifacts/TARGET/ (ignored by git) and its path printed.
# Replay one with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET PATH
#
# cargo-fuzz needs nightly rustc features (-Zsanitizer=address);
# RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain. cargo-fuzz itself
# is installed with `cargo install cargo-fuzz --locked` when missing.
set -euo pipefail

script="$(readlink -f "${BASH_SOURCE[0]}")"
repo="$(dirname "$(dirname "$script")")"
fuzz_dir="$repo/fuzz"
# The documented run (docs/security.md).
documented_seconds=60
documented_jobs=2
seconds="${FUZZ_SECONDS:-$documented_seconds}"
jobs_at_once="${FUZZ_JOBS:-$documented_jobs}"
export RUSTC_BOOTSTRAP=1
# CI as tests/src/ci.rs reads it (checked against it by otpd-tests' unit tests).
under_ci() { case "${CI-}" in '' | 0 | [Ff][Aa][Ll][Ss][Ee]) return 1 ;; *) return 0 ;; esac; }

# (libFuzzer reads -max_total_time=0 as "no limit".)
case "$seconds" in
    '' | *[!0-9]* | 0) echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, at least 1" >&2; exit 2 ;;
esac
case "$jobs_at_once" in
    '' | *[!0-9]* | 0) echo "fuzz.sh: FUZZ_JOBS must be at least 1" >&2; exit 2 ;;
esac
if under_ci; then
    if [ "$seconds" -lt "$documented_seconds" ]; then
        echo "fuzz.sh: FUZZ_SECONDS=$seconds is shorter than the documented $documented_seconds s per target, which CI forbids" >&2
        exit 2
    fi
    if [ "$jobs_at_once" -gt "$documented_jobs" ]; then
        echo "fuzz.sh: FUZZ_JOBS=$jobs_at_once gives each target less of the machine than the documented $documented_jobs at a time, which CI forbids" >&2
        exit 2
    fi
fi

started=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/otpd-fuzz.XXXXXX")"
# Job control: each target runs in its own process group (cargo fuzz and
# the fuzzer under it), so that an interrupted run stops all of it.
set -m
running=()
cleanup() {
    local pid
    for pid in "${running[@]}"; do
        kill -- "-$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$fuzz_dir"
mapfile -t all_targets < <(cargo fuzz list)
if [ "${#all_targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: no fuzz targets found in $fuzz_dir" >&2
    exit 2
fi
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
    for target in "${targets[@]}"; do
        if ! printf '%s\n' "${all_targets[@]}" | grep -qx -- "$target"; then
            echo "fuzz.sh: FUZZ_TARGETS names $target, which is no target of $fuzz_dir (${all_targets[*]})" >&2
            exit 2
        fi
    done
    if under_ci; then
        for target in "${all_targets[@]}"; do
            if ! printf '%s\n' "${targets[@]}" | grep -qx -- "$target"; then
                echo "fuzz.sh: FUZZ_TARGETS leaves out $target, which CI forbids (every target runs)" >&2
                exit 2
            fi
        done
    fi
else
    targets=("${all_targets[@]}")
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: FUZZ_TARGETS names no target" >&2
    exit 2
fi

# AddressSanitizer finds memory errors in unsafe code; otpd's own code has
# none, and an ASan build of it and its dependencies takes about three
# times as long, too long for CI's budget. CI therefore runs without it
# (libFuzzer's coverage guidance, Rust's panics and overflow checks stay);
# FUZZ_SANITIZER=address for a long run by hand.
sanitizer="${FUZZ_SANITIZER:-none}"
echo "==> cargo fuzz build --sanitizer $sanitizer (${targets[*]})"
cargo fuzz build --sanitizer "$sanitizer"

# One target: a private corpus copy, its own log; the exit status in a file.
run_target() {
    local target="$1" corpus="$work/corpus/$1" log="$work/$1.log"
    mkdir -p "$corpus"
    if [ -d "corpus/$target" ]; then
        cp -R "corpus/$target/." "$corpus/"
    fi
    local dict=()
    if [ -f "dicts/$target.dict" ]; then
        dict=("-dict=dicts/$target.dict")
    fi
    local status=0
    # -timeout: an input slower than 10 s is a hang (a failure).
    cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        "${dict[@]}" >"$log" 2>&1 || status=$?
    echo "$status" >"$work/$target.status"
}

echo "==> fuzzing ${#targets[@]} targets for $seconds s each, $jobs_at_once at a time"
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_at_once" ]; do
        wait -n || true
    done
    echo "    $target"
    run_target "$target" &
    running+=("$!")
done
wait || true
running=()

# The figures, from libFuzzer's -print_final_stats=1 and its last status
# line ("#N DONE cov: C ft: F corp: U/S exec/s: E rss: R").
failed=0
rows=()
row_format='| %-16s | %12s | %9s | %8s | %6s | %s |'
for target in "${targets[@]}"; do
    log="$work/$target.log"
    status="$(cat "$work/$target.status" 2>/dev/null || echo 1)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    last="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")"
    if [ -z "$runs" ]; then
        runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")"
        rate="$(sed -n 's/.* exec\/s: \([0-9]*\).*/\1/p' <<<"$last")"
    fi
    # A target that executed nothing checked nothing (a target that
    # returns at once, a corpus it cannot read, a flag that stops it).
    if [ "$status" -eq 0 ] && ! [ "${runs:-0}" -gt 0 ] 2>/dev/null; then
        failed=1
        result="FAILED (executed ${runs:-no} inputs)"
        echo
        echo "==> $target executed no input: see its log, kept in $fuzz_dir/artifacts/$target/fuzz.log"
        mkdir -p "artifacts/$target"
        cp "$log" "artifacts/$target/fuzz.log"
        tail -n 5 "$log" | cut -c 1-300 | sed 's/^/    /'
    elif [ "$status" -eq 0 ]; then
        result=ok
    else
        failed=1
        result="FAILED (exit $status)"
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        # The whole log is kept beside the input (cargo fuzz also prints the
        # input itself, which can be long); the reason is shown here.
        mkdir -p "artifacts/$target"
        cp "$log" "artifacts/$target/fuzz.log"
        echo
        echo "==> $target failed:"
        grep -E -A 3 'panicked at' "$log" | head -n 8 | cut -c 1-300 | sed 's/^/    /' || true
        grep -E '==[0-9]+==ERROR|^SUMMARY|ERROR: libFuzzer' "$log" | head -n 4 | cut -c 1-300 | sed 's/^/    /' || true
        if [ -n "$artifact" ]; then
            echo "    input:  $artifact"
            echo "    replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target $artifact"
        fi
        echo "    log:    $fuzz_dir/artifacts/$target/fuzz.log"
    fi
    rows+=("$(printf "$row_format" "$target" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}" "$result")")
done

# A Markdown table, to paste as it is.
echo
echo "==> fuzzing results ($seconds s per target, $jobs_at_once at a time, $(nproc) cores)"
printf "$row_format\n" target executions exec/s coverage corpus result
printf "$row_format\n" :--------------- -----------: --------: -------: -----: ------
for row in "${rows[@]}"; do
    echo "$row"
done
echo "wall time: $((SECONDS - started)) s"
exit "$failed"
