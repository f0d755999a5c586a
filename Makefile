# sluice — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build run test test-short fuzz-short deps bench vet clean docs

all: build

build: ## build bin/sluice
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sluice ./cmd/sluice

run: build ## the all-in-one: embedded NATS + Redis, objects in ./var/objects, demo objects
	./$(BIN)/sluice serve

deps: ## install or build what the tests need (redis-server, MinIO, curl, wget, aria2c)
	./scripts/deps.sh

test: deps ## the whole suite, against real redis-server, NATS JetStream and MinIO
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 18m ./...
	$(MAKE) fuzz-short

# Each fuzz target mutates its seed corpus (testdata/fuzz/) for FUZZTIME; go test takes
# one -fuzz target per package per run. Plain `go test` runs the seeds only.
FUZZTIME ?= 4s
FUZZ_TARGETS := ./signer/:FuzzRangeAgainstServeContent ./shared/objstore/:FuzzKey \
	./ingress/:FuzzDownloadRequest ./ingress/:FuzzReleaseBatch ./workers/:FuzzDecodeReleaseEvent

fuzz-short: ## run every fuzz target for FUZZTIME (4s each, about 40 s in all)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

bench: ## benchmarks against real services; prints a report
	./scripts/deps.sh bench
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/

docs: ## regenerate docs/CONFIG.md from the flags (a test fails when it is stale)
	$(GO) run ./cmd/sluice config-reference > docs/CONFIG.md.tmp && mv docs/CONFIG.md.tmp docs/CONFIG.md || { rm -f docs/CONFIG.md.tmp; exit 1; }

clean:
	rm -rf $(BIN)/sluice
