#!/usr/bin/env bash
# Install Prometheus for the observability end-to-end test (tests/test_observability.py): Debian's `prometheus`
# package, which puts the server at /usr/bin/prometheus. The test starts its own server with a generated config;
# nothing here configures or starts one.
# Debian/Ubuntu only (apt). Safe to run again: it installs nothing when `prometheus` is already on PATH.
set -euo pipefail
# shellcheck source=apt-install.sh
source "$(dirname "$0")/apt-install.sh"

if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
apt_install prometheus.sh "install Prometheus (https://prometheus.io/download/) so that
  \`prometheus\` is on PATH, or the observability e2e test is skipped" prometheus
if ! command -v prometheus >/dev/null 2>&1; then
  echo "prometheus.sh: the prometheus package installed, but \`prometheus\` is not on PATH" >&2
  exit 1
fi
