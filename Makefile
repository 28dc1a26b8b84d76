# microchat — developer commands. `make test` is what CI runs (through .ci/run).

CARGO ?= cargo

.PHONY: run test lint fmt check-services bench-auth bench-ws bench-ws-idle bench-events help

help: ## List the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## Run every service in one process (same as `cargo run`)
	$(CARGO) run

test: check-services ## The whole test suite: unit, store suites on SQLite and PostgreSQL, black-box
	@scripts/test-tools.sh
	$(CARGO) test --workspace --all-targets --locked

lint: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

check-services: ## PostgreSQL and RabbitMQ must answer (in CI a missing one fails the run)
	@scripts/check-services.sh

bench-auth: ## Benchmark GET /api/auth/me through the broker against direct VerifyToken gRPC
	scripts/bench.sh auth --clients 64 --duration 10s

bench-ws: ## Benchmark WebSocket fan-out: server on one core, 10,000 sockets in rooms of 10
	PIN=1 scripts/bench.sh ws --sockets 10000 --room-size 10 --rate 1 --duration 20s

bench-ws-idle: ## Hold 19,000 idle sockets on one broker and report its memory per socket
	PIN=1 scripts/bench.sh ws --idle --sockets 19000 --source 127.0.0.1,127.0.0.2

bench-events: ## Benchmark the durable event path: outbox -> RabbitMQ -> listener, 100,000 events
	$(CARGO) run --release -p loadgen -- events --events 100000
