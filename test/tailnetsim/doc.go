// Package tailnetsim runs a local simulated tailnet for tests: an in-process
// testcontrol server with DERP and STUN, tsnet devices serving real HTTP, TCP,
// UDP and gRPC health, and a stateful fake Tailscale API v2 server over them.
package tailnetsim

import (
	_ "google.golang.org/grpc/health"
	_ "tailscale.com/client/tailscale/v2"
	_ "tailscale.com/tsnet"
	_ "tailscale.com/tstest/integration"
	_ "tailscale.com/tstest/integration/testcontrol"
)
