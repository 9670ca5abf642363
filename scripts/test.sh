#!/usr/bin/env bash
# The whole test suite, on a fresh machine: everything it needs is set up here.
# The Kafka tests start their own brokers on free ports: Apache Kafka, the
# reference (its jars from Maven Central, about 15 s the first time, then cached
# in ~/.m2 and ~/.cache/cardinal; one broker per test binary, shared by its tests,
# and one per test that kills or restarts it or needs a TLS or SASL listener), and
# Tansu where a file has not moved yet (about 10 minutes the first time on 2 cores,
# then cached in ~/.cargo/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Style and lints first: they fail in a minute, the rest takes many. A fresh
# toolchain may lack the components.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
scripts/kafka.sh install apache
scripts/kafka.sh install tansu
# Debian packages the tests drive: tmux (the progress bar, on a real terminal)
# and chromium (the live page, in a real browser). The TLS test no longer needs
# stunnel4: Apache Kafka serves TLS itself.
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }) >/dev/null
  else
    echo "test.sh: the tests need ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
# The tests' reference calendar is Python's zoneinfo, which needs time-zone data.
python3 -c 'import zoneinfo; zoneinfo.ZoneInfo("Europe/Zurich")' 2>/dev/null \
  || python3 -m pip install --quiet tzdata
# References in Python: Prometheus' own client parses /metrics, Apache's own
# datasketches reads and unions our HLL sketches.
python3 -c 'import prometheus_client, datasketches' 2>/dev/null \
  || python3 -m pip install --quiet prometheus_client datasketches
# Benchmarks are compiled, not run: their figures belong in docs/guide/performance.md, not in CI.
cargo build --locked --benches
cargo test --locked
# The report's script at a small size, so that it cannot rot (its figures are not
# the report's: those come from a full run, docs/REPORT.md says which).
scripts/report.sh --quick > /dev/null
# Random scenarios against a model written from the documented rules: fixed ones
# aimed at past bugs, then a fixed set of seeds (15 s with the debug build on the
# 2-core machine; `scripts/scenarios.py --soak SECONDS` runs as long as asked).
# Cardinal bugs it found that wait for a fix (scripts/scenarios-regressions/) are
# reported as KNOWN without failing the run; `--strict` fails on them too.
python3 scripts/scenarios.py --seeds 200 --bin "${CARGO_TARGET_DIR:-target}/debug/cardinal"

