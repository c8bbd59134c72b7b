package livestatus

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// Condition types set by this package.
const (
	ConditionReady           = "Ready"
	ConditionTailnetSynced   = "TailnetSynced"
	ConditionVIPServiceReady = "VIPServiceReady"
	ConditionTailnetsReady   = "TailnetsReady"
)

// Endpoints returns the status of a TailscaleEndpoints with the live state of each endpoint: its
// device's presence in the tailnet and its health. An endpoint without an enabled health check is
// Healthy while its device is online, Unhealthy while it is offline, and Unknown when the tailnet
// has no device at its address.
func Endpoints(obj *gateway.TailscaleEndpoints, src Sources, now time.Time) gateway.TailscaleEndpointsStatus {
	tn, haveTailnet, admitted := tailnetFor(src, obj.Namespace, obj.Spec.Tailnet)
	st := gateway.TailscaleEndpointsStatus{
		Endpoints:      make([]gateway.EndpointStatus, 0, len(obj.Spec.Endpoints)),
		TotalEndpoints: int32(len(obj.Spec.Endpoints)),
	}
	var offline int32
	// Endpoints on one device (several ports of a host) share its online and lastSeen values,
	// which nothing writes through: one allocation each per device rather than per endpoint.
	var last struct {
		device string
		online *bool
		seen   *metav1.Time
	}
	for i, ep := range obj.Spec.Endpoints {
		es := gateway.EndpointStatus{
			Name:    ep.Name,
			Address: endpointAddress(ep, obj.Status.Endpoints, i),
			Status:  Unknown,
		}
		if dev, ok := tn.deviceFor(ep.TailscaleIP, ep.TailscaleFQDN); haveTailnet && ok {
			if last.online == nil || last.device != dev.Name {
				online := dev.Online
				last.device, last.online, last.seen = dev.Name, &online, nil
				if !dev.LastSeen.IsZero() {
					last.seen = &metav1.Time{Time: dev.LastSeen}
				}
			}
			es.Online, es.LastSeen = last.online, last.seen
			if !dev.Online {
				offline++
			}
		}
		// A probe decides: the endpoint's own check, or the loadBalancing.healthCheck of a
		// TailscaleServices selecting it or the ingress defaultBackend.healthCheck of a
		// TailscaleGateway routing to it, which this replica's collector runs in its place.
		p, probed := src.Probe(ProbeKey(obj.Namespace, obj.Name, ep.Name))
		if (probed && !p.Persisted) || (ep.HealthCheck != nil && ep.HealthCheck.Enabled != nil && *ep.HealthCheck.Enabled) {
			if ok := probed; ok && admitted.Allowed && p.Persisted {
				es.Status = persistedHealth(obj.Status.Endpoints, i, ep.Name, es.Status)
			} else if ok && admitted.Allowed {
				es.Status = p.Status
				es.Error = p.Error
				if !p.LastChecked.IsZero() {
					es.LastChecked = &metav1.Time{Time: p.LastChecked}
					es.Latency = &metav1.Duration{Duration: p.Latency}
				}
			}
		} else if es.Online != nil {
			es.Status = map[bool]string{true: Healthy, false: Unhealthy}[*es.Online]
		}
		if es.Status == Healthy {
			st.HealthyEndpoints++
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	// Devices matching spec.tagSelectors follow the declared endpoints, with the health their
	// online state gives (they carry no health check of their own).
	if haveTailnet {
		for discovered, d := range DiscoverEndpoints(obj, tn) {
			online := d.Online
			es := gateway.EndpointStatus{Name: d.Name, Address: d.Address, Online: &online, Status: Unhealthy}
			if online {
				es.Status = Healthy
			} else {
				offline++
			}
			// The TCP probe the collector runs for discovered endpoints decides once it has.
			if p, ok := src.Probe(ProbeKey(obj.Namespace, obj.Name, d.Name)); ok && p.Persisted {
				es.Status = persistedHealth(obj.Status.Endpoints, len(obj.Spec.Endpoints)+discovered, d.Name, es.Status)
			} else if ok && p.Status != Unknown && p.Status != "" {
				es.Status, es.Error = p.Status, p.Error
				if !p.LastChecked.IsZero() {
					es.LastChecked = &metav1.Time{Time: p.LastChecked}
					es.Latency = &metav1.Duration{Duration: p.Latency}
				}
			}
			if es.Status == Healthy {
				st.HealthyEndpoints++
			}
			st.TotalEndpoints++
			st.Endpoints = append(st.Endpoints, es)
		}
	}
	if sd := obj.Spec.ServiceDiscovery; sd != nil {
		for _, v := range sd.VIPServices {
			vs := gateway.VIPServiceStatus{Name: v.Name, Status: "NotRegistered"}
			if svc, ok := tn.service(v.Name); haveTailnet && ok {
				// Registered once a host serves it; until then it exists but answers nothing.
				vs.Status = "Pending"
				if servingHosts(svc) > 0 {
					vs.Status = "Registered"
				}
				if len(svc.Addrs) > 0 {
					vs.VIPAddress = svc.Addrs[0]
				}
			}
			vs.LastUpdated = vipLastUpdated(obj.Status.VIPServices, vs, now)
			st.VIPServices = append(st.VIPServices, vs)
		}
	}

	conds := conditions{list: obj.Status.Conditions}
	setTailnetSynced(&conds, obj.Spec.Tailnet, tn, haveTailnet, obj.Generation, now)
	setAccepted(&conds, obj.Generation, now, admitted)
	setSupported(&conds, IgnoredEndpointsFields(&obj.Spec), obj.Generation, now)
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "EndpointsHealthy",
		Message: conds.countOf(ConditionReady, st.HealthyEndpoints, st.TotalEndpoints, "endpoints healthy")}
	switch {
	case !admitted.Allowed:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, tenancy.ReasonNotAllowedByTailnet, admitted.Message
	case !haveTailnet || !tn.Synced:
		ready.Status, ready.Reason = metav1.ConditionUnknown, "TailnetNotSynced"
	case offline > 0:
		ready.Status, ready.Reason = metav1.ConditionFalse, "DevicesOffline"
		ready.Message = conds.countOf(ConditionReady, offline, st.TotalEndpoints, "endpoint devices offline")
	case st.HealthyEndpoints < st.TotalEndpoints:
		ready.Status, ready.Reason = metav1.ConditionFalse, "EndpointsUnhealthy"
	}
	conds.set(ready, obj.Generation, now)
	st.Conditions = conds.list
	st.Egress = obj.Status.Egress // the allocator's record (pkg/controllers/egressalloc), stored as written
	return st
}

// persistedHealth is the stored health of the endpoint named name, expected at index i of the
// stored status; def when the stored status does not have it.
func persistedHealth(stored []gateway.EndpointStatus, i int, name, def string) string {
	if i < len(stored) && stored[i].Name == name {
		return stored[i].Status
	}
	for _, e := range stored {
		if e.Name == name {
			return e.Status
		}
	}
	return def
}

// countOf is "<n> of <total> <what>", the message of the stored condition t when it says so
// already: it runs on every read, which then shares the stored string rather than build it.
func (cs *conditions) countOf(t string, n, total int32, what string) string {
	var buf [32]byte
	prefix := strconv.AppendInt(buf[:0], int64(n), 10)
	prefix = append(prefix, " of "...)
	prefix = strconv.AppendInt(prefix, int64(total), 10)
	prefix = append(prefix, ' ')
	if old := meta.FindStatusCondition(cs.list, t); old != nil && len(old.Message) == len(prefix)+len(what) &&
		old.Message[:len(prefix)] == string(prefix) && old.Message[len(prefix):] == what {
		return old.Message
	}
	return string(prefix) + what
}

// endpointAddress is the endpoint's host:port, the stored status's string when it already says
// so: reads then share it rather than build it again.
func endpointAddress(ep gateway.TailscaleEndpoint, stored []gateway.EndpointStatus, i int) string {
	if i < len(stored) && stored[i].Name == ep.Name && isHostPort(stored[i].Address, ep.TailscaleIP, ep.Port) {
		return stored[i].Address
	}
	return net.JoinHostPort(ep.TailscaleIP, strconv.Itoa(int(ep.Port)))
}

// isHostPort reports whether addr is net.JoinHostPort of host and port, without allocating.
func isHostPort(addr, host string, port int32) bool {
	h, p, err := net.SplitHostPort(addr)
	var buf [11]byte
	return err == nil && h == host && p == string(strconv.AppendInt(buf[:0], int64(port), 10))
}

// StripEndpoints clears the fields of a TailscaleEndpoints status that change on every probe or
// poll; what is left changes only on transitions and is what the status writer persists.
func StripEndpoints(st *gateway.TailscaleEndpointsStatus) {
	eps := make([]gateway.EndpointStatus, len(st.Endpoints))
	for i, e := range st.Endpoints {
		e.LastChecked, e.Latency, e.LastSeen, e.Error = nil, nil, nil, ""
		eps[i] = e
	}
	st.Endpoints = eps
}

// Tailnet returns the status of a TailscaleTailnet: tailnet info, device counts and sync state.
func TailnetStatus(obj *gateway.TailscaleTailnet, src Sources, now time.Time) gateway.TailscaleTailnetStatus {
	tn, ok := src.Tailnet(obj.Name)
	st := gateway.TailscaleTailnetStatus{}
	conds := conditions{list: obj.Status.Conditions}
	if ok {
		st.TailnetInfo = &gateway.TailnetInfo{Name: tn.Name, MagicDNSSuffix: tn.MagicDNSSuffix}
		st.DeviceCount = int32(len(tn.Devices))
		for _, d := range tn.Devices {
			if d.Online {
				st.ConnectedDeviceCount++
			}
		}
		if !tn.LastSync.IsZero() {
			st.LastSyncTime = &metav1.Time{Time: tn.LastSync}
		}
	}
	setTailnetSynced(&conds, obj.Name, tn, ok, obj.Generation, now)
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "TailnetConnected",
		Message: "the Tailscale API answers with the configured credentials"}
	if !ok || !tn.Synced {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "TailnetNotSynced", syncedMessage(obj.Name, tn, ok)
	}
	conds.set(ready, obj.Generation, now)
	st.Conditions = conds.list
	return st
}

