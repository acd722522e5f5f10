# Keybrake's front door. Everything real happens in CMake; this file only
# names the common tasks and installs what a fresh machine is missing.
#
#   make           build build/keybrake (release with debug info)
#   make run       install deps, build, start the daemon on ./var
#   make test      install deps, build with ASan+UBSan, run every test
#   make bench     benchmark against nginx (see bench/README.md)
#   make fuzz      build the libFuzzer targets
#   make format    clang-format the C sources

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
TEST_BUILD ?= build-asan

.PHONY: all build run test test-unit test-blackbox deps deps-test fuzz bench format clean

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

test: deps-test
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKB_SANITIZE=ON -DKB_WERROR=ON \
		-DKB_TEST_HOOKS=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@$(MAKE) --no-print-directory test-unit test-blackbox

test-unit:
	@cd $(TEST_BUILD) && ctest --output-on-failure -j $(JOBS)

test-blackbox:
	@cd tests/blackbox && KEYBRAKE_BIN=$(CURDIR)/$(TEST_BUILD)/keybrake \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		node --test --test-concurrency=$(JOBS) --test-timeout=120000 *.test.js

fuzz:
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DKB_FUZZ=ON -DKB_SANITIZE=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

bench: deps build
	@bench/run.sh

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c')

clean:
	rm -rf $(BUILD) $(TEST_BUILD) build-fuzz
