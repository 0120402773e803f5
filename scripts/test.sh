#!/usr/bin/env bash
# Runs the whole test suite against a real Docker engine and the local registry:
#   scripts/test.sh [cargo test args...]
# Starts the test bed (scripts/dev-env.sh up), makes sure the headless browser for the page
# test is installed (scripts/dev-env.sh browser), runs `cargo test --workspace`, and stops again
# what it started (unless the test bed was already up, or KEEP_DEV_ENV=1).
# If `up` fails: with CI=true that is a failure; otherwise the Docker tests are reported as
# ignored (FRACTALIC_TEST_NO_DOCKER=1, see build.rs). If `browser` fails: with CI=true that is a
# failure; otherwise the browser test skips.
# Then the multi-node swarm for tests/integration/cluster.rs (scripts/dev-env.sh cluster up: three
# engines in network namespaces), exported as FRACTALIC_TEST_CLUSTER=unix:///.../n1.sock and
# brought down at the end if this run started it; with CI=true a cluster that cannot come up is
# a failure, otherwise those tests skip.
# Screenshots of the page test land in target/webpage/ (keep them as CI artifacts).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

was_up=no
if scripts/dev-env.sh status >/dev/null 2>&1; then was_up=yes; fi
cluster_was_up=no
if scripts/dev-env.sh cluster status >/dev/null 2>&1; then cluster_was_up=yes; fi

cleanup() {
	if [[ $cluster_was_up == no && ${KEEP_DEV_ENV:-} != 1 ]]; then
		scripts/dev-env.sh cluster down || echo "test.sh: dev-env.sh cluster down failed" >&2
	fi
	if [[ $was_up == no && ${KEEP_DEV_ENV:-} != 1 ]]; then
		scripts/dev-env.sh down || echo "test.sh: dev-env.sh down failed" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if out=$(scripts/dev-env.sh up); then
	image=$(sed -n 's/^STAND_IN_IMAGE=//p' <<<"$out" | tail -n 1)
	[[ -n $image ]] || {
		echo "test.sh: dev-env.sh up printed no STAND_IN_IMAGE line" >&2
		exit 1
	}
	export FRACTALIC_STAND_IN_IMAGE=$image
	proxy_image=$(sed -n 's/^PROXY_IMAGE=//p' <<<"$out" | tail -n 1)
	[[ -n $proxy_image ]] || {
		echo "test.sh: dev-env.sh up printed no PROXY_IMAGE line" >&2
		exit 1
	}
	export FRACTALIC_PUBLISHER_PROXY_IMAGE=$proxy_image
elif [[ ${CI:-} == true ]]; then
	echo "test.sh: dev-env.sh up failed and CI=true" >&2
	exit 1
else
	echo "test.sh: dev-env.sh up failed; running the tests anyway, Docker tests will be listed as ignored" >&2
	export FRACTALIC_TEST_NO_DOCKER=1
fi

if [[ ${FRACTALIC_TEST_NO_DOCKER:-} != 1 ]] && out=$(scripts/dev-env.sh cluster up 3); then
	export FRACTALIC_TEST_CLUSTER=$(sed -n 's/^CLUSTER_DOCKER_HOST=//p' <<<"$out" | tail -n 1)
elif [[ ${CI:-} == true ]]; then
	echo "test.sh: dev-env.sh cluster up failed and CI=true" >&2
	exit 1
else
	echo "test.sh: no multi-node cluster; the cluster tests will skip" >&2
fi

if ! scripts/dev-env.sh browser >/dev/null; then
	if [[ ${CI:-} == true ]]; then
		echo "test.sh: dev-env.sh browser failed and CI=true" >&2
		exit 1
	fi
	echo "test.sh: no headless browser; the page test will skip" >&2
fi

status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
# The REST API fuzzed from its own OpenAPI document (bounded: a few minutes; no 5xx, no answer
# outside the schema). Uses schemathesis from PATH or installs a pinned one from PyPI into target/;
# with CI=true one that cannot be had fails.
scripts/schemathesis.sh "$ROOT/target/debug/fractalic-publisher" || status=$?
exit "$status"
