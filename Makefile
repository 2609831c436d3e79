# Everything a developer or CI runs. Each target creates and uses .venv by itself,
# so on a fresh machine with Python 3.11+ `make run` and `make test` are the whole set-up.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Dev defaults for `make run`: no root needed (HTTPS on 8443, not 443), a plaintext
# MQTT port (bound to loopback only) for quick tries, the store under ./data.
# `make run` serves configs/dev.json: the device sensor1, the modules edge/filter and edge/monitor,
# and routes between them (the README's quick start sends a message through it).
CONFIG ?= configs/dev.json
RUN_ENV := StorageFolder=$${StorageFolder:-./data} \
	httpSettings__port=$${httpSettings__port:-8443} \
	mqttSettings__plainPort=$${mqttSettings__plainPort:-1883}

.PHONY: compiled clean-compiled run test soak fuzz lint bench bench-quick bench-arm32 bench-arm64 check-config check \
	image clean system-deps venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	EDGEHUB_COMPILE=0 $(BIN)/python -m pip install -q -e '.[dev]'  # pure Python; `make compiled` compiles in place
	@touch $(STAMP)

venv: $(STAMP)

# The azure-iot-device SDK pins paho-mqtt < 2: it gets a venv of its own for the
# conformance tests (tests/conformance/azure_sdk_client.py runs in it).
AZURE_STAMP := .venv-azure/.installed-stamp
$(AZURE_STAMP): tests/conformance/requirements-azure.txt
	@test -x .venv-azure/bin/python || $(PY) -m venv .venv-azure
	.venv-azure/bin/python -m pip install -q -r tests/conformance/requirements-azure.txt
	@touch $@

# The Node clients of the AMQP conformance tests (rhea, azure-iot-device + azure-iot-device-amqp),
# pinned by tests/conformance/node/package-lock.json.
NODE_STAMP := tests/conformance/node/node_modules/.installed-stamp
$(NODE_STAMP): tests/conformance/node/package.json tests/conformance/node/package-lock.json
	cd tests/conformance/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian packages the tests use as real peers (mosquitto); skipped where present.
system-deps:
	@sh scripts/system-deps.sh

run: $(STAMP)
	$(RUN_ENV) $(BIN)/edgehub run $(if $(CONFIG),--config $(CONFIG),)

check-config: $(STAMP)
	$(BIN)/edgehub check-config $(if $(CONFIG),--config $(CONFIG),)

# The deployment smoke test against the hub `make run` started (OK/WARN/FAIL per check).
check: $(STAMP)
	$(RUN_ENV) $(BIN)/edgehub check $(if $(CONFIG),--config $(CONFIG),)

# The multi-arch image (needs Docker with buildx; CI proves the image's steps without Docker,
# see tests/test_container.py). IMAGE=registry/edgehub:tag PUSH=1 pushes it.
IMAGE ?= edgehub:dev
PLATFORMS ?= linux/amd64,linux/arm64,linux/arm/v7
image:
	docker buildx build --platform $(PLATFORMS) -t $(IMAGE) $(if $(PUSH),--push,) .

lint: $(STAMP)
	$(BIN)/ruff check edgehub tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# The suite runs twice: on pure Python, then with the hot-path modules compiled in place by mypyc
# (setup.py, docs/performance.md), where this machine has a C compiler; the tree is pure again after.
test: $(STAMP) $(AZURE_STAMP) system-deps $(NODE_STAMP) lint
	$(BIN)/python scripts/build_compiled.py --clean
	EDGEHUB_EXPECT_COMPILED=0 $(BIN)/pytest
	@if $(BIN)/python scripts/build_compiled.py --check; then \
		$(BIN)/python scripts/build_compiled.py && EDGEHUB_EXPECT_COMPILED=1 $(BIN)/pytest; status=$$?; \
		$(BIN)/python scripts/build_compiled.py --clean; exit $$status; \
	else echo "make test: nothing can be compiled here; the pure-Python pass was the whole suite"; fi

# The hot-path modules compiled in place (their .so files beside the sources are imported instead);
# edgehub refuses to import once a compiled source changed. clean-compiled goes back to pure Python.
compiled: $(STAMP)
	$(BIN)/python scripts/build_compiled.py

clean-compiled:
	$(PY) scripts/build_compiled.py --clean

# The reliability suite's longest rounds (tests/reliability): 60 power cuts per backend instead of 6,
# 200 kill -9 rounds under load instead of 20, 200,000 fuzzed packets instead of 12,000.
soak: $(STAMP) system-deps
	EDGEHUB_POWER_ROUNDS=60 EDGEHUB_KILL9_ROUNDS=200 EDGEHUB_FUZZ_PACKETS=200000 $(BIN)/pytest tests/reliability tests/store/test_crash.py tests/store/test_crash_newest_first.py

# The atheris harness of the MQTT codec and session (tests/fuzz/mqtt_codec.py) for FUZZ_SECS seconds;
# a Hypothesis loop where atheris is not installed. `make test` runs a bounded smoke of the same target.
FUZZ_SECS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.mqtt_codec -max_total_time=$(FUZZ_SECS)

# The benchmark suite (bench/README.md): tables and plots in bench/results/<date>-<host>-<arch>.md.
# BENCH_ARGS picks scenarios (`make bench BENCH_ARGS=mqtt`); bench-quick is the < 5 min profile.
# Both measure the compiled hot path where this machine can compile it (what `pip install .` builds).
bench: $(STAMP) system-deps
	$(BIN)/python scripts/build_compiled.py --if-possible
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(STAMP) system-deps
	$(BIN)/python scripts/build_compiled.py --if-possible
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# The hub on 32-bit ARM: a Debian armhf root filesystem (cached in /var/cache/edgehub-arm32) under
# qemu-user-static, or natively on a Raspberry Pi: the functional smoke and quick scenarios (root needed).
bench-arm32: $(STAMP)
	sh bench/arm32/run.sh $(ARM32_ARGS)

# The same on 64-bit ARM (a Debian arm64 root filesystem, RocksDB from rocksdict's aarch64 wheel and SQLite).
bench-arm64: $(STAMP)
	sh bench/arm32/run.sh --arch arm64 $(ARM32_ARGS)

clean: clean-compiled
	rm -rf $(VENV) .venv-azure .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