// StripTailnet clears the fields of a TailscaleTailnet status that change on every poll.
func StripTailnet(st *gateway.TailscaleTailnetStatus) {
	st.LastSyncTime = nil
}

// SelectedEndpoints summarises a TailscaleEndpoints for the TailscaleServices selecting it.
type SelectedEndpoints struct {
	Name, Namespace, Tailnet string
	Labels                   map[string]string
	Total, Healthy           int32
	// Pending counts endpoints without a probe result yet (status Unknown or none).
	Pending  int32
	Machines []string
	// Endpoints are the names of its endpoints, declared and discovered: the last part of their
	// probe keys.
	Endpoints []string
}

// EndpointsSelector lists TailscaleEndpoints of a namespace matching a selector, from memory.
type EndpointsSelector interface {
	SelectEndpoints(namespace string, selector labels.Selector) []SelectedEndpoints
}

// Condition types and fields of a TailscaleServices status written by the VIP service controller
// (pkg/controllers/vipservice), not computed here: Services carries them over from the stored
// object, so that the status writer and the controller never undo each other's writes.
const (
	// ConditionConflict is True while the tailnet holds a Service of the name that this
	// installation does not own and may not attach to.
	ConditionConflict = "Conflict"
	// ConditionDegraded is True while the controller cannot reconcile the Service (API errors).
	ConditionDegraded = "Degraded"
)

