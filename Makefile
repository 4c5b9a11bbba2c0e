# lopad - convenience targets over CMake. The README's quick start uses exactly two:
#   make demo   install build deps, build, run the demo on the embedded default model
#   make test   install deps, build, run every test (plain build, then ASan+UBSan build)
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all deps deps-test build demo test test-fast test-asan fuzz format clean

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

test: test-fast test-asan

fuzz:
	@bash scripts/fuzz.sh

format:
	@clang-format -i include/*.h src/*/*.[ch] src/*/*/*.[ch] cli/*.[ch] tests/unit/*.[ch]

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
