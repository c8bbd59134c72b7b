package vipservice

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/proxyhosts"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// Hosts knows which tailnet devices are this installation's proxies and whether each is Ready;
// *proxyhosts.Source implements it.
type Hosts interface {
	// Lookup reports whether the device with stable node ID nodeID is one of our proxies.
	Lookup(ctx context.Context, nodeID string) (proxyhosts.Host, bool)
	// Generation increases with every change of a proxy or its pod.
	Generation() uint64
	// OnChange registers fn, called after every change; it must not block.
	OnChange(fn func())
	HasSynced() bool
}

// ConditionHostsApproved, on a TailscaleServices with vipService.autoApprove, says which of the
// Service's hosts this installation approved and which it withdrew.
const ConditionHostsApproved = "HostsApproved"

// Reasons of ConditionHostsApproved and Events.
const (
	ReasonHostsApproved = "Approved"
	// ReasonNoReadyHost: none of our hosts is Ready and no other host serves the Service; the
	// approvals are left as they are (withdrawing them would leave the Service with no host).
	ReasonNoReadyHost = "NoReadyHost"
	// ReasonNoHosts: none of our proxies advertises the Service (yet).
	ReasonNoHosts = "NoHosts"
	// ReasonHostsUnknown: the proxies and their pods are not known (no Kubernetes API).
	ReasonHostsUnknown = "HostsUnknown"

	ReasonHostApproved  = "HostApproved"
	ReasonHostWithdrawn = "HostWithdrawn"
)

var (
	hostApprovals = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "tailscale_gateway", Subsystem: "vipservice", Name: "host_approvals_total",
		Help: "Approval calls for this installation's hosts of Tailscale Services (vipService.autoApprove), by action " +
			"(approve: a Ready proxy; withdraw: a proxy whose pod is not Ready or gone) and result (ok, error).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"action", "result"})
	registerMetrics sync.Once
)

// autoApprove reports whether obj asks this installation to approve its Service's hosts.
func autoApprove(obj *v1alpha1.TailscaleServices) bool {
	return obj.Spec.VIPService != nil && obj.Spec.VIPService.AutoApprove != nil && *obj.Spec.VIPService.AutoApprove
}

// host is one device listed for a Service, with what we know of it.
type host struct {
	tailnet.ServiceHost
	ours  bool
	proxy proxyhosts.Host
}

// approvals is what to do with the hosts of one Service.
type approvals struct {
	approve, withdraw []host
	// approved are our hosts that stay or become approved; kept are unready ones left approved
	// because no other host would serve the Service.
	approved, kept []host
	// withdrawn are our unready hosts that are or become unapproved.
	withdrawn []host
}

// decideApprovals approves our Ready hosts and withdraws our others, unless that would leave
// the Service with no approved host that advertises it: then our unready hosts keep their
// approval (an unready proxy may still carry traffic, no approved host never does), and none is
// approved that is not Ready. Hosts that are not ours are never changed.
func decideApprovals(hosts []host) approvals {
	var a approvals
	serving := false // after the change, some approved host advertises the Service
	for _, h := range hosts {
		switch {
		case !h.ours:
			serving = serving || (h.Approved && h.Configured)
		case h.proxy.Ready:
			serving = serving || h.Configured
		}
	}
	for _, h := range hosts {
		switch {
		case !h.ours:
		case h.proxy.Ready:
			a.approved = append(a.approved, h)
			if !h.Approved {
				a.approve = append(a.approve, h)
			}
		case !serving && h.Approved:
			a.kept = append(a.kept, h)
		default:
			a.withdrawn = append(a.withdrawn, h)
			if h.Approved {
				a.withdraw = append(a.withdraw, h)
			}
		}
	}
	return a
}

// knownHosts is a Service's host list as the API last answered this controller.
type knownHosts struct {
	hosts []tailnet.ServiceHost
	at    time.Time
	gen   uint64 // Hosts.Generation when read
}

// hostsOf returns the hosts of a Service: our own last answer from the API while it is newer
// than the tailnet's last poll and the proxies have not changed since, else the API's.
func (c *Controller) hostsOf(ctx context.Context, api tailnet.API, tn, name string) ([]tailnet.ServiceHost, error) {
	gen := c.opts.Hosts.Generation()
	snap, haveSnap := c.opts.Tailnets.Snapshot(tn)
	c.mu.Lock()
	k, ok := c.hosts[tn+"/"+name]
	c.mu.Unlock()
	if ok && k.gen == gen && (!haveSnap || !snap.LastSync.After(k.at)) {
		return k.hosts, nil
	}
	if ok && k.gen == gen && haveSnap && snap.ServiceHosts != nil {
		// A poll since: it shows what others changed; the proxies did not change.
		hs := snap.ServiceHosts[name]
		c.rememberHosts(tn, name, hs, gen)
		return hs, nil
	}
	hs, err := api.ServiceHosts(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("listing the hosts of Tailscale Service %s: %w", name, err)
	}
	c.rememberHosts(tn, name, hs, gen)
	return hs, nil
}

