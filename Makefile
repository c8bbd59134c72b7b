# tailscale-gateway: `make run` starts the standalone server, `make test` runs every check CI runs.
GO      ?= go
BIN     := _output/bin
DATA    := _output/local
ADDR    ?= 127.0.0.1
PORT    ?= 8443

.PHONY: all build run test verify unit integration bench codegen clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: start the standalone server (embedded etcd, local CA, admin kubeconfig) on $(ADDR):$(PORT).
run: build
	@echo "Starting tailscale-gateway-apiserver; in another shell:"
	@echo "  kubectl --kubeconfig $(DATA)/kubeconfig apply -f examples/"
	@echo "  kubectl --kubeconfig $(DATA)/kubeconfig get tailscale -A"
	$(BIN)/tailscale-gateway-apiserver --standalone --data-dir $(DATA) \
		--bind-address $(ADDR) --secure-port $(PORT)

## test: codegen verification, formatting, vet, unit and integration tests.
test: verify
	$(GO) test -count=1 -timeout 30m ./...

verify:
	hack/verify-codegen.sh
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './_output/*')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## bench: GET/LIST benchmarks against the in-process server.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2000x -timeout 60m ./test/benchmark/

codegen:
	hack/update-codegen.sh

clean:
	rm -rf _output
