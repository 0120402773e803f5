#!/bin/sh
# Rewrites the generated block of docs/plugin-api.md (between `<!-- BEGIN plugin api ... -->` and
# `<!-- END plugin api -->`) from `fractalic-publisher plugin api`, the source of truth: it runs
# the test that checks the block, which rewrites it instead of failing when
# FRACTALIC_UPDATE_DOCS is set. Run it after adding or changing a host function or entry point.
set -eu
cd "$(dirname "$0")/.."
FRACTALIC_UPDATE_DOCS=1 cargo test --quiet --test integration \
    plugins::plugin_api_prints_the_reference_and_the_docs_hold_exactly_it -- --exact
git diff --stat -- docs/plugin-api.md