// Services returns the status of a TailscaleServices: the selected endpoints, the VIP service as
// the tailnet reports it, backend counts and the active failover tier. The controller-owned parts
// (conditions Conflict, Degraded and HostsApproved, vipServiceStatus.lastRegistration, serviceInfo) are kept as
// stored.
func Services(obj *gateway.TailscaleServices, src Sources, sel EndpointsSelector, now time.Time) gateway.TailscaleServicesStatus {
	st := gateway.TailscaleServicesStatus{ServiceInfo: obj.Status.ServiceInfo}
	conds := conditions{list: obj.Status.Conditions}
	var selected []SelectedEndpoints
	if s, err := metav1.LabelSelectorAsSelector(obj.Spec.Selector); err == nil && obj.Spec.Selector != nil {
		selected = sel.SelectEndpoints(obj.Namespace, s)
	}
	healthyByName, pendingByName := map[string]bool{}, map[string]bool{}
	var backends, healthy int32
	tailnetRef := ""
	if obj.Spec.EndpointTemplate != nil {
		tailnetRef = obj.Spec.EndpointTemplate.Tailnet
	}
	for _, e := range selected {
		status := "NotReady"
		if e.Healthy > 0 {
			status = "Ready"
			healthyByName[e.Name] = true
		}
		pendingByName[e.Name] = e.Pending > 0
		st.SelectedEndpoints = append(st.SelectedEndpoints, gateway.SelectedEndpoints{
			Name: e.Name, Namespace: e.Namespace, Status: status, Labels: e.Labels, LastSelected: lastSelected(obj.Status.SelectedEndpoints, e, now),
			Machines: append([]string(nil), e.Machines...),
			HealthStatus: &gateway.HealthStatus{HealthyMachines: e.Healthy, UnhealthyMachines: e.Total - e.Healthy,
				LastHealthCheck: lastHealthCheck(src, e)},
		})
		backends += e.Total
		healthy += e.Healthy
		if tailnetRef == "" {
			tailnetRef = e.Tailnet
		}
	}
	if sd := obj.Spec.ServiceDiscovery; sd != nil {
		rule := src.Tenancy().ExternalServices().For(obj)
		for _, es := range sd.ExternalServices {
			if rule.Check(es.Address) == nil {
				backends++
			}
		}
	}

	tn, haveTailnet, admitted := tailnetFor(src, obj.Namespace, tailnetRef)
	switch {
	case !admitted.Allowed:
		// Nothing of a tailnet that refuses the namespace is shown, nor served.
	case haveTailnet && tn.Synced:
		st.DiscoveredVIPServices = DiscoverVIPServices(&obj.Spec, tn)
	default:
		// The tailnet is not known or its last poll failed: keep what was discovered before,
		// never drop backends on an API outage.
		// Matched again, so that a selector edited meanwhile still applies.
		var known Tailnet
		for _, d := range obj.Status.DiscoveredVIPServices {
			known.Services = append(known.Services, Service{Name: d.Name, DNSName: d.DNSName, Addrs: d.Addresses, Ports: d.Ports, Tags: d.Tags})
		}
		st.DiscoveredVIPServices = DiscoverVIPServices(&obj.Spec, known)
	}
	backends += int32(len(st.DiscoveredVIPServices))
	vipReady := metav1.Condition{Type: ConditionVIPServiceReady, Status: metav1.ConditionUnknown, Reason: "NoVIPService",
		Message: "spec.vipService is not set"}
	if v := obj.Spec.VIPService; v != nil {
		vs := &gateway.VIPServiceState{ServiceName: v.Name, BackendCount: backends, HealthyBackendCount: healthy}
		vipReady.Status, vipReady.Reason = metav1.ConditionFalse, "NotFoundInTailnet"
		vipReady.Message = fmt.Sprintf("%s does not exist in the tailnet", v.Name)
		if !haveTailnet || !tn.Synced {
			vipReady.Status, vipReady.Reason, vipReady.Message = metav1.ConditionUnknown, "TailnetNotSynced", syncedMessage(tailnetRef, tn, haveTailnet)
		}
		if stored := obj.Status.VIPServiceStatus; stored != nil {
			vs.LastRegistration = stored.LastRegistration
		}
		if svc, ok := tn.service(v.Name); haveTailnet && ok {
			vs.Created, vs.DNSName = true, svc.DNSName
			vs.Addresses = append([]string(nil), svc.Addrs...)
			vs.ServiceTags = append([]string(nil), svc.Tags...)
			vs.Hosts = vipHosts(svc)
			vipReady.Status, vipReady.Reason, vipReady.Message = metav1.ConditionTrue, "Found", fmt.Sprintf("%s has %d hosts", v.Name, len(svc.Hosts))
			if n := servingHosts(svc); n == 0 {
				vipReady.Status, vipReady.Reason = metav1.ConditionFalse, "NoServingHost"
				vipReady.Message = fmt.Sprintf("%s exists but no host serves it (%d hosts, none both advertising it and approved)", v.Name, len(svc.Hosts))
			}
		}
		if c := meta.FindStatusCondition(obj.Status.Conditions, ConditionConflict); c != nil && c.Status == metav1.ConditionTrue {
			// The Service of that name is not ours: it existing does not make ours ready.
			vipReady.Status, vipReady.Reason, vipReady.Message = metav1.ConditionFalse, "Conflict", c.Message
		}
		st.VIPServiceStatus = vs
	}
	// requestCounts are written by the proxies' metrics aggregator (pkg/controllers/requestcounts),
	// not computed here: they are kept as stored.
	var counts map[string]int64
	if stored := obj.Status.LoadBalancingStatus; stored != nil && len(stored.RequestCounts) > 0 {
		counts = make(map[string]int64, len(stored.RequestCounts))
		for k, v := range stored.RequestCounts {
			counts[k] = v
		}
		st.LoadBalancingStatus = &gateway.LoadBalancingStatus{RequestCounts: counts}
	}
	if lb := obj.Spec.LoadBalancing; lb != nil {
		ls := &gateway.LoadBalancingStatus{Strategy: lb.Strategy, RequestCounts: counts}
		if len(lb.Weights) > 0 {
			ls.EndpointWeights = make(map[string]int32, len(lb.Weights))
			for k, w := range lb.Weights {
				ls.EndpointWeights[k] = w
			}
		}
		if fc := lb.FailoverConfig; lb.Strategy == gateway.StrategyFailover && fc != nil {
			primaryHealthy, primaryPending := false, false
			for _, p := range fc.PrimaryEndpoints {
				primaryHealthy = primaryHealthy || healthyByName[p]
				primaryPending = primaryPending || pendingByName[p]
			}
			ls.FailoverStatus = failover(obj, primaryHealthy, primaryPending, &conds, now)
		}
		st.LoadBalancingStatus = ls
	}

	if !admitted.Allowed && obj.Spec.VIPService != nil {
		vipReady.Status, vipReady.Reason, vipReady.Message = metav1.ConditionFalse, tenancy.ReasonNotAllowedByTailnet, admitted.Message
	}
	conds.set(vipReady, obj.Generation, now)
	setAccepted(&conds, obj.Generation, now, admitted)
	setTemplateSelected(&conds, obj, now)
	setSupported(&conds, IgnoredServicesFields(&obj.Spec), obj.Generation, now)
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "BackendsHealthy",
		Message: fmt.Sprintf("%d of %d backends healthy", healthy, backends)}
	switch {
	case !admitted.Allowed:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, tenancy.ReasonNotAllowedByTailnet, admitted.Message
	case healthy == 0:
		ready.Status, ready.Reason = metav1.ConditionFalse, "NoHealthyBackends"
	}
	conds.set(ready, obj.Generation, now)
	st.Conditions = conds.list
	return st
}

