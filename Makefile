# Custody — the two commands a newcomer needs:
#   make demo   build everything and run the whole chain on embedded defaults
#   make test   vet and run every test (what CI runs)

GO       ?= go
BIN      ?= bin
export GOTOOLCHAIN := local
# The TPM simulator is C (cgo).
export CGO_ENABLED := 1

CMDS := custody custodyd custody-agent

.PHONY: all build demo sim test test-short bench fmt vet clean fuzz-ci readme

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

test-short:
	$(GO) test -count=1 -short ./...

bench:
	$(MAKE) build
	$(GO) run ./bench --agent $(BIN)/custody-agent --out bench-results --proof-leaves 10000000 $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./attest/ ./schemas/ ./services/dps/ ./ledger/...
	mkdir -p bench-results && cd bench/tessera && $(GO) run . -dir $(CURDIR)/bench-results/tessera-work -out $(CURDIR)/bench-results/tessera.json; rm -rf $(CURDIR)/bench-results/tessera-work
	CUSTODY_BENCH_DEVICES=200 CUSTODY_BENCH_LEDGER_DEVICES=10000 CUSTODY_BENCH_CONCURRENCY=32 $(GO) test -run '^$$' -bench GateDecisions -benchtime 1000x -timeout 60m ./services/gate/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

# Every fuzz target for a short time (CI); see .ci/fuzz.
FUZZTIME ?= 10s
fuzz-ci:
	GO="$(GO)" FUZZTIME=$(FUZZTIME) bash .ci/fuzz
