# Thin wrapper over CMake + ctest.  `make demo` and `make test` install their
# own packages on a fresh Debian 12 machine.
BUILD    ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS     ?= $(shell nproc)
FUZZ_SECONDS ?= 120
PYTHON   ?= /usr/bin/python3
CMAKE_FLAGS ?=

.PHONY: all deps build install test test-c test-python asan fuzz demo format format-check bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the CLI, libtcast,
# headers, tcast.pc, man pages and systemd units (docs/operations.md).
PREFIX ?= /usr/local
install: build
	@cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)

test: build
	@scripts/run-tests.sh $(BUILD)

test-c: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-python: build
	TCAST_LIB=$(CURDIR)/$(BUILD)/lib/libtcast.so TCAST_BIN=$(CURDIR)/$(BUILD)/bin/tcast \
	  PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q tests/python

# The whole suite once more under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTC_ASAN=ON -DTC_UBSAN=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@TC_SANITIZED=1 scripts/run-tests.sh $(ASAN_BUILD)

# Every libFuzzer target for FUZZ_SECONDS each, seeded from tests/fuzz/corpus.
fuzz:
	@scripts/install-deps.sh --dev
	@CC=clang-14 cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTC_FUZZ=ON -DTC_ASAN=ON -DTC_UBSAN=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@scripts/run-fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@scripts/run-bench.sh $(BUILD)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
