#!/usr/bin/env bash
# The tool's memory with a large script folder (issue 18, "one walk, streamed"), run by
# `scripts/bench.sh memory` (and by the full bench) and runnable alone:
#   scripts/bench/memory.sh BIN IMAGE [MB]
# A folder of MB megabytes (default 200: 40 files of 5 MB of random bytes plus the demo
# script) is deployed, updated in place (one file changed) and updated by container (an env
# value changed, which needs a new container); each command runs under /usr/bin/time and its
# peak RSS is reported. The goal: under 60 MB whatever the folder's size (the payload streams
# into docker, hashed on the way; nothing of it is held in memory).
# Prints a markdown section on stdout; removes what it made.
set -euo pipefail
BIN=$1
IMAGE=$2
MB=${3:-200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEMO="$HERE/../demo/hello-fractalic"
NAME="bench-mem-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fractalic-bench-mem.XXXXXX")
cleanup() {
	local rc=$?
	"$BIN" rm --force "$NAME" >/dev/null 2>&1 || true
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf 'bench: %s\n' "$*" >&2; }
[[ -x /usr/bin/time ]] || { log "memory: /usr/bin/time is missing (apt-get install time)"; exit 1; }

mkdir -p "$WORK/hello/data"
cp -r "$DEMO"/. "$WORK/hello/"
files=$((MB / 5))
for i in $(seq "$files"); do
	head -c $((5 * 1024 * 1024)) /dev/urandom >"$WORK/hello/data/blob-$i.bin"
done
SIZE=$(du -sm "$WORK/hello" | cut -f1)
log "memory: a folder of $SIZE MB ($((files + 2)) files)"

# One measured command: its peak RSS in KB into $WORK/$1.kb, its wall time in $WORK/$1.s.
measured() {
	local tag=$1
	shift
	/usr/bin/time -f '%M %e' -o "$WORK/$tag.time" "$BIN" "$@" >"$WORK/$tag.json" 2>"$WORK/$tag.err" || {
		log "memory: $tag failed: $(tail -n 3 "$WORK/$tag.err")"
		exit 1
	}
	tail -n 1 "$WORK/$tag.time" >"$WORK/$tag.row"
}
deploy() { measured "$1" deploy docker-registry --script-name hello --script-folder "$WORK/hello" \
	--name "$NAME" --image "$IMAGE" --pull missing --json --quiet "${@:2}"; }

deploy first --env BENCH_GEN=1
echo changed >>"$WORK/hello/data/blob-1.bin"
deploy inplace --env BENCH_GEN=1
echo changed again >>"$WORK/hello/data/blob-2.bin"
deploy container --env BENCH_GEN=2
# The update's kind as the deploy's JSON says it (a first deploy has none).
kind() { python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
def find(v):
    if isinstance(v, dict):
        if v.get("kind") in ("in-place", "container"):
            return v["kind"]
        for x in v.values():
            k = find(x)
            if k:
                return k
    return None
print(find(d) or "new deployment")' "$1" 2>/dev/null || echo "?"; }
row() {
	local tag=$1 label=$2 kb s mb verdict
	read -r kb s <"$WORK/$tag.row"
	mb=$(awk -v k="$kb" 'BEGIN{printf "%.1f", k/1024}')
	verdict=$(awk -v k="$kb" 'BEGIN{print (k < 61440) ? "met" : "**missed**"}')
	echo "| $label ($(kind "$WORK/$tag.json")) | ${mb} MB | ${s} s | < 60 MB | $verdict |"
}
cat <<MD
### Memory with a ${SIZE} MB script folder (\`scripts/bench/memory.sh\`)

Peak RSS of the tool (\`/usr/bin/time -f %M\`) for each command; the folder is $((files)) files of 5 MB of random bytes plus the demo script.

| command | peak RSS | wall time | goal | verdict |
|---|---|---|---|---|
$(row first "first deploy")
$(row inplace "update, one file changed")
$(row container "update, an env value changed")
MD
