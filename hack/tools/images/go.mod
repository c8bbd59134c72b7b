// Module images assembles the project's OCI images from static binaries without Docker
// (hack/images.sh, `make images`) and holds the cluster's pause program. It is separate from the
// main module so go-containerregistry stays out of the main go.mod.
module github.com/tailscale-gateway/tailscale-gateway/hack/tools/images

go 1.26.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	golang.org/x/sync v0.22.0 // indirect
)
