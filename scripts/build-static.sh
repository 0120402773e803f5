#!/usr/bin/env bash
# Builds the one static fractalic-publisher binary: glibc linked in (+crt-static on the gnu
# target; Debian's Rust has no musl target), LTO, stripped (Cargo.toml [profile.static]).
# It runs in a `FROM scratch` image that has only the docker CLI beside it.
#
#   scripts/build-static.sh     last stdout line: the binary's path
#
# Fails when the result is not statically linked or is 10 MB or more.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAX_BYTES=$((10 * 1000 * 1000))

log() { printf 'build-static: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo is not installed"
triple=$(rustc -vV | sed -n 's/^host: //p')
[[ $triple == *-linux-gnu ]] || die "host target $triple: this script builds for a *-linux-gnu target"

log "building ($triple, profile static)"
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
	cargo build --locked --quiet --profile static --target "$triple" --bin fractalic-publisher) >&2 ||
	die "cargo build failed"

BIN="$ROOT/target/$triple/static/fractalic-publisher"
[[ -x $BIN ]] || die "$BIN was not built"
ldd_out=$(LC_ALL=C ldd "$BIN" 2>&1 || true)
[[ $ldd_out == *"not a dynamic executable"* || $ldd_out == *"statically linked"* ]] ||
	die "$BIN is not statically linked: $ldd_out"
size=$(stat -c %s "$BIN")
((size < MAX_BYTES)) || die "$BIN is $size bytes; the limit is $MAX_BYTES (10 MB)"
log "$(basename "$BIN"): $size bytes, statically linked"
echo "$BIN"
