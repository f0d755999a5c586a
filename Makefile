# sluice — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build run test test-short deps bench vet clean docs

all: build

build: ## build bin/sluice
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sluice ./cmd/sluice

run: build ## the all-in-one: embedded NATS + Redis, objects in ./var/objects, demo objects
	./$(BIN)/sluice serve

deps: ## install or build what the tests need (redis-server, MinIO, curl, wget, aria2c)
	./scripts/deps.sh

test: deps ## the whole suite, against real redis-server, NATS JetStream and MinIO
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

bench: ## benchmarks against real services; prints a report
	./scripts/deps.sh bench
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./bench/

docs: ## regenerate docs/CONFIG.md from the flags (a test fails when it is stale)
	$(GO) run ./cmd/sluice config-reference > docs/CONFIG.md.tmp && mv docs/CONFIG.md.tmp docs/CONFIG.md || { rm -f docs/CONFIG.md.tmp; exit 1; }

clean:
	rm -rf $(BIN)/sluice
