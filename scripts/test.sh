#!/usr/bin/env bash
# The whole test suite, on a fresh machine: everything it needs is set up here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets
