package livestatus

import (
	"context"

	informers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/informers/externalversions"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Collector gathers live tailnet and health state in the background and answers Sources reads
// from memory.
type Collector interface {
	Sources
	// Configure registers the collector's informer handlers (which tailnets to poll, which
	// endpoints to probe), the receiver of its change notifications and the tenancy policy its
	// Tenancy returns (endpoints it refuses are not probed). It is called once, before the
	// informers start.
	Configure(factory informers.SharedInformerFactory, notify Notifier, policy *tenancy.Policy) error
	// Run collects until ctx is done.
	Run(ctx context.Context)
}

// Notifier receives a Collector's transitions.
type Notifier interface {
	// EndpointsChanged reports a health transition of an endpoint of a TailscaleEndpoints.
	EndpointsChanged(namespace, name string)
	// TailnetChanged reports a change of devices' online state or of a tailnet's sync state.
	TailnetChanged()
}
