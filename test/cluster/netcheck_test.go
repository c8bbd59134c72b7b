package cluster_test

// netcheckImage is the image of test/cluster/netcheck (hack/images.sh test) at this run's tag:
// `netcheck serve` answers HTTP on :8080 with "netcheck <hostname>", `netcheck get URL` prints a
// body and exits non-zero unless the answer is 200.
func netcheckImage() string {
	return "ghcr.io/tailscale-gateway/netcheck:" + imageTag
}
