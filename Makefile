# lopad - convenience targets over CMake. The README's quick start uses exactly two:
#   make demo   install build deps, build, run the demo on the embedded default model
#   make test   install deps, build, run every test (plain build, ASan+UBSan build, then a
#               TSan build of the threaded tests, a clang ASan+UBSan build: the tests again,
#               and every fuzzer for a few seconds)
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
CLANG_BUILD ?= build-clang
TSAN_BUILD ?= build-tsan
FUZZ_SECS ?= 5

.PHONY: all deps deps-test build demo test test-fast test-asan test-clang-ubsan test-fuzz-brief \
	test-tsan fuzz format clean install

all: build

deps:
	@bash scripts/deps.sh

deps-test:
	@bash scripts/deps.sh --test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)/lopad

test-fast: deps-test build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-asan: deps-test
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLOPAD_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j$(JOBS)

# clang's UBSan (pointer-overflow and friends, which gcc's misses) and the
# fuzzers share one clang build; both are skipped with a message without clang.
test-clang-ubsan: deps-test
	@LOPAD_FUZZ_OPTIONAL=1 LOPAD_FUZZ_BUILD=$(abspath $(CLANG_BUILD)) LOPAD_FUZZ_BUILD_JOBS=$(JOBS) \
		bash scripts/fuzz.sh --tests

test-fuzz-brief: test-clang-ubsan
	@LOPAD_FUZZ_OPTIONAL=1 LOPAD_FUZZ_BUILD=$(abspath $(CLANG_BUILD)) LOPAD_FUZZ_BUILD_JOBS=$(JOBS) \
		bash scripts/fuzz.sh $(FUZZ_SECS)

# ThreadSanitizer: the library's threads (pool, two generations on one model, every
# decoder with --threads 2 through the CLI tests)
TSAN_TESTS = test_api|test_forward|test_decode$$|test_fast$$|test_d2f$$|test_lopa$$|test_dpad$$|cli_test_run|cli_test_fast|cli_test_lopa
test-tsan: deps-test
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOPAD_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j$(JOBS)
	@cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j$(JOBS) \
		-R '$(TSAN_TESTS)'

test: test-fast test-asan test-tsan test-clang-ubsan test-fuzz-brief

fuzz:
	@bash scripts/fuzz.sh

format:
	@clang-format -i include/*.h src/*/*.[ch] src/*/*/*.[ch] cli/*.[ch] tests/unit/*.[ch]

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(CLANG_BUILD) $(TSAN_BUILD)

# make install PREFIX=/usr/local: header, static + shared library, lopad.pc, the command
PREFIX ?= /usr/local
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)
