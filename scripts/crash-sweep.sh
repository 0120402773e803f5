#!/usr/bin/env bash
# The full SIGKILL sweep of issue 16 (docs/crash-safety.md, "The SIGKILL sweep"):
#   scripts/crash-sweep.sh [TEST-NAME-FILTER] [cargo test args...]
# Runs the crash:: cases of the integration tests with FRACTALIC_CRASH_SWEEP=full: every
# progress step and every docker call of each command is a kill point, plus more seeded
# random delays; the ignored cases (waiting for fixes) run too. Needs the test bed
# (scripts/dev-env.sh up; the engine a single-node swarm manager). FRACTALIC_CRASH_SEED=N
# replays the random delays of an earlier run (each case prints its seed).
# Prints how long it took and how many kills were made; exits non-zero if a kill point failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

filter=${1:-crash::}
[[ $# -gt 0 ]] && shift

if [[ -z ${FRACTALIC_STAND_IN_IMAGE:-} ]]; then
	out=$(scripts/dev-env.sh up)
	FRACTALIC_STAND_IN_IMAGE=$(sed -n 's/^STAND_IN_IMAGE=//p' <<<"$out" | tail -n 1)
	export FRACTALIC_STAND_IN_IMAGE
fi
export CI=true FRACTALIC_CRASH_SWEEP=full

log=$(mktemp -p "$ROOT/target" crash-sweep.XXXXXX.log)
start=$(date +%s)
status=0
cargo test --test integration "$filter" -- --include-ignored --test-threads="${CRASH_SWEEP_THREADS:-2}" --nocapture "$@" 2>&1 | tee "$log" || status=$?
end=$(date +%s)

sum() { awk -v k="$1" '/^CRASH-SWEEP /{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]==k) s+=a[2]}} END{print s+0}' "$log"; }
kills=$(sum kills)
failures=$(sum failures)
echo
echo "crash sweep (full): $((end - start)) s, ${kills:-0} kills, ${failures:-0} failed kill points; log: $log"
grep '^CRASH-SWEEP ' "$log" || true
exit "$status"
