# Keybrake's front door. Everything real happens in CMake; this file only
# names the common tasks and installs what a fresh machine is missing.
#
#   make           build build/keybrake (release with debug info)
#   make run       install deps, build, start the daemon on ./var
#   make demo      the same in front of a sandbox vendor (no vendor account; ./var-demo)
#   make test      install deps, build with ASan+UBSan, run every test
#   make test-clients  the Node kit and the integration guides' checks (after make test's build)
#   make bench     benchmark against nginx (see bench/README.md)
#   make bench-meter  CPU per exchange in the meters
#   make fuzz      build the libFuzzer targets
#   make install   install (PREFIX=/usr/local, DESTDIR=) binary, unit, man page, sample config
#   make deb       build/keybrake_<version>_<arch>.deb with Debian's dpkg-deb
#   make format    clang-format the C sources

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
TEST_BUILD ?= build-asan

PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build run demo test install deb test-unit test-blackbox test-blackbox-pg test-fuzz deps deps-test fuzz bench bench-meter format clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

run: deps build
	@exec $(BUILD)/keybrake serve $(if $(CONFIG),--config $(CONFIG))

# demo/run.sh: demo/sandbox.js (not a real vendor) + the daemon with
# demo/keybrake-demo.ini; prints the dashboard URL and admin token; Ctrl-C stops both.
demo: deps build
	@KEYBRAKE_BIN=$(BUILD)/keybrake exec demo/run.sh

test: deps-test
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKB_SANITIZE=ON -DKB_WERROR=ON \
		-DKB_TEST_HOOKS=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@$(MAKE) --no-print-directory test-unit test-blackbox test-blackbox-pg test-clients test-fuzz

test-unit:
	@cd $(TEST_BUILD) && ctest --output-on-failure -j $(JOBS)

test-blackbox:
	@cd tests/blackbox && KEYBRAKE_BIN=$(CURDIR)/$(TEST_BUILD)/keybrake \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		node --test --test-concurrency=$(JOBS) --test-timeout=120000 *.test.js

# The black-box suite again with every daemon on its own PostgreSQL
# database (a throwaway server per test file, tests/pg/pg-test.sh); the
# tests of the SQLite file itself say so and are skipped with the reason.
# (The browser, demo and cluster files do not depend on the store.)
test-blackbox-pg:
	@cd tests/blackbox && KEYBRAKE_BIN=$(CURDIR)/$(TEST_BUILD)/keybrake KEYBRAKE_TEST_STORE=postgres \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		node --test --test-concurrency=$(JOBS) --test-timeout=120000 \
		$$(ls *.test.js | grep -v -x -e cluster.test.js -e ui.test.js -e demo.test.js)

# The Node kit (clients/node) and the integration guides' snippets
# (tests/integrations: Java, Ruby) against the same binary. The kit's npm
# packages are installed from its lock file when missing or older than it.
.PHONY: test-clients
test-clients:
	@if [ ! -d clients/node/node_modules ] || \
	    [ clients/node/package-lock.json -nt clients/node/node_modules ]; then \
		(cd clients/node && npm ci --no-audit --no-fund --loglevel=error); fi
	@cd clients/node && KEYBRAKE_BIN=$(CURDIR)/$(TEST_BUILD)/keybrake \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		node --test --test-concurrency=$(JOBS) --test-timeout=120000 test/*.test.js test/*.test.mjs
	@cd tests/integrations && KEYBRAKE_BIN=$(CURDIR)/$(TEST_BUILD)/keybrake \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		node --test --test-concurrency=$(JOBS) --test-timeout=120000 *.test.js

fuzz:
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DKB_FUZZ=ON -DKB_SANITIZE=ON -DKB_WERROR=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target $$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$$//')

# Each fuzz target runs briefly on a scratch copy of its seed corpus; a
# crash fails the build and leaves its input in build-fuzz/.
FUZZ_SECONDS ?= 10
test-fuzz: fuzz
	@for f in tests/fuzz/fuzz_*.c; do t=$$(basename $$f .c); \
		rm -rf build-fuzz/corpus-$$t && cp -r tests/fuzz/corpus/$$t build-fuzz/corpus-$$t && \
		build-fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build-fuzz/$$t- \
			build-fuzz/corpus-$$t > build-fuzz/$$t.log 2>&1 || { tail -40 build-fuzz/$$t.log; exit 1; }; \
		echo "fuzz: $$t: $$(tail -1 build-fuzz/$$t.log)"; done

bench: deps build
	@bench/run.sh

# CPU per exchange spent in the meters (no servers; about 10 s)
bench-meter: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target meter_cost
	@$(BUILD)/meter_cost

# The prefix is given at install time: the unit's paths follow it
# (packaging/install.cmake); /usr puts the configuration in /etc.
install: build
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# A .deb for this machine's architecture from a /usr install staged in
# $(BUILD)/deb-root (packaging/keybrake.service is installed, not enabled).
deb: build
	@rm -rf $(BUILD)/deb-root
	@DESTDIR="$(CURDIR)/$(BUILD)/deb-root" cmake --install $(BUILD) --prefix /usr >/dev/null
	@scripts/mkdeb.sh $(BUILD)/deb-root $(BUILD)

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c')

clean:
	rm -rf $(BUILD) $(TEST_BUILD) build-fuzz
