# Veil — the two commands are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
STATICCHECK_VERSION ?= v0.8.2
# Packages whose tests talk to Kafka; make test runs them against both brokers.
KAFKA_PKGS := ./ingest/... ./internal/broker/... ./processors/... ./cmd/... ./e2e/...
FUZZTIME ?= 15s

.PHONY: build test test-unit test-kfake fuzz fuzz-api demo services kafka services-down lint bench check-clickhouse-current clean sqlc sqlc-check portal-vendor

build:
	$(GO) build -o bin/veil ./cmd/veil

## test: every test against the real services (Postgres, Redis, ClickHouse and the real Kafka broker),
## then the Kafka tests again against the in-process kfake broker (the process-killing crash tests,
## and the portal's, which use no broker, once is enough), then the tests that restart ClickHouse
## and Redis (alone: they disturb the shared services), then a short fuzz run. The portal's browser
## tests need Chromium (services installs it).
test: build services kafka
	VEIL_TEST_BROKER=kafka $(GO) test -count=1 -timeout 12m ./...
	VEIL_TEST_BROKER=kfake $(GO) test -count=1 -timeout 5m -skip 'SIGKILL|WithKills|ControlPlane|ApprovalFlow|Gateway|Portal' $(KAFKA_PKGS)
	VEIL_TEST_BROKER=kafka $(GO) test -count=1 -timeout 10m -tags disrupt -run 'RestartMidRun' ./e2e
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./schemas/usage
	$(GO) test -run '^$$' -fuzz FuzzRouteRegexp -fuzztime $(FUZZTIME) ./metering

## demo: start the services and veil dev, walk the scenario, print what runs where.
demo: build services
	deploy/local/demo.sh

services:
	deploy/local/services.sh up

kafka:
	deploy/local/kafka.sh start

services-down:
	deploy/local/services.sh down

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## bench: ingest throughput against the real broker (make kafka) and the embedded one, then the pipeline,
## then the gateway's veil handler against plain Caddy.
bench: build services kafka
	bin/veil bench ingest --kafka-brokers 127.0.0.1:9092
	bin/veil bench ingest
	bin/veil bench pipeline --kafka-brokers 127.0.0.1:9092 --events 1000000
	bin/veil bench gateway --kafka-brokers 127.0.0.1:9092
	bin/veil bench enforcement --kafka-brokers 127.0.0.1:9092

## fuzz-api: schemathesis fuzzes the control plane's REST API from its OpenAPI document.
fuzz-api: build services
	deploy/ci/api_fuzz.sh

## check-clickhouse-current: run the ClickHouse migrations on a current ClickHouse engine (chdb).
check-clickhouse-current:
	deploy/ci/clickhouse_current.sh

## sqlc: regenerate the Go code of the Postgres queries (sqlc.yaml, docs/sql.md).
sqlc:
	$(GO) tool sqlc generate

## sqlc-check: fail when the committed generated code differs from what sqlc would write.
sqlc-check:
	$(GO) tool sqlc diff

## portal-vendor: fetch the portal's pinned browser libraries from npm into control-plane/portal/assets/vendor
## (checked against their integrity; the files are committed, so building never needs npm).
portal-vendor:
	control-plane/portal/vendor.sh

clean:
	rm -rf bin
