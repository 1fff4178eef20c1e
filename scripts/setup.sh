#!/usr/bin/env bash
# Installs what tokenwatch and its tests need on a fresh machine. Idempotent.
#   scripts/setup.sh          the demo's needs: Go modules and the ClickHouse engine (libchdb)
#   scripts/setup.sh --all    also Apache Kafka 4.4 (Maven Central) and Prometheus + Alertmanager (Debian)
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "Go modules"
go mod download

step "ClickHouse engine (libchdb from npm)"
scripts/fetch-chdb.sh

if [ "${1:-}" = "--all" ]; then
  step "Apache Kafka 4.4 (Maven Central)"
  scripts/kafka.sh fetch
  step "Prometheus and Alertmanager (Debian packages)"
  scripts/monitoring.sh install
fi
step "setup done"
