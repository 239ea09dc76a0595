#!/usr/bin/env bash
# Runs every test: unit, doc and end-to-end (the e2e tests spawn the sqlvigil binary and
# talk to it over loopback sockets, using the official OpenTelemetry Python SDK as an
# independent OTLP client, confluent-kafka as an independent Kafka producer, and a real
# Kafka-protocol broker). Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sqlvigil-target}"

if ! python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, confluent_kafka, pytds, OpenSSL, playwright' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip
  fi
  python3 -m pip install --quiet -r tests/requirements.txt \
    || python3 -m pip install --quiet --break-system-packages -r tests/requirements.txt
fi

# The console's browser test (tests/e2e_browser.rs) drives Debian's Chromium through
# Playwright (never a browser Playwright would download).
command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

# The Kafka bus tests run a real Kafka-protocol broker: tansu 0.6 (a Rust broker,
# about 10-17 minutes to build once on 2 cores; later runs find it installed).
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  # librdkafka (rdkafka's bundled build) needs OpenSSL headers for TLS.
  dpkg -s libssl-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libssl-dev; }
  cargo install --locked tansu --version 0.6.0 --features dynostore \
    || cargo install tansu --version 0.6.0 --features dynostore
fi
dpkg -s libssl-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libssl-dev; }

cargo test --workspace --all-targets
cargo test --workspace --doc
# The examples are built above (--all-targets); run them too, so they stay true.
cargo run --quiet --example custom_operator
cargo run --quiet --example embed
