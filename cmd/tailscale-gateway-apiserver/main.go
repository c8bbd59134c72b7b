// Command tailscale-gateway-apiserver serves the gateway.tailscale.com API group.
package main

import (
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
)

func main() {
	ctx := genericapiserver.SetupSignalContext()
	if err := server.NewCommand(ctx).Execute(); err != nil {
		klog.ErrorS(err, "Server stopped")
		os.Exit(1)
	}
}