// Failover tiers and reasons of TailscaleServices status.loadBalancingStatus.failoverStatus.
const (
	TierPrimary             = "primary"
	TierSecondary           = "secondary"
	ReasonPrimaryUnhealthy  = "primary-endpoints-unhealthy"
	ReasonPrimaryRecovered  = "primary-endpoints-recovered"
	ConditionPrimaryHealthy = "PrimaryEndpointsHealthy"
	reasonPrimaryHealthy    = "PrimaryEndpointHealthy"
	reasonNoPrimaryHealthy  = "NoPrimaryEndpointHealthy"
	reasonPrimaryNotProbed  = "PrimaryEndpointsNotProbed"
)

// failover returns the failover state of obj given whether any primary endpoint is healthy now
// and whether one has no probe result yet, and sets the PrimaryEndpointsHealthy condition.
// Traffic moves to the secondary tier as soon as no primary is healthy and none awaits its first
// result (a primary not probed yet has not failed: a new object or endpoint starts on the
// primary tier), and back only once the condition has been True for failbackDelay: its
// lastTransitionTime is when the primaries recovered. The state before is the stored one.
func failover(obj *gateway.TailscaleServices, primaryHealthy, primaryPending bool, conds *conditions, now time.Time) *gateway.FailoverStatus {
	c := metav1.Condition{Type: ConditionPrimaryHealthy, Status: metav1.ConditionTrue, Reason: reasonPrimaryHealthy,
		Message: "a primary endpoint is healthy"}
	switch {
	case !primaryHealthy && primaryPending:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, reasonPrimaryNotProbed, "no primary endpoint is healthy and some are not probed yet"
	case !primaryHealthy:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, reasonNoPrimaryHealthy, "no primary endpoint is healthy"
	}
	conds.set(c, obj.Generation, now)

	var prev gateway.FailoverStatus
	if ls := obj.Status.LoadBalancingStatus; ls != nil && ls.FailoverStatus != nil {
		prev = *ls.FailoverStatus
	}
	next := prev
	switch {
	case !primaryHealthy && primaryPending && prev.ActiveTier == "":
		next = gateway.FailoverStatus{ActiveTier: TierPrimary}
	case !primaryHealthy && primaryPending:
		// Keep the tier: failing over (or back) waits for a result.
	case !primaryHealthy && prev.ActiveTier != TierSecondary:
		next = gateway.FailoverStatus{ActiveTier: TierSecondary, FailoverReason: ReasonPrimaryUnhealthy, LastFailover: &metav1.Time{Time: now.Truncate(time.Second)}}
		if prev.ActiveTier == "" {
			next.LastFailover = nil // never served from primary: nothing failed over
		}
	case primaryHealthy && prev.ActiveTier == "":
		next = gateway.FailoverStatus{ActiveTier: TierPrimary}
	case primaryHealthy && prev.ActiveTier == TierSecondary:
		if due, _ := FailbackDue(obj.Spec.LoadBalancing.FailoverConfig, conds.list); !now.Before(due) {
			next = gateway.FailoverStatus{ActiveTier: TierPrimary, FailoverReason: ReasonPrimaryRecovered, LastFailover: &metav1.Time{Time: now.Truncate(time.Second)}}
		}
	}
	return &next
}

