#!/usr/bin/env bash
# Performance figures, each next to a baseline measured in the same run (the
# machine is noisy: compare ratios, not absolute numbers). See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-500000}"

echo "==> end to end: embedded broker → pipeline → ClickHouse engine (vs kafka-go consume alone)"
go run ./cmd/tokenwatch-bench --events "$EVENTS"

echo
echo "==> per-stage micro benchmarks (decode, redaction, SLIs, detectors)"
go test -run '^$' -bench . -benchmem -benchtime 1x -count 1 ./ingest/ ./ingest/redact/ >/dev/null 2>&1 || true
go test -run '^$' -bench . -benchmem ./ingest/ ./ingest/redact/ ./sli/ ./detect/ 2>&1 | grep -E '^(Benchmark|ok|PASS|FAIL)|bytes/session|ns/event'

echo
echo "==> finding latency in the demo (append to Kafka → finding stored in ClickHouse)"
go build -o bin/tokenwatch ./cmd/tokenwatch
for rate in 5000 50000; do
  echo "--- demo at ${rate} events/s (40 s, traffic time 45x: every scenario plays out)"
  bin/tokenwatch demo --rate "$rate" --sessions 5000 --duration 40s --speed 45 \
    --clickhouse-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 | grep -E 'finding latency|events (produced|stored)|findings  '
done
