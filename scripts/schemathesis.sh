#!/usr/bin/env bash
# Fuzzes `serve` from its own /openapi.json with schemathesis (pip install schemathesis), on a
# bounded budget: a token, a --root holding test folders (one of 10,000 files), and the checks
# that matter: no 5xx, every answer as the document says.
#   scripts/schemathesis.sh [BINARY] [MAX_EXAMPLES]
# Exits non-zero when schemathesis finds a failure (or cannot run with CI=true).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/debug/fractalic-publisher}
EXAMPLES=${2:-${SCHEMATHESIS_EXAMPLES:-25}}

# schemathesis from PATH, else a pinned one in a venv under target/ (made here from PyPI when
# python3 can make one). With CI=true a schemathesis that cannot be had is a failure.
ST_VERSION=4.32.5
ST=$(command -v st || true)
if [[ -z $ST ]]; then
	venv=$ROOT/target/schemathesis-$ST_VERSION
	if [[ ! -e $venv/.complete ]] && command -v python3 >/dev/null 2>&1; then
		echo "schemathesis.sh: installing schemathesis $ST_VERSION into $venv" >&2
		rm -rf "$venv"
		if python3 -m venv "$venv" >&2 &&
			timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check \
				"schemathesis==$ST_VERSION" >&2; then
			: >"$venv/.complete"
		else
			rm -rf "$venv"
		fi
	fi
	[[ -e $venv/.complete ]] && ST=$venv/bin/st
fi
if [[ -z $ST ]]; then
	if [[ ${CI:-} == true ]]; then
		echo "schemathesis.sh: schemathesis is not installed and could not be installed (pip install schemathesis==$ST_VERSION) and CI=true" >&2
		exit 1
	fi
	echo "schemathesis.sh: SKIPPED: schemathesis is not installed (pip install schemathesis==$ST_VERSION)" >&2
	exit 0
fi

work=$(mktemp -d)
pid=
cleanup() {
	[[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# Test folders: a small script folder and one of 10,000 files.
mkdir -p "$work/root/hello" "$work/root/big"
printf '# Demo {id=d}\n\n@shell\nprompt: echo hi\nuse-header: "# Out {id=out}"\n\n@return\nblock: out\n' >"$work/root/hello/hello.md"
cp "$work/root/hello/hello.md" "$work/root/big/hello.md"
for d in $(seq -w 0 99); do
	mkdir -p "$work/root/big/d$d"
	for f in $(seq -w 0 99); do : >"$work/root/big/d$d/f$f.md"; done
done
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$work/token"
chmod 600 "$work/token"

# A docker that knows no containers: the fuzzer must never reach the shared engine's real
# deployments (the stateful phase follows links from the listing to stop and delete).
# A docker that knows no object: `inspect` answers as the real CLI does for a missing one
# ("[]" and "No such ...", exit 1); listings are empty.
cat >"$work/docker" <<'FAKE'
#!/bin/sh
case "$1" in version) echo 27.0.0; exit 0;; esac
for name in "$@"; do :; done
case " $* " in
*" service inspect "* | *" service ps "*) echo "[]"; echo "Error: no such service: $name" >&2; exit 1 ;;
*" image inspect "*) echo "[]"; echo "Error: No such image: $name" >&2; exit 1 ;;
*" inspect "*) echo "[]"; echo "Error: No such container: $name" >&2; exit 1 ;;
esac
exit 0
FAKE
chmod +x "$work/docker"
"$BIN" --docker "$work/docker" serve --listen 127.0.0.1:0 --root "$work/root" --token-file "$work/token" >"$work/out" 2>"$work/err" &
pid=$!
url=
for _ in $(seq 100); do
	url=$(sed -n 's/^listening on //p' "$work/out")
	[[ -n $url ]] && break
	sleep 0.1
done
[[ -n $url ]] || { echo "schemathesis.sh: serve did not start: $(cat "$work/err")" >&2; exit 1; }

"$ST" run "$url/openapi.json" --url "$url" \
	-H "Authorization: Bearer $token" \
	--checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
	--max-examples "$EXAMPLES" --request-timeout 30 --generation-deterministic
