# tailscale-gateway: `make run` starts the standalone server, `make test` runs every check CI runs.
GO      ?= go
BIN     := _output/bin
DATA    := _output/local
ADDR    ?= 127.0.0.1
PORT    ?= 8443
VERSION_PKG := github.com/tailscale-gateway/tailscale-gateway/pkg/version
GIT_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
GIT_COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE  ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS     := -X $(VERSION_PKG).gitVersion=$(GIT_VERSION) -X $(VERSION_PKG).gitCommit=$(GIT_COMMIT) \
	-X $(VERSION_PKG).buildDate=$(BUILD_DATE)
# The cluster suite (test/cluster) needs root: it runs in `make test` when make runs as root
# (CLUSTER_TESTS=0 leaves it out; it then skips).
CLUSTER_TESTS ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)

.PHONY: all build run test verify tools fuzz unit integration bench bench-aggregation codegen clean artifacts \
	cluster-up cluster-down images chart

all: build

## build: every command into $(BIN), with the version from git describe (--version, /version).
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## run: start a simulated tailnet and the standalone server (embedded etcd, local CA, admin
## kubeconfig) wired to it on $(ADDR):$(PORT), and apply the examples.
run: build
	DATA=$(DATA) ADDR=$(ADDR) PORT=$(PORT) hack/local-up.sh

## test: codegen verification, formatting, vet, chart lint, unit, integration and e2e tests (the e2e
## suite runs kube-apiserver and kube-controller-manager, which tools builds when they are missing)
## and, as root, the cluster suite on a real node (docs/cluster.md).
test: verify tools chart fuzz
	TSGW_CLUSTER=$(CLUSTER_TESTS) $(GO) test -count=1 -timeout 30m ./...

## fuzz: every go test -fuzz target for FUZZTIME each (default 8s; FUZZTIME=10m make fuzz for a
## longer run). Failing inputs land in the package's testdata/fuzz/ and stay as regression cases.
fuzz:
	GO=$(GO) hack/fuzz.sh

## tools: build kube-apiserver and kube-controller-manager v1.36 and envoy-gateway v1.9.1 into
## $(BIN) unless up to date (hack/build-tools.sh; 10-20 min each when cold, seconds otherwise),
## and as root the cluster's tools (docs/cluster.md).
tools:
	hack/build-tools.sh kube-apiserver kube-controller-manager envoy-gateway \
		$(if $(filter 1,$(CLUSTER_TESTS)),cluster)

## verify: generated code and API reference up to date, repository hygiene (hack/verify-repo.sh),
## gofmt, go vet.
verify:
	hack/verify-codegen.sh
	hack/verify-repo.sh
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './_output/*')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## bench: GET/LIST (stored and live status), transition latency and API calls under read load
## against the in-process server (figures in docs/performance.md).
bench:
	hack/bench.sh

## bench-aggregation: the same TailscaleEndpoints through kube-apiserver aggregation, directly, and
## as a CRD of the same kube-apiserver (GET percentiles, LIST, watch event latency).
bench-aggregation: tools
	$(GO) test -run '^$$' -bench . -benchtime 5s -timeout 60m ./test/benchmark/aggregation/

## cluster-up: a real single-node Kubernetes v1.36 cluster in the network namespace tsgw-node
## (root; docs/cluster.md); KUBECONFIG=_output/cluster/admin.kubeconfig. cluster-down removes it.
cluster-up:
	hack/cluster-up.sh

cluster-down:
	hack/cluster-down.sh

## images: OCI archives of tailscale-gateway-apiserver and tailscale-gateway-proxy for linux/amd64
## and linux/arm64 in _output/images, tagged `git describe` (TAG, REGISTRY, PLATFORMS override).
images:
	hack/images.sh

## artifacts: artifacts/deploy and artifacts/envoy-gateway/rbac.yaml, rendered from the chart.
artifacts:
	hack/build-tools.sh helm
	hack/render-artifacts.sh

## chart: helm lint and helm template of charts/tailscale-gateway with its value combinations.
chart:
	hack/build-tools.sh helm
	hack/verify-chart.sh

codegen:
	hack/update-codegen.sh

clean:
	rm -rf _output
