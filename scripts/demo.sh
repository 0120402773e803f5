#!/usr/bin/env bash
# The README's first command: bring up the dev environment, build the binary, deploy the bundled
# demo script folder to the stand-in Fractalic image, call /execute and show the answer.
# Running it again replaces the previous demo deployment (only if this tool created it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

name="${DEMO_NAME:-fractalic-demo}"
image="$("$root/scripts/dev-env.sh" up | tail -n 1 | sed -n 's/^STAND_IN_IMAGE=//p')"
if [[ -z "$image" ]]; then
  echo "demo: scripts/dev-env.sh up did not report the stand-in image" >&2
  exit 1
fi

echo "==> building fractalic-publisher (release)" >&2
cargo build --release --quiet --bin fractalic-publisher
bin="$root/target/release/fractalic-publisher"

# Replace the previous demo deployment, but never a container this tool did not create.
if docker container inspect "$name" >/dev/null 2>&1; then
  managed="$(docker container inspect -f '{{index .Config.Labels "fractalic-publisher.managed"}}' "$name")"
  if [[ "$managed" != "true" ]]; then
    echo "demo: a container named $name exists and was not made by fractalic-publisher; set DEMO_NAME" >&2
    exit 2
  fi
  echo "==> removing the previous demo deployment $name" >&2
  docker rm -f "$name" >/dev/null
fi

echo "==> deploying scripts/demo/hello-fractalic as $name" >&2
start=$(date +%s%N)
result="$("$bin" deploy docker-registry \
  --script-name hello \
  --script-folder "$root/scripts/demo/hello-fractalic" \
  --name "$name" \
  --image "$image" \
  --pull missing \
  --json)"
end=$(date +%s%N)
url="$(printf '%s' "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')"
echo "==> healthy at $url after $(( (end - start) / 1000000 )) ms" >&2

echo "==> POST $url/execute {\"filename\": \"/payload/hello/hello.md\"}" >&2
curl -fsS --max-time 30 -X POST "$url/execute" \
  -H 'Content-Type: application/json' \
  -d '{"filename": "/payload/hello/hello.md"}' | python3 -m json.tool
echo
echo "Remove it with: docker rm -f $name" >&2