// FailbackDue returns when traffic may return to the primary tier: failbackDelay after the
// PrimaryEndpointsHealthy condition of conds turned True. ok is false when it is not True.
func FailbackDue(fc *gateway.FailoverConfig, conds []metav1.Condition) (due time.Time, ok bool) {
	c := meta.FindStatusCondition(conds, ConditionPrimaryHealthy)
	if c == nil || c.Status != metav1.ConditionTrue {
		return time.Time{}, false
	}
	var delay time.Duration
	if fc != nil && fc.FailbackDelay != nil {
		delay = fc.FailbackDelay.Duration
	}
	return c.LastTransitionTime.Add(delay), true
}

// Gateway returns the status of a TailscaleGateway as far as live state decides it: the
// connection and Tailscale Service count of each tailnet and the TailnetsReady condition
// (TailnetNotFound when a referenced TailscaleTailnet is unknown). The fields the TailscaleGateway
// controller (pkg/controllers/tsgateway) owns — tailnets[].routesGenerated, serviceInfo,
// gatewayInfo and every other condition, Ready included — are carried over from obj as stored.
func Gateway(obj *gateway.TailscaleGateway, src Sources, now time.Time) gateway.TailscaleGatewayStatus {
	st := gateway.TailscaleGatewayStatus{ServiceInfo: obj.Status.ServiceInfo.DeepCopy(), GatewayInfo: obj.Status.GatewayInfo.DeepCopy()}
	conds := conditions{list: obj.Status.Conditions}
	routes := make(map[string]int32, len(obj.Status.Tailnets))
	for _, t := range obj.Status.Tailnets {
		routes[t.Name] = t.RoutesGenerated
	}
	var connected int
	var missing []string
	decisions := make([]tenancy.Decision, 0, len(obj.Spec.Tailnets))
	for _, t := range obj.Spec.Tailnets {
		ts := gateway.TailnetStatus{Name: t.Name, Status: "Unknown", RoutesGenerated: routes[t.Name]}
		tn, ok, d := tailnetFor(src, obj.Namespace, t.TailscaleTailnetRef.Name)
		decisions = append(decisions, d)
		switch {
		case !d.Allowed:
			ts.Status = tenancy.ReasonNotAllowedByTailnet
		case ok:
			ts.Status = "Disconnected"
			if tn.Synced {
				ts.Status = "Connected"
				connected++
			}
			if !tn.LastSync.IsZero() {
				ts.LastConnected = &metav1.Time{Time: tn.LastSync}
			}
			ts.ServicesCount = int32(len(tn.Services))
		default:
			missing = append(missing, t.TailscaleTailnetRef.Name)
		}
		st.Tailnets = append(st.Tailnets, ts)
	}
	cond := metav1.Condition{Type: ConditionTailnetsReady, Status: metav1.ConditionTrue, Reason: "AllTailnetsConnected",
		Message: fmt.Sprintf("%d of %d tailnets connected", connected, len(obj.Spec.Tailnets))}
	switch {
	case len(missing) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, "TailnetNotFound"
		cond.Message = fmt.Sprintf("TailscaleTailnet not found: %s; %s", strings.Join(missing, ", "), cond.Message)
	case connected < len(obj.Spec.Tailnets):
		cond.Status, cond.Reason = metav1.ConditionFalse, "TailnetsDisconnected"
	}
	conds.set(cond, obj.Generation, now)
	conds.set(tenancy.AcceptedCondition(decisions...), obj.Generation, now)
	st.Conditions = conds.list
	return st
}

