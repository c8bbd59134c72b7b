package apiserver

import (
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/registry"
)

// Overlays add live status to each kind on the read paths. A nil overlay serves stored status.
type Overlays struct {
	Tailnet   registry.Overlay[gateway.TailscaleTailnet, *gateway.TailscaleTailnet]
	Endpoints registry.Overlay[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]
	Services  registry.Overlay[gateway.TailscaleServices, *gateway.TailscaleServices]
	Gateway   registry.Overlay[gateway.TailscaleGateway, *gateway.TailscaleGateway]
}

// NewOverlays computes each kind's status from src and sel, in memory, on every read. A
// standalone server's TailscaleGateways also say that nothing is generated for them.
func NewOverlays(src livestatus.Sources, sel livestatus.EndpointsSelector, standalone bool) *Overlays {
	return &Overlays{
		Tailnet: func(o *gateway.TailscaleTailnet) { o.Status = livestatus.TailnetStatus(o, src, time.Now()) },
		Endpoints: func(o *gateway.TailscaleEndpoints) {
			o.Status = livestatus.Endpoints(o, src, time.Now())
		},
		Services: func(o *gateway.TailscaleServices) { o.Status = livestatus.Services(o, src, sel, time.Now()) },
		Gateway: func(o *gateway.TailscaleGateway) {
			now := time.Now()
			o.Status = livestatus.Gateway(o, src, now)
			if standalone {
				livestatus.SetStandaloneGateway(o, now)
			}
		},
	}
}
