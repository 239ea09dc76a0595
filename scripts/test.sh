#!/usr/bin/env bash
# Runs every test: unit, doc and end-to-end (the e2e tests spawn the sqlvigil binary and
# talk to it over loopback sockets, using the official OpenTelemetry Python SDK as an
# independent OTLP client). Installs that client's pip packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sqlvigil-target}"

if ! python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip
  fi
  python3 -m pip install --quiet -r tests/requirements.txt \
    || python3 -m pip install --quiet --break-system-packages -r tests/requirements.txt
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
