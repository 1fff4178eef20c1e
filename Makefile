# The README's commands. `make demo` runs tokenwatch end to end on its embedded
# default; `make test` runs the whole test suite (what CI runs).
BIN := bin/tokenwatch
DURATION ?= 3m

.PHONY: build setup setup-all demo test bench fuzz rules dashboards clean

build:
	go build -o $(BIN) ./cmd/tokenwatch

setup:
	scripts/setup.sh

setup-all:
	scripts/setup.sh --all

demo: setup build
	$(BIN) demo --duration $(DURATION)

test:
	scripts/test.sh

bench: setup build
	scripts/bench.sh

fuzz:
	go test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime 60s -fuzzminimizetime 10x ./ingest/
	go test -run '^$$' -fuzz '^FuzzDecodeOTLP$$' -fuzztime 60s -fuzzminimizetime 10x ./ingest/

rules: build
	$(BIN) alerts rules --out deploy/prometheus/rules

dashboards: build
	$(BIN) dashboards --out deploy/grafana

clean:
	rm -rf bin