func (c *Controller) rememberHosts(tn, name string, hs []tailnet.ServiceHost, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts[tn+"/"+name] = knownHosts{hosts: slices.Clone(hs), at: time.Now(), gen: gen}
}

// approveHosts approves the Service's hosts that are our Ready proxies and withdraws our
// others (decideApprovals), and returns the HostsApproved condition. Approvals go first, so
// that the Service never has fewer hosts than needed in between.
func (c *Controller) approveHosts(ctx context.Context, obj *v1alpha1.TailscaleServices, tn string) (metav1.Condition, error) {
	cond := metav1.Condition{Type: ConditionHostsApproved, ObservedGeneration: obj.Generation}
	name := obj.Spec.VIPService.Name
	if c.opts.Hosts == nil || !c.opts.Hosts.HasSynced() {
		cond.Status, cond.Reason = metav1.ConditionUnknown, ReasonHostsUnknown
		cond.Message = "this installation's proxies are not known (standalone, proxy deployment off, or the pods not listed yet): no host is approved"
		return cond, nil
	}
	api, ok := c.opts.Tailnets.API(tn)
	if !ok {
		return cond, fmt.Errorf("tailnet %s is not polled: %w", tn, tailnet.ErrUnknownTailnet)
	}
	listed, err := c.hostsOf(ctx, api, tn, name)
	if err != nil {
		return cond, err
	}
	hosts := make([]host, 0, len(listed))
	for _, h := range listed {
		// Ours for this object: a proxy of ours that hosts it (in its namespace). A proxy of
		// another object hosting the same Service is not approved on this one's behalf.
		p, ours := c.opts.Hosts.Lookup(ctx, h.NodeID)
		ours = ours && p.Namespace == obj.Namespace && slices.Contains(p.Services, obj.Name)
		hosts = append(hosts, host{ServiceHost: h, ours: ours, proxy: p})
	}
	a := decideApprovals(hosts)
	registerMetrics.Do(func() { legacyregistry.MustRegister(hostApprovals) })
	log := klog.FromContext(ctx)
	var errs []error
	changed := false
	set := func(h host, approved bool) {
		action := map[bool]string{true: "approve", false: "withdraw"}[approved]
		if err := api.ApproveServiceHost(ctx, name, h.NodeID, approved); err != nil {
			hostApprovals.WithLabelValues(action, "error").Inc()
			errs = append(errs, fmt.Errorf("setting the approval of %s (%s) for %s: %w", h.NodeID, h.proxy.Pod, name, err))
			return
		}
		hostApprovals.WithLabelValues(action, "ok").Inc()
		changed = true
		if approved {
			log.Info("Approved a host of a Tailscale Service", "service", name, "node", h.NodeID, "pod", h.proxy.Pod)
			c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonHostApproved,
				"Approved %s (pod %s) as a host of Tailscale Service %s", h.NodeID, h.proxy.Pod, name)
		} else {
			log.Info("Withdrew a host of a Tailscale Service", "service", name, "node", h.NodeID, "pod", h.proxy.Pod, "why", h.proxy.Reason)
			c.opts.Recorder.Eventf(obj, corev1.EventTypeNormal, ReasonHostWithdrawn,
				"Withdrew the approval of %s as a host of Tailscale Service %s: %s (pod %s)", h.NodeID, name, h.proxy.Reason, h.proxy.Pod)
		}
	}
	for _, h := range a.approve {
		set(h, true)
	}
	for _, h := range a.withdraw {
		set(h, false)
	}
	if changed {
		// Our answer now: forget the list so that the next reconcile reads it again.
		c.mu.Lock()
		delete(c.hosts, tn+"/"+name)
		c.mu.Unlock()
	}
	switch {
	case len(a.kept) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonNoReadyHost
		cond.Message = fmt.Sprintf("no proxy of this installation hosting %s is Ready and no other host serves it; left approved: %s "+
			"(withdrawing them would leave the Service without a host)", name, describeHosts(a.kept))
	case len(a.approved) == 0 && len(a.withdrawn) == 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonNoHosts
		cond.Message = fmt.Sprintf("no proxy of this installation advertises %s", name)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonHostsApproved
		cond.Message = fmt.Sprintf("approved: %s", describeHosts(a.approved))
		if len(a.approved) == 0 {
			cond.Message = "approved: none"
		}
		if len(a.withdrawn) > 0 {
			cond.Message += "; withdrawn: " + describeHosts(a.withdrawn)
		}
	}
	return cond, errors.Join(errs...)
}

// describeHosts lists hosts as "<pod> (<node ID>[, <why not ready>])", sorted.
func describeHosts(hs []host) string {
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		s := h.proxy.Pod + " (" + h.NodeID
		if h.proxy.Reason != "" {
			s += ", " + h.proxy.Reason
		}
		out = append(out, s+")")
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
