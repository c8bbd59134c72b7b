// Command coredns is the test cluster's DNS server: CoreDNS with only the plugins the cluster's
// Corefile uses (hack/cluster-up.sh), which keeps its build a fraction of the full server's.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	// The order plugins run in, as in CoreDNS's plugin.cfg, restricted to those compiled in.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "cache", "loadbalance", "kubernetes"}
	coremain.Run()
}