// Conditions of a TailscaleGateway (Gateway API's Programmed beside Ready) and the reason both
// take on a standalone server.
const (
	ConditionGatewayReady      = "Ready"
	ConditionGatewayProgrammed = "Programmed"
	ReasonStandalone           = "Standalone"
)

// SetStandaloneGateway sets Ready and Programmed False on obj's status: a standalone server has no
// Kubernetes API, so the TailscaleGateway controller, which generates the HTTPRoutes,
// BackendTrafficPolicies and listener Services, does not run.
func SetStandaloneGateway(obj *gateway.TailscaleGateway, now time.Time) {
	conds := conditions{list: obj.Status.Conditions}
	msg := "this server runs standalone (no Kubernetes API): the TailscaleGateway controller does not run, " +
		"so no HTTPRoutes, BackendTrafficPolicies or listener Services are generated for Gateway " + obj.Spec.GatewayRef.Name
	for _, t := range []string{ConditionGatewayReady, ConditionGatewayProgrammed} {
		conds.set(metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: ReasonStandalone, Message: msg}, obj.Generation, now)
	}
	obj.Status.Conditions = conds.list
}

// tailnetFor returns the state of the tailnet ref names as objects of namespace may see it: none
// when that tailnet does not admit the namespace (its devices, Services and probes are not shown).
func tailnetFor(src Sources, namespace, ref string) (Tailnet, bool, tenancy.Decision) {
	d := src.Tenancy().Decide(namespace, ref)
	if !d.Allowed {
		return Tailnet{}, false, d
	}
	tn, ok := src.Tailnet(ref)
	return tn, ok, d
}

