# Custody — the two commands a newcomer needs:
#   make demo   build everything and run the whole chain on embedded defaults
#   make test   vet and run every test (what CI runs)

GO       ?= go
BIN      ?= bin
SHELL    := /bin/bash
export GOTOOLCHAIN := local
# The TPM simulator is C (cgo).
export CGO_ENABLED := 1

CMDS := custody custodyd custody-agent

.PHONY: all build demo sim test test-short test-cluster bench bench-quick bench-cluster fmt vet clean fuzz-ci readme

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

demo: build
	$(BIN)/custody demo

# The supply-chain simulator with every attack (CI).
sim: build
	$(BIN)/custody sim --devices 50 --faults all

# The README's "Running it yourself" steps as written, its "make build"
# first (CI, alone: they use custodyd's default ports); see .ci/readme.
readme:
	bash .ci/readme

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -race -count=1 -timeout 20m ./...

# The cluster's failover test (deploy/cluster, CI): the cluster of
# deploy/cluster/cluster.sh on loopback, three stations' sustained ingest,
# SIGKILLs of the active sequencer, a NATS node and a verifier over several
# rounds. Its last line: cluster: N events, 0 lost, 0 duplicated, ...
test-cluster: build
	CUSTODY_TEST_CLUSTER=1 $(GO) test -count=1 -timeout 20m -run TestClusterFailover -v ./deploy/cluster/ 2>&1 | tee $(CURDIR)/bin/test-cluster.log; test $${PIPESTATUS[0]} -eq 0
	@grep '^cluster: ' $(CURDIR)/bin/test-cluster.log | tail -1

test-short:
	$(GO) test -count=1 -short ./...

# The benchmarks (bench/README.md). Each run starts from an empty
# bench-results/summary.json and its parts, so no figure of an earlier run
# is carried over; the last step gathers them into summary.json.
BENCH_OUT  := $(CURDIR)/bench-results
BENCH_ENV  := CUSTODY_BENCH_GATE_OUT=$(BENCH_OUT)/gate.json CUSTODY_BENCH_SHIPMENTS_OUT=$(BENCH_OUT)/shipments.json
BENCH_PARTS = $(addprefix $(BENCH_OUT)/,summary.json ledger-latest.json tessera.json gate.json shipments.json batched.json)

bench:
	$(MAKE) build
	mkdir -p $(BENCH_OUT) && rm -f $(BENCH_PARTS)
	$(GO) run ./bench --agent $(BIN)/custody-agent --out $(BENCH_OUT) --proof-leaves 10000000 $(BENCHFLAGS)
	$(BENCH_ENV) $(GO) test -run '^$$' -bench . -benchmem ./attest/ ./schemas/ ./services/dps/ ./ledger/...
	-cd bench/tessera && $(GO) run . -dir $(BENCH_OUT)/tessera-work -out $(BENCH_OUT)/tessera.json; rm -rf $(BENCH_OUT)/tessera-work
	-$(BENCH_ENV) CUSTODY_BENCH_DEVICES=200 CUSTODY_BENCH_LEDGER_DEVICES=10000 CUSTODY_BENCH_CONCURRENCY=32 $(GO) test -run '^$$' -bench GateDecisions -benchtime 1000x -timeout 60m ./services/gate/
	-$(BENCH_ENV) $(GO) run ./bench --only-transitions 10000
	-$(GO) run ./bench --only-batched 64 --batched-events 150 --out $(BENCH_OUT)
	$(GO) run ./bench summary --dir $(BENCH_OUT)

# The same figures at smaller sizes, in under five minutes on a 2-core
# machine: 10,000 events, a 100k-leaf tree, 20,000 Tessera leaves, 40 gate
# decisions, 1,000 devices' shipments lifecycle, station batches of 32
# against single envelopes (1,920 events each); no micro-benchmarks.
bench-quick:
	$(MAKE) build
	mkdir -p $(BENCH_OUT) && rm -f $(BENCH_PARTS)
	$(GO) run ./bench --agent $(BIN)/custody-agent --out $(BENCH_OUT) --events 10000 --proof-leaves 100000 $(BENCHFLAGS)
	-cd bench/tessera && $(GO) run . -n 20000 -dir $(BENCH_OUT)/tessera-work -out $(BENCH_OUT)/tessera.json; rm -rf $(BENCH_OUT)/tessera-work
	-$(BENCH_ENV) CUSTODY_BENCH_DEVICES=20 CUSTODY_BENCH_LEDGER_DEVICES=200 CUSTODY_BENCH_CONCURRENCY=8 $(GO) test -run '^$$' -bench GateDecisions -benchtime 40x -timeout 10m ./services/gate/
	-$(BENCH_ENV) $(GO) run ./bench --only-transitions 1000
	-$(GO) run ./bench --only-batched 32 --batched-events 60 --out $(BENCH_OUT)
	$(GO) run ./bench summary --dir $(BENCH_OUT)

# The cluster's tiers (bench/cluster.go): the same quoted events through the
# single-process node and through deploy/cluster's cluster on this machine,
# each process's CPU per event read from /proc; Trillian's QueueLeaf rate
# on the same MariaDB. One envelope per event (cluster.json), then station
# batches of 64 (cluster-batched.json); then the summary.
bench-cluster:
	$(MAKE) build
	mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/cluster.json $(BENCH_OUT)/cluster-batched.json
	$(GO) run ./bench --only-cluster 8 --cluster-events 1000 --bin $(BIN) --out $(BENCH_OUT) $(BENCHFLAGS)
	$(GO) run ./bench --only-cluster 64 --cluster-events 100 --cluster-batch 64 --bin $(BIN) --out $(BENCH_OUT) $(BENCHFLAGS)
	$(GO) run ./bench summary --dir $(BENCH_OUT)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

# Every fuzz target for a short time (CI); see .ci/fuzz.
FUZZTIME ?= 10s
fuzz-ci:
	GO="$(GO)" FUZZTIME=$(FUZZTIME) bash .ci/fuzz
