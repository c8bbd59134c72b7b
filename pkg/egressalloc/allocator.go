// Package egressalloc allocates the egress ports of TailscaleEndpoints: each (object, endpoint,
// port, protocol) gets a port of the proxy's range, unique among the objects one proxy serves
// (its scope), kept for as long as the endpoint exists. It is the state of the controller in
// pkg/controllers/egressalloc, which records every allocation in the object's status.egress
// (read back by pkg/proxy/ports) and rebuilds this state from those records when it starts.
//
// A freed port is not handed out again at once: allocation is next-fit (a cursor walks the
// range, so a freed port comes round again only after the rest of the range has been offered),
// and a freed port is also held for Quarantine, so that a reader still holding the old record
// (the EDS, a proxy, an EndpointSlice) cannot send one endpoint's traffic to another.
package egressalloc

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/ports"
)

// DefaultQuarantine is how long a freed port is held before it can be allocated again.
const DefaultQuarantine = 10 * time.Minute

// Options configure an Allocator; zero values take the defaults.
type Options struct {
	// Base and Span are the range, [Base, Base+Span): ports.EgressBase and ports.EgressSpan.
	Base, Span int32
	// Quarantine holds freed ports (DefaultQuarantine; negative: none).
	Quarantine time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Allocator holds the allocations of every scope. It is safe for concurrent use.
type Allocator struct {
	opts    Options
	mu      sync.Mutex
	scopes  map[string]*scope
	objects map[string]*object // by namespace/name
}

type scope struct {
	owner map[int32]string    // port -> namespace/name
	freed map[int32]time.Time // port -> when it may be allocated again
	// freedBy is the listener that held a quarantined port ("<uid>/<key>"): it alone may take
	// it back at once (an object moved to another proxy and back), since every reader's stale
	// record of the port still means that listener.
	freedBy map[int32]string
	next    int32 // cursor: offset of the next port offered
}

type object struct {
	uid   types.UID
	scope string
	ports map[ports.Key]int32
}

// New returns an empty Allocator.
func New(o Options) *Allocator {
	if o.Base == 0 && o.Span == 0 {
		o.Base, o.Span = ports.EgressBase, ports.EgressSpan
	}
	if o.Quarantine == 0 {
		o.Quarantine = DefaultQuarantine
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Allocator{opts: o, scopes: map[string]*scope{}, objects: map[string]*object{}}
}

func nameOf(obj *v1alpha1.TailscaleEndpoints) string { return obj.Namespace + "/" + obj.Name }

func (a *Allocator) scope(name string) *scope {
	s, ok := a.scopes[name]
	if !ok {
		s = &scope{owner: map[int32]string{}, freed: map[int32]time.Time{}, freedBy: map[int32]string{}}
		a.scopes[name] = s
	}
	return s
}

// Seed loads the allocations recorded in objs' status (a restart, a new leader), each in the
// scope scopeOf gives it now. Records of another scope, outside the range, or of a port an
// earlier object already holds (objects are taken oldest first) are not loaded: Sync allocates
// those endpoints again, preferring the recorded port. The cursor of each scope starts after the
// highest port loaded in it. Seed is called before any Sync.
func (a *Allocator) Seed(objs []*v1alpha1.TailscaleEndpoints, scopeOf func(*v1alpha1.TailscaleEndpoints) string) {
	objs = slices.Clone(objs)
	slices.SortFunc(objs, func(x, y *v1alpha1.TailscaleEndpoints) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(nameOf(x), nameOf(y))
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	highest := map[string]int32{}
	for _, obj := range objs {
		proxy, recorded := ports.Recorded(obj)
		sc := scopeOf(obj)
		if len(recorded) == 0 || proxy != sc {
			continue
		}
		s := a.scope(sc)
		o := &object{uid: obj.UID, scope: sc, ports: map[ports.Key]int32{}}
		for _, k := range sortedKeys(recorded) {
			p := recorded[k]
			if _, taken := s.owner[p]; taken || !a.inRange(p) {
				continue
			}
			s.owner[p] = nameOf(obj)
			o.ports[k] = p
			highest[sc] = max(highest[sc], p)
		}
		a.objects[nameOf(obj)] = o
	}
	for sc, p := range highest {
		a.scopes[sc].next = (p - a.opts.Base + 1) % a.opts.Span
	}
}

// Sync allocates ports to the listeners obj wants in scope sc, keeping every port obj already
// holds there, freeing those it no longer wants (and all of them when obj moved to another scope
// or is a new object of the same name), and returns obj's allocation. A new listener is offered,
// in order: the port recorded for it in obj's status (a scope move, a record Seed did not load),
// the port earlier versions derived (ports.EgressPort), then the next free port after the
// cursor. pending lists the wanted listeners no port is free for (the range is full).
func (a *Allocator) Sync(obj *v1alpha1.TailscaleEndpoints, sc string, wants []ports.Key) (got map[ports.Key]int32, pending []ports.Key) {
	name := nameOf(obj)
	_, recorded := ports.Recorded(obj)
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	o := a.objects[name]
	if o != nil && (o.uid != obj.UID || o.scope != sc) {
		a.release(name, o, now)
		o = nil
	}
	if o == nil {
		o = &object{uid: obj.UID, scope: sc, ports: map[ports.Key]int32{}}
		a.objects[name] = o
	}
	s := a.scope(sc)
	want := make(map[ports.Key]bool, len(wants))
	for _, k := range wants {
		want[k] = true
	}
	for k, p := range o.ports {
		if !want[k] {
			a.free(s, p, now, "")
			delete(o.ports, k)
		}
	}
	for _, k := range wants {
		if _, ok := o.ports[k]; ok {
			continue
		}
		p, ok := a.pick(s, now, listenerOf(obj.UID, k), recorded[k], ports.EgressPort(obj.Name, k.Endpoint, k.Port))
		if !ok {
			pending = append(pending, k)
			continue
		}
		s.owner[p] = name
		o.ports[k] = p
	}
	got = make(map[ports.Key]int32, len(o.ports))
	for k, p := range o.ports {
		got[k] = p
	}
	return got, pending
}

// Forget frees every port of the object namespace/name (deleted).
func (a *Allocator) Forget(namespace, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := namespace + "/" + name
	if o := a.objects[key]; o != nil {
		a.release(key, o, a.opts.Now())
	}
}

// InUse is the number of ports allocated in scope sc.
func (a *Allocator) InUse(sc string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.scopes[sc]; ok {
		return len(s.owner)
	}
	return 0
}

func (a *Allocator) release(name string, o *object, now time.Time) {
	s := a.scope(o.scope)
	for k, p := range o.ports {
		a.free(s, p, now, listenerOf(o.uid, k))
	}
	delete(a.objects, name)
}

// free releases p, quarantined; listener (listenerOf) may take it back at once, "" nobody.
func (a *Allocator) free(s *scope, p int32, now time.Time, listener string) {
	delete(s.owner, p)
	if a.opts.Quarantine > 0 {
		s.freed[p] = now.Add(a.opts.Quarantine)
		s.freedBy[p] = listener
	}
}

// listenerOf names one listener of one object (its UID: a re-created object is another).
func listenerOf(uid types.UID, k ports.Key) string {
	return fmt.Sprintf("%s/%s/%d/%t", uid, k.Endpoint, k.Port, k.UDP)
}

func (a *Allocator) inRange(p int32) bool { return p >= a.opts.Base && p < a.opts.Base+a.opts.Span }

// available reports whether p can be allocated in s now to listener (listenerOf; "" for any).
func (a *Allocator) available(s *scope, p int32, now time.Time, listener string) bool {
	if !a.inRange(p) {
		return false
	}
	if _, taken := s.owner[p]; taken {
		return false
	}
	if until, held := s.freed[p]; held {
		if now.Before(until) && (listener == "" || s.freedBy[p] != listener) {
			return false
		}
		delete(s.freed, p)
		delete(s.freedBy, p)
	}
	return true
}

// pick returns recorded when it is available to listener (a port it held, even quarantined),
// else the first of preferred that is available, else the next available port after the
// cursor, advancing it.
func (a *Allocator) pick(s *scope, now time.Time, listener string, recorded int32, preferred ...int32) (int32, bool) {
	if recorded != 0 && a.available(s, recorded, now, listener) {
		return recorded, true
	}
	for _, p := range preferred {
		if p != 0 && a.available(s, p, now, "") {
			return p, true
		}
	}
	for i := range a.opts.Span {
		off := (s.next + i) % a.opts.Span
		if p := a.opts.Base + off; a.available(s, p, now, "") {
			s.next = (off + 1) % a.opts.Span
			return p, true
		}
	}
	return 0, false
}

// Record is the status.egress of an allocation got in scope sc, sorted by endpoint, port and
// protocol; nil when got is empty.
func Record(sc string, got map[ports.Key]int32) *v1alpha1.EgressAllocation {
	if len(got) == 0 {
		return nil
	}
	out := &v1alpha1.EgressAllocation{Proxy: sc}
	for _, k := range sortedKeys(got) {
		out.Ports = append(out.Ports, v1alpha1.EgressPort{Endpoint: k.Endpoint, Protocol: k.Protocol(), Port: k.Port, ListenerPort: got[k]})
	}
	return out
}

func sortedKeys(m map[ports.Key]int32) []ports.Key {
	keys := make([]ports.Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y ports.Key) int {
		if c := strings.Compare(x.Endpoint, y.Endpoint); c != 0 {
			return c
		}
		if x.Port != y.Port {
			return int(x.Port - y.Port)
		}
		if x.UDP == y.UDP {
			return 0
		}
		if !x.UDP {
			return -1
		}
		return 1
	})
	return keys
}

// Allocate allocates the ports of every listener objs want in scope sc and records them in
// each object's status.egress, as the controller does (objects in order): for callers running
// no controller, such as a proxy's tests and benchmarks.
func (a *Allocator) Allocate(sc string, objs ...*v1alpha1.TailscaleEndpoints) {
	for _, obj := range objs {
		got, _ := a.Sync(obj, sc, Wants(obj))
		obj.Status.Egress = Record(sc, got)
	}
}

// Wants are the keys of the egress listeners obj needs (ports.Wanted).
func Wants(obj *v1alpha1.TailscaleEndpoints) []ports.Key {
	wanted := ports.Wanted(obj)
	keys := make([]ports.Key, len(wanted))
	for i, w := range wanted {
		keys[i] = w.Key
	}
	return keys
}