// setAccepted sets the Accepted condition from an object's tenancy decision, and TailnetSynced
// to say why the tailnet is not shown when it refuses the object.
func setAccepted(conds *conditions, generation int64, now time.Time, d tenancy.Decision) {
	conds.set(tenancy.AcceptedCondition(d), generation, now)
	if !d.Allowed {
		conds.set(metav1.Condition{Type: ConditionTailnetSynced, Status: metav1.ConditionUnknown,
			Reason: tenancy.ReasonNotAllowedByTailnet, Message: d.Message}, generation, now)
	}
}

// StripGateway clears the fields of a TailscaleGateway status that change on every poll.
func StripGateway(st *gateway.TailscaleGatewayStatus) {
	ts := make([]gateway.TailnetStatus, len(st.Tailnets))
	for i, t := range st.Tailnets {
		t.LastConnected = nil
		ts[i] = t
	}
	st.Tailnets = ts
}

func (t Tailnet) service(name string) (Service, bool) {
	want := strings.TrimPrefix(name, "svc:")
	for _, s := range t.Services {
		if strings.TrimPrefix(s.Name, "svc:") == want {
			return s, true
		}
	}
	return Service{}, false
}

func setTailnetSynced(conds *conditions, ref string, tn Tailnet, ok bool, generation int64, now time.Time) {
	c := metav1.Condition{Type: ConditionTailnetSynced, Status: metav1.ConditionTrue, Reason: "Synced"}
	if old := meta.FindStatusCondition(conds.list, ConditionTailnetSynced); ok && tn.Synced && old != nil && isSyncedMessage(old.Message, tn.Name) {
		c.Message = old.Message // as stored: shared rather than built on every read
	} else {
		c.Message = syncedMessage(ref, tn, ok)
	}
	switch {
	case !ok:
		c.Status, c.Reason = metav1.ConditionUnknown, "TailnetNotFound"
	case !tn.Synced:
		c.Status, c.Reason = metav1.ConditionFalse, tn.Reason
		if c.Reason == "" {
			c.Reason = "NotSynced"
		}
	}
	conds.set(c, generation, now)
}

// isSyncedMessage reports whether msg is syncedMessage of a synced tailnet named name.
func isSyncedMessage(msg, name string) bool {
	const prefix, suffix = "tailnet ", " synced"
	return len(msg) == len(prefix)+len(name)+len(suffix) && msg[:len(prefix)] == prefix &&
		msg[len(prefix):len(prefix)+len(name)] == name && msg[len(prefix)+len(name):] == suffix
}

func syncedMessage(ref string, tn Tailnet, ok bool) string {
	switch {
	case !ok:
		return fmt.Sprintf("no TailscaleTailnet named %q or with spec.tailnet %q is being polled", ref, ref)
	case !tn.Synced && tn.LastSync.IsZero():
		return fmt.Sprintf("tailnet %s not synced yet: %s", tn.Name, tn.Message)
	case !tn.Synced:
		return fmt.Sprintf("serving state of %s from %s: %s", tn.Name, tn.LastSync.UTC().Format(time.RFC3339), tn.Message)
	default:
		return "tailnet " + tn.Name + " synced"
	}
}

// vipLastUpdated is when vs last changed (status or address): the stored time while it is as
// stored, now when it changed or is new.
func vipLastUpdated(stored []gateway.VIPServiceStatus, vs gateway.VIPServiceStatus, now time.Time) *metav1.Time {
	for _, old := range stored {
		if old.Name == vs.Name && old.Status == vs.Status && old.VIPAddress == vs.VIPAddress && old.LastUpdated != nil {
			return old.LastUpdated
		}
	}
	return &metav1.Time{Time: now.Truncate(time.Second)}
}

