#!/usr/bin/env bash
# The whole test suite, on a fresh machine: everything it needs is set up here.
# The Kafka tests start their own Tansu brokers on free ports; this makes sure
# Tansu is installed (about 10 minutes the first time on 2 cores, then cached).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Style and lints first: they fail in a minute, the rest takes many.
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
scripts/kafka.sh install
# Benchmarks are compiled, not run: their figures belong in the README, not in CI.
cargo build --locked --benches
cargo test --locked
