package vipservice

import (
	"maps"
	"slices"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// action is what reconciling a TailscaleServices does to its Tailscale Service.
type action int

const (
	// actionNone: the Service is as wanted.
	actionNone action = iota
	// actionCreate: the Service does not exist; PUT it with our reference alone.
	actionCreate
	// actionUpdate: PUT next (addresses carried over).
	actionUpdate
	// actionConflict: the Service is not ours and the spec does not ask to attach; leave it.
	actionConflict
	// actionAttachReadOnly: the Service has no owner references and the spec asks to attach:
	// use it as a consumer without writing (we never claim a Service someone made by hand).
	actionAttachReadOnly
)

// plan is the outcome of comparing a TailscaleServices with its Service as last known.
type plan struct {
	action action
	// next is the Service to PUT for actionCreate and actionUpdate.
	next tailnet.Service
	// owners after the change (or as found, for actionConflict).
	owners owners
	// expired are references dropped because their installation stopped renewing them.
	expired []OwnerRef
	// attached reports that our reference is new on an existing Service.
	attached bool
	// message explains actionConflict.
	message string
}

// want is a Service as an object asks for it.
type want struct {
	Name, Comment string
	Ports, Tags   []string
	Annotations   map[string]string
	// attach reports whether the object may attach to an existing Service it does not own.
	attach func(cur tailnet.Service) bool
}

// wantService is the Service a TailscaleServices asks for.
func wantService(obj *v1alpha1.TailscaleServices) want {
	v := obj.Spec.VIPService
	return want{Name: v.Name, Comment: v.Comment, Ports: v.Ports, Tags: v.Tags, Annotations: v.Annotations,
		attach: func(cur tailnet.Service) bool { return mayAttach(obj, cur) }}
}

// planFor decides what to do with cur (exists false: there is no Service of the name). ref is
// our reference; now and ttl drive heartbeats and expiry.
func planFor(spec want, cur tailnet.Service, exists bool, ref OwnerRef, now time.Time, ttl time.Duration) plan {
	if !exists {
		own := owners{}.with(ref)
		return plan{action: actionCreate, owners: own, next: desired(spec, own, nil, ref, now, ttl)}
	}
	own, err := parseOwners(cur.Annotations)
	if err != nil {
		return plan{action: actionConflict, message: cur.Name + " has an unreadable " + OwnerAnnotation + " annotation: " + err.Error()}
	}
	own, expired := own.expired(ref, ttl, now)
	attached := false
	if own.index(ref) < 0 {
		switch {
		case spec.attach == nil || !spec.attach(cur):
			p := plan{action: actionConflict, owners: own}
			if own.present {
				p.message = cur.Name + " is owned by operator " + own.owner() + describeResource(own.refs[0]) +
					"; set serviceDiscovery.discoverVIPServices to attach to it as a consumer"
			} else {
				p.message = cur.Name + " exists in the tailnet without " + OwnerAnnotation + " (not managed by an operator); it is left alone"
			}
			return p
		case !own.present:
			return plan{action: actionAttachReadOnly, owners: own}
		}
		own, attached = own.with(ref), true
	}
	var next tailnet.Service
	if own.refs[0].same(ref) {
		// The owner's spec defines the Service.
		next = desired(spec, own, cur.Addrs, ref, now, ttl)
	} else {
		// A consumer changes nothing but the ownership annotations.
		next = cur
		next.Annotations = own.annotations(cur.Annotations, ref, now, renewAfter(ttl))
	}
	p := plan{action: actionUpdate, next: next, owners: own, expired: expired, attached: attached}
	if sameService(next, cur) {
		p.action = actionNone
	}
	return p
}

// desired is the Service an object owning it asks for.
func desired(spec want, own owners, addrs []string, ref OwnerRef, now time.Time, ttl time.Duration) tailnet.Service {
	return tailnet.Service{
		Name:        spec.Name,
		Addrs:       slices.Clone(addrs),
		Ports:       slices.Clone(spec.Ports),
		Tags:        slices.Clone(spec.Tags),
		Comment:     spec.Comment,
		Annotations: own.annotations(spec.Annotations, ref, now, renewAfter(ttl)),
	}
}

// renewAfter is how old our heartbeat may get before we write a new one: a quarter of the TTL,
// so that three missed renewals still keep the reference.
func renewAfter(ttl time.Duration) time.Duration { return ttl / 4 }

// mayAttach reports whether the spec asks to attach to cur as a consumer:
// serviceDiscovery.discoverVIPServices with no vipServiceSelector, or one naming cur or
// sharing a tag with it.
func mayAttach(obj *v1alpha1.TailscaleServices, cur tailnet.Service) bool {
	sd := obj.Spec.ServiceDiscovery
	if sd == nil || !sd.DiscoverVIPServices {
		return false
	}
	sel := sd.VIPServiceSelector
	if sel == nil || (len(sel.Tags) == 0 && len(sel.ServiceNames) == 0) {
		return true
	}
	if slices.Contains(sel.ServiceNames, cur.Name) {
		return true
	}
	for _, t := range cur.Tags {
		if slices.Contains(sel.Tags, t) {
			return true
		}
	}
	return false
}

// sameService compares what a PUT would change; ports and tags as sets.
func sameService(a, b tailnet.Service) bool {
	return a.Name == b.Name && a.Comment == b.Comment && sameSet(a.Ports, b.Ports) && sameSet(a.Tags, b.Tags) &&
		slices.Equal(a.Addrs, b.Addrs) && maps.Equal(nonNil(a.Annotations), nonNil(b.Annotations))
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func describeResource(r OwnerRef) string {
	if r.Resource == nil {
		return ""
	}
	return " (" + r.Resource.Kind + " " + r.Resource.Name + ")"
}