// lastHealthCheck is the latest time this replica's prober checked an endpoint of e; nil when it
// probes none of them (no check, none done yet, or another replica's shard).
func lastHealthCheck(src Sources, e SelectedEndpoints) *metav1.Time {
	var last time.Time
	for _, name := range e.Endpoints {
		if p, ok := src.Probe(ProbeKey(e.Namespace, e.Name, name)); ok && !p.Persisted && p.LastChecked.After(last) {
			last = p.LastChecked
		}
	}
	if last.IsZero() {
		return nil
	}
	return &metav1.Time{Time: last}
}

// StripServices clears the fields of a TailscaleServices status that change on every probe:
// healthStatus.lastHealthCheck is computed on read only.
func StripServices(st *gateway.TailscaleServicesStatus) {
	if len(st.SelectedEndpoints) == 0 {
		return
	}
	sel := make([]gateway.SelectedEndpoints, len(st.SelectedEndpoints))
	for i, e := range st.SelectedEndpoints {
		if e.HealthStatus != nil && e.HealthStatus.LastHealthCheck != nil {
			hs := *e.HealthStatus
			hs.LastHealthCheck = nil
			e.HealthStatus = &hs
		}
		sel[i] = e
	}
	st.SelectedEndpoints = sel
}

// lastSelected is when e joined the selection: the stored time while it stays selected, now when
// it is newly selected.
func lastSelected(stored []gateway.SelectedEndpoints, e SelectedEndpoints, now time.Time) *metav1.Time {
	for _, old := range stored {
		if old.Name == e.Name && old.Namespace == e.Namespace && old.LastSelected != nil {
			return old.LastSelected
		}
	}
	return &metav1.Time{Time: now.Truncate(time.Second)}
}

// vipHosts lists the hosts of svc as the tailnet reports them, nil when it reports none.
func vipHosts(svc Service) []gateway.VIPServiceHost {
	var out []gateway.VIPServiceHost
	for _, h := range svc.Hosts {
		name := h.Hostname
		if name == "" {
			name = h.Device
		}
		out = append(out, gateway.VIPServiceHost{Device: name, NodeID: h.Device, Approved: h.Approved, Advertising: h.Configured})
	}
	return out
}

// servingHosts counts the hosts of svc that serve it: advertising it (configured) and approved.
func servingHosts(svc Service) int {
	n := 0
	for _, h := range svc.Hosts {
		if h.Approved && h.Configured {
			n++
		}
	}
	return n
}

// ConditionEndpointTemplateSelected says whether spec.selector selects the TailscaleEndpoints
// spec.endpointTemplate provisions (absent without a template).
const ConditionEndpointTemplateSelected = "EndpointTemplateSelected"

// setTemplateSelected sets or removes the EndpointTemplateSelected condition of obj.
func setTemplateSelected(conds *conditions, obj *gateway.TailscaleServices, now time.Time) {
	if obj.Spec.EndpointTemplate == nil {
		conds.remove(ConditionEndpointTemplateSelected)
		return
	}
	c := metav1.Condition{Type: ConditionEndpointTemplateSelected, Status: metav1.ConditionTrue, Reason: "Selected",
		Message: "spec.selector selects the TailscaleEndpoints spec.endpointTemplate provisions"}
	if msg := validation.UnselectedTemplate(&obj.Spec); msg != "" {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "LabelsNotSelected", msg
	}
	conds.set(c, obj.Generation, now)
}

// conditions are the conditions of a status being computed. They start as the stored ones,
// which may be shared with the watch cache and other readers and are never written through, and
// are copied on the first change only: a read whose conditions are as stored (the usual case, as
// the status writer persists every transition) shares the stored slice instead of copying it.
type conditions struct {
	list  []metav1.Condition
	owned bool
}

// remove removes the condition of type t.
func (cs *conditions) remove(t string) {
	if meta.FindStatusCondition(cs.list, t) == nil {
		return
	}
	if !cs.owned {
		cs.list = append(make([]metav1.Condition, 0, len(cs.list)), cs.list...)
		cs.owned = true
	}
	meta.RemoveStatusCondition(&cs.list, t)
}

// set sets c, keeping the transition time when the status does not change.
func (cs *conditions) set(c metav1.Condition, generation int64, now time.Time) {
	c.ObservedGeneration = generation
	if old := meta.FindStatusCondition(cs.list, c.Type); old != nil && old.Status == c.Status && old.Reason == c.Reason &&
		old.Message == c.Message && old.ObservedGeneration == generation {
		return // what meta.SetStatusCondition would leave as it is
	}
	if !cs.owned {
		cs.list = append(make([]metav1.Condition, 0, len(cs.list)+1), cs.list...)
		cs.owned = true
	}
	c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	meta.SetStatusCondition(&cs.list, c)
}
