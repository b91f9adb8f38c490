# berth — build, test, benchmark, install and demo. Run as root on Debian 12.
GO      ?= go
BIN     := bin
PREFIX  ?= /usr/local
# The whole suite, root integration tests included, must stay well under CI's 30 minutes.
TESTFLAGS ?= -count=1 -timeout 28m

.PHONY: all build test unit deps bench-deps bench install uninstall demo demo-down fuzz clean

all: build

# Static binaries: no libc mapped in each machine's supervisor (4.4 MiB RSS
# instead of 6), and they copy into any root as they are.
export CGO_ENABLED = 0

build:
	$(GO) build -o $(BIN)/ ./cmd/berth ./cmd/berthd ./cmd/berth-stage

deps:
	./hack/deps.sh

# test is the README's test command: every unit and integration test, and a short
# run of each fuzz target. Root tests skip (with a reason) when not root.
test: deps build
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...
	$(MAKE) fuzz

# unit runs only the tests that need no privileges and no images.
unit:
	$(GO) test -short -count=1 ./...

FUZZTIME ?= 15s
fuzz:
	./hack/fuzz.sh $(FUZZTIME)

# bench compares berth with systemd-nspawn (and LXC) on the same rootfs in the
# same run and writes the figures to bench/out/ (the README's Figures section
# shows them). Its peers beyond nspawn are installed by `hack/deps.sh bench`,
# which `make test` does not need.
bench: bench-deps build
	$(GO) run ./bench $(BENCH)

bench-deps:
	./hack/deps.sh bench

install: build
	$(BIN)/berth install --prefix $(PREFIX)

uninstall:
	$(BIN)/berth uninstall --prefix $(PREFIX)

# demo is the README's main job: build, make the example image, apply examples/,
# show `berth list`.
demo: deps build
	./hack/demo.sh

demo-down: build
	./hack/demo.sh down

clean:
	rm -rf $(BIN) bench/out
