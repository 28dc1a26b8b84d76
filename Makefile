# microchat — developer commands. `make test` is what CI runs (through .ci/run).

CARGO ?= cargo

.PHONY: run test lint fmt check-services check-deployments bench-auth bench-ws bench-overload bench-ws-anchor bench-login-storm bench-ws-idle bench-files bench-ws-multi bench-ws-idle-cluster bench-events bench-search faults soak help \
	up_build up down logs start stop

# The dev stack (deployments/docker-compose.yml) and the frontend run next to it.
COMPOSE ?= docker compose -f deployments/docker-compose.yml
FRONTEND_BROKER_URL ?= http://localhost:8080
FRONTEND_PID := target/frontend.pid
FRONTEND_LOG := target/frontend.log

help: ## List the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

run: ## Run every service in one process (same as `cargo run`)
	$(CARGO) run

test: check-services check-deployments ## The whole test suite: unit, store suites on SQLite and PostgreSQL, black-box, browser
	@scripts/test-tools.sh
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --all-targets --locked
	scripts/e2e.sh

lint: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

check-services: ## PostgreSQL and RabbitMQ must answer (in CI a missing one fails the run)
	@scripts/check-services.sh

check-deployments: ## Check deployments/ (compose, k8s, Prometheus, Grafana) against the binaries' settings and ports
	@scripts/test-tools.sh
	@py=.tools/venv/bin/python; "$$py" -c 'import yaml' 2>/dev/null || py=python3; \
		"$$py" scripts/check-deployments.py

up_build: ## Build the images and start the back end in containers (the dev stack)
	$(COMPOSE) up --build -d

up: ## Start the dev stack from the images already built
	$(COMPOSE) up -d

down: ## Stop the dev stack (its volumes stay: `docker compose ... down -v` drops them)
	$(COMPOSE) down

logs: ## Follow the dev stack's logs
	$(COMPOSE) logs -f

start: ## Run the frontend locally in the background against the dev stack's broker (log: target/frontend.log)
	@mkdir -p target
	@if [ -f $(FRONTEND_PID) ] && kill -0 "$$(cat $(FRONTEND_PID))" 2>/dev/null; then \
		echo "frontend already running (pid $$(cat $(FRONTEND_PID)))"; \
	else \
		FRONTEND_BROKER_URL=$(FRONTEND_BROKER_URL) nohup $(CARGO) run -p frontend > $(FRONTEND_LOG) 2>&1 & \
		echo $$! > $(FRONTEND_PID); \
		echo "frontend starting (pid $$!, broker $(FRONTEND_BROKER_URL)): http://localhost:8081, log in $(FRONTEND_LOG)"; \
	fi

stop: ## Stop the frontend that `make start` started
	@if [ -f $(FRONTEND_PID) ] && kill "$$(cat $(FRONTEND_PID))" 2>/dev/null; then \
		echo "frontend stopped (pid $$(cat $(FRONTEND_PID)))"; \
	else \
		echo "frontend was not running"; \
	fi
	@rm -f $(FRONTEND_PID)

bench-auth: ## Benchmark GET /api/auth/me through the broker against direct VerifyToken gRPC
	scripts/bench.sh auth --clients 64 --duration 10s

bench-ws: ## Benchmark WebSocket fan-out: server on one core, 10,000 sockets in rooms of 10, random sends
	PIN=1 scripts/bench.sh ws --sockets 10000 --room-size 10 --rate 1 --duration 20s --warmup 40s

bench-overload: ## Graceful overload: as bench-ws at 30,000 deliveries/s, with 200,000/s offered for 10 s in the middle: refusals, goodput, p99 of each second and how soon it is back under 250 ms
	PIN=1 scripts/bench.sh ws --sockets 10000 --room-size 10 --deliveries-per-sec 30000 --overload 200000 --overload-at 5s --overload-for 10s --duration 30s --warmup 20s

bench-files: ## Attachments: 100 concurrent uploads of 10 MiB through the broker to the local store (MB/s, server memory growth), then 1,000 concurrent thumbnail downloads (p50/p99)
	scripts/bench.sh files --uploads 100 --size-mib 10 --downloads 1000

bench-ws-anchor: ## The same fan-out load (random sends) against the Node anchor (../shared/anchors/node-ws) and microchat, one core each in turn, over a rate sweep: one table, the ratio
	scripts/bench-anchor.sh

bench-login-storm: ## 10,000 users log in within 20 s, then 30,000 deliveries/s (random sends) 5 s later: p99 of each second, deliveries still missing 10 s after
	PIN=1 scripts/bench.sh ws --login-storm --sockets 10000 --room-size 10 --deliveries-per-sec 30000 --duration 30s

bench-ws-idle: ## Hold 19,000 idle sockets on one broker (its own process) and report its memory per socket
	SPLIT=1 PIN=1 scripts/bench.sh ws --idle --sockets 19000 --source 127.0.0.1,127.0.0.2

bench-ws-multi: ## WebSocket fan-out over two brokers and two chat instances (PostgreSQL, RabbitMQ), as bench-ws
	BROKERS=2 CHATS=2 scripts/bench-cluster.sh ws --sockets 10000 --room-size 10 --rate 1 --duration 20s --source 127.0.0.1,127.0.0.2

bench-ws-idle-cluster: ## Hold 100,000 idle sockets over six brokers (several loadgen processes), every broker delivering
	BROKERS=6 CHATS=2 scripts/bench-cluster.sh idle 100000

soak: ## Resource bounds over time: 2,000 sockets × 1 msg/s for 30 min (SOAK_MINUTES, SOAK_SOCKETS), memory, fds, WAL and database sizes sampled each minute; fails on growth that does not level off
	scripts/soak.sh

faults: ## The fault matrix (each service killed under traffic), a short soak on the debug build, schemathesis against the OpenAPI spec, every cargo-fuzz target for a bounded time
	scripts/faults.sh

bench-events: ## Benchmark the durable event paths, outbox -> RabbitMQ or the embedded bus -> listener: 100,000 events at full speed, then at 10,000/s
	$(CARGO) run --release -p loadgen -- events --events 100000
	$(CARGO) run --release -p loadgen -- events --events 100000 --rate 10000
	$(CARGO) run --release -p loadgen -- events --bus embedded --events 100000

bench-search: ## Benchmark full-text search over 1,000,000 stored messages, on SQLite and on PostgreSQL (each its own database), with the insert cost of the index
	$(CARGO) run --release -p loadgen -- search --backend sqlite --insert-cost 100000
	$(CARGO) run --release -p loadgen -- search --backend postgres --insert-cost 100000
	$(CARGO) run --release -p loadgen -- events --bus embedded --events 100000 --rate 10000
