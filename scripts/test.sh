#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, runs
# every Go test (integration tests against real Kafka 4.4, the ClickHouse
# engine, Prometheus and Alertmanager; the 20-second demo, run as its own
# process), and a short run of each fuzz target. With CI=true a missing component fails instead of
# skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENWATCH_REQUIRE_COMPONENTS="${TOKENWATCH_REQUIRE_COMPONENTS:-${CI:-}}"
[ "$TOKENWATCH_REQUIRE_COMPONENTS" = "true" ] && export TOKENWATCH_REQUIRE_COMPONENTS=1
# A count, not a duration: with a duration Go's fuzz coordinator can report
# a bare "context deadline exceeded" at the deadline on a loaded machine
# (golang/go#75804, fixed in Go 1.27). 80,000 runs take about 20 s here.
FUZZTIME="${FUZZTIME:-80000x}"

scripts/setup.sh --all

echo "==> unit and integration tests"
go vet ./...
go test -count=1 -timeout 40m ./... 2>&1 | tee /tmp/tokenwatch-test.log

echo "==> fuzz targets (${FUZZTIME} each)"
go test -run '^$' -fuzz '^FuzzDecodeJSON$' -fuzztime "$FUZZTIME" -fuzzminimizetime 10x ./ingest/
go test -run '^$' -fuzz '^FuzzDecodeOTLP$' -fuzztime "$FUZZTIME" -fuzzminimizetime 10x ./ingest/
