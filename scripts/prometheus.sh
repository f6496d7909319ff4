#!/usr/bin/env bash
# Install Prometheus for the observability end-to-end test (tests/test_observability.py): Debian's `prometheus`
# package, which puts the server at /usr/bin/prometheus. The test starts its own server with a generated config;
# nothing here configures or starts one.
# Debian/Ubuntu only (apt). Safe to run again: it installs nothing when `prometheus` is already on PATH.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "prometheus.sh: apt-get not found; install Prometheus (https://prometheus.io/download/) so that" >&2
  echo "  \`prometheus\` is on PATH, or the observability e2e test is skipped" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "prometheus.sh: need root to install prometheus; run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends prometheus" >&2
  exit 1
fi
echo "prometheus.sh: installing prometheus (apt)" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if ! command -v prometheus >/dev/null 2>&1; then
  echo "prometheus.sh: the prometheus package installed, but \`prometheus\` is not on PATH" >&2
  exit 1
fi
