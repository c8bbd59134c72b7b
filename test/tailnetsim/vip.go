package tailnetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// serviceRouter routes Tailscale Services the way Tailscale's control plane does, for hosts in
// any process. A node that advertises Services (tsnet's ListenService sets the AdvertiseServices
// pref) reports the hash of their list in Hostinfo.ServicesHash; when a map request carries a
// hash the router has not seen for that node, it asks the node for the list with the c2n
// request GET /vip-services (tailcfg.C2NVIPServicesResponse). Each Service the node advertises
// (Active) that the fake API knows, with the addresses the API allocated, and approves for the
// node is routed to it: the node gets the tailcfg.NodeAttrServiceHost capability mapping the
// Service to its addresses, and MagicDNS resolves <label>.<suffix> to the IPv4 address. Of the
// nodes hosting one Service, one (the primary, kept while it hosts the Service) also gets its
// addresses as subnet routes (which every simulated device accepts), so that clients route
// the VIP to one peer, as with Tailscale's control plane.
//
// Approval: Tailscale approves a host by the policy's autoApprovers.services (or by hand in the
// admin console); the simulator has no policy file and approves a host carrying one of the
// Service's tags, unless approval was set through the API (POST .../device/{id}/approved).
//
// Routes are withdrawn when the node stops advertising the Service, when the Service or its
// approval goes away in the API, and when the node's last streaming map poll ends (it went
// offline). The API lists an advertising node under GET .../vip-services/{name}/devices
// (configured: true).
//
// Services routed with Tailnet.RouteService are added on top and win over an advertised Service
// of the same name on the same node. MagicDNS records are only ever added (testcontrol cannot
// remove them): the first address routed under a name stays its record.
type serviceRouter struct {
	control *testcontrol.Server
	api     *apiServer
	suffix  string
	logf    logger.Logf
	ctx     context.Context // canceled by close
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	applyMu sync.Mutex                // serializes reconcile
	applied map[key.NodePublic]string // the capability last applied, as JSON
	routed  map[key.NodePublic]string // the Services last routed to the node
	dns     map[string]bool
	primary map[tailcfg.ServiceName]key.NodePublic // the host each Service is routed to

	mu     sync.Mutex
	hosts  map[key.NodePublic]*advertiser
	manual map[key.NodePublic]tailcfg.ServiceIPMappings
	closed bool
}

// advertiser is what the router knows of one connected node's advertised Services.
type advertiser struct {
	seen     string   // latest Hostinfo.ServicesHash seen in a map request
	services []string // Active Services of the last GET /vip-services answer
	fetching bool
}

// newServiceRouter returns a router; control and api are set before any node joins.
func newServiceRouter(suffix string, logf logger.Logf) *serviceRouter {
	ctx, cancel := context.WithCancel(context.Background())
	return &serviceRouter{
		suffix: suffix, logf: logf, ctx: ctx, cancel: cancel,
		applied: map[key.NodePublic]string{},
		routed:  map[key.NodePublic]string{},
		dns:     map[string]bool{},
		primary: map[tailcfg.ServiceName]key.NodePublic{},
		hosts:   map[key.NodePublic]*advertiser{},
		manual:  map[key.NodePublic]tailcfg.ServiceIPMappings{},
	}
}

// close stops fetches in flight and waits for them.
func (r *serviceRouter) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// observe looks at a map request's Hostinfo.ServicesHash (called from HoldMapRequest, before
// testcontrol handles the request: it must not block).
func (r *serviceRouter) observe(req *tailcfg.MapRequest) {
	if req.Hostinfo == nil {
		return
	}
	nk, hash := req.NodeKey, req.Hostinfo.ServicesHash
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	a := r.hosts[nk]
	if a == nil {
		if hash == "" {
			return
		}
		a = &advertiser{}
		r.hosts[nk] = a
	}
	if a.seen == hash {
		return
	}
	a.seen = hash
	if hash == "" {
		// No Services (vipServiceHash of an empty list): nothing to ask.
		a.services = nil
		r.wg.Go(r.reconcile)
		return
	}
	if !a.fetching {
		a.fetching = true
		r.wg.Go(func() { r.fetch(nk, a) })
	}
}

// offline withdraws what nk advertised: its last streaming map poll ended.
func (r *serviceRouter) offline(nk key.NodePublic) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.hosts[nk]; ok && !r.closed {
		delete(r.hosts, nk)
		r.wg.Go(r.reconcile)
	}
}

// fetch asks nk for its Services until it has an answer for the latest hash a saw, then
// reconciles. It gives up when a is no longer nk's record (the node went offline) or on close.
func (r *serviceRouter) fetch(nk key.NodePublic, a *advertiser) {
	backoff := 50 * time.Millisecond
	for {
		r.mu.Lock()
		if r.hosts[nk] != a || r.closed {
			a.fetching = false
			r.mu.Unlock()
			return
		}
		want := a.seen
		r.mu.Unlock()

		services, err := r.askServices(nk)
		if err != nil {
			// Typically the node has no streaming poll yet (c2n rides on it): retry.
			r.logf("tailnetsim: GET /vip-services from %s: %v", nk.ShortString(), err)
			select {
			case <-r.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		r.mu.Lock()
		if r.hosts[nk] != a {
			a.fetching = false
			r.mu.Unlock()
			return
		}
		a.services = services
		if a.seen != want {
			r.mu.Unlock()
			continue
		}
		a.fetching = false
		r.mu.Unlock()
		r.reconcile()
		return
	}
}

// askServices sends nk the c2n request GET /vip-services and returns the names of the Services
// it advertises (Active).
func (r *serviceRouter) askServices(nk key.NodePublic) ([]string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "/vip-services", nil)
	if err != nil {
		return nil, err
	}
	res, err := r.control.NodeRoundTripper(nk).RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", res.Status)
	}
	var body tailcfg.C2NVIPServicesResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	var out []string
	for _, s := range body.VIPServices {
		if s != nil && s.Active {
			out = append(out, s.Name.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

// reconcile brings every node's service-host capability, subnet routes and the MagicDNS records
// in line with what is advertised, known and approved, plus RouteService's Services.
func (r *serviceRouter) reconcile() {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	nodes := r.control.AllNodes()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	advertised := map[key.NodePublic][]string{}
	for nk, a := range r.hosts {
		advertised[nk] = slices.Clone(a.services)
	}
	manual := map[key.NodePublic]tailcfg.ServiceIPMappings{}
	for nk, m := range r.manual {
		manual[nk] = maps.Clone(m)
	}
	r.mu.Unlock()

	hosted := map[key.NodePublic]tailcfg.ServiceIPMappings{}
	hosts := map[tailcfg.ServiceName][]key.NodePublic{}
	for _, n := range nodes {
		m := tailcfg.ServiceIPMappings{}
		for name, addrs := range r.api.advertise(n.Hostinfo.Hostname(), n.Tags, advertised[n.Key]) {
			for _, s := range addrs {
				if ip, err := netip.ParseAddr(s); err == nil {
					m[tailcfg.ServiceName(name)] = append(m[tailcfg.ServiceName(name)], ip)
				}
			}
			hosts[tailcfg.ServiceName(name)] = append(hosts[tailcfg.ServiceName(name)], n.Key)
		}
		hosted[n.Key] = m
	}
	// One primary host per Service carries its route, as control does for several hosts (and
	// for high-availability subnet routers): clients route a VIP to one peer only. The primary
	// keeps the role while it hosts the Service; when it stops, another host takes it over.
	for name, nks := range hosts {
		if !slices.Contains(nks, r.primary[name]) {
			r.primary[name] = slices.MinFunc(nks, func(a, b key.NodePublic) int { return strings.Compare(a.String(), b.String()) })
		}
	}
	for name := range r.primary {
		if _, ok := hosts[name]; !ok {
			delete(r.primary, name)
		}
	}
	for _, n := range nodes {
		m := hosted[n.Key]
		var routed []tailcfg.ServiceName
		for name := range m {
			if r.primary[name] == n.Key {
				routed = append(routed, name)
			}
		}
		for name, addrs := range manual[n.Key] {
			m[name] = addrs
			routed = append(routed, name)
		}
		r.applyLocked(n.Key, m, routed)
	}
}

// applyLocked gives nk the capability of hosting the Services of m and the routes of those
// named in routed (those it is the primary host of), unless it already has them.
func (r *serviceRouter) applyLocked(nk key.NodePublic, m tailcfg.ServiceIPMappings, routed []tailcfg.ServiceName) {
	raw, err := json.Marshal(m) // sorted keys: a stable form to compare
	if err != nil {
		r.logf("tailnetsim: encoding service mappings: %v", err)
		return
	}
	slices.Sort(routed)
	routedKey := fmt.Sprint(routed)
	prev, ok := r.applied[nk]
	if (!ok && len(m) == 0) || (prev == string(raw) && r.routed[nk] == routedKey) {
		return
	}
	r.applied[nk], r.routed[nk] = string(raw), routedKey
	var capMap tailcfg.NodeCapMap
	var routes []netip.Prefix
	if len(m) > 0 {
		capMap = tailcfg.NodeCapMap{tailcfg.NodeAttrServiceHost: []tailcfg.RawMessage{tailcfg.RawMessage(raw)}}
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if slices.Contains(routed, name) {
			for _, a := range m[name] {
				routes = append(routes, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		if !r.dns[string(name)] {
			for _, a := range m[name] {
				if a.Is4() {
					r.dns[string(name)] = true
					r.control.AddDNSRecords(tailcfg.DNSRecord{Name: name.WithoutPrefix() + "." + r.suffix, Value: a.String()})
					break
				}
			}
		}
	}
	r.logf("tailnetsim: service host %s: %s, routed %s", nk.ShortString(), raw, routedKey)
	r.control.SetNodeCapMap(nk, capMap)
	r.control.SetSubnetRoutes(nk, routes)
}

// RouteService makes the Tailscale Service name ("svc:<label>") with address vip routable from
// clients to host directly, whether or not host advertises it or the API knows it (what tsnet's
// own Service tests do on testcontrol): host gets the service-host capability mapping name to
// vip (tailcfg.NodeAttrServiceHost) and vip/32 as a subnet route, host is tagged
// (tag:service-host) unless it already has a tag, clients accept routes (RouteAll; the
// simulator's own devices always do), and MagicDNS resolves <label>.<suffix> to vip. It returns
// once host holds the capability and every client routes vip to host. Several Services can be
// routed to one host. A host advertising a Service the API knows needs none of this: see
// serviceRouter.
func (t *Tailnet) RouteService(ctx context.Context, name, vip string, host *tsnet.Server, clients ...*tsnet.Server) error {
	svc := tailcfg.ServiceName(name)
	if err := svc.Validate(); err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	addr, err := netip.ParseAddr(vip)
	if err != nil {
		return fmt.Errorf("tailnetsim: service address: %w", err)
	}
	hostLC, err := host.LocalClient()
	if err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	st, err := hostLC.StatusWithoutPeers(ctx)
	if err != nil {
		return fmt.Errorf("tailnetsim: host status: %w", err)
	}
	nk := st.Self.PublicKey

	if n := t.control.Node(nk); n != nil && len(n.Tags) == 0 {
		n.Tags = append(n.Tags, "tag:service-host")
		t.control.UpdateNode(n)
	}
	r := t.router
	r.mu.Lock()
	if r.manual[nk] == nil {
		r.manual[nk] = tailcfg.ServiceIPMappings{}
	}
	r.manual[nk][svc] = []netip.Addr{addr}
	r.mu.Unlock()
	r.reconcile()
	for _, c := range clients {
		if err := acceptRoutes(ctx, c); err != nil {
			return err
		}
	}
	return waitRouted(ctx, name, addr, hostLC, nk, clients)
}

// acceptRoutes makes s accept subnet routes (RouteAll), which Service addresses are.
func acceptRoutes(ctx context.Context, s *tsnet.Server) error {
	lc, err := s.LocalClient()
	if err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{RouteAllSet: true, Prefs: ipn.Prefs{RouteAll: true}}); err != nil {
		return fmt.Errorf("tailnetsim: accepting routes: %w", err)
	}
	return nil
}

// waitRouted waits until the host holds the service-host capability and every client routes
// addr to it (nk).
func waitRouted(ctx context.Context, name string, addr netip.Addr, hostLC *local.Client, nk key.NodePublic, clients []*tsnet.Server) error {
	route := netip.PrefixFrom(addr, addr.BitLen())
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done, why := true, ""
		if st, err := hostLC.StatusWithoutPeers(ctx); err != nil || !st.Self.CapMap.Contains(tailcfg.NodeAttrServiceHost) {
			done, why = false, "host has no service-host capability yet"
		}
		for _, c := range clients {
			lc, err := c.LocalClient()
			if err != nil {
				return fmt.Errorf("tailnetsim: %w", err)
			}
			st, err := lc.Status(ctx)
			if err != nil {
				done, why = false, err.Error()
				break
			}
			peer, ok := st.Peer[nk]
			if !ok || peer.PrimaryRoutes == nil || !slices.Contains(peer.PrimaryRoutes.AsSlice(), route) {
				done, why = false, "a client does not route the service address to the host yet"
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tailnetsim: routing %s: %s: %w", name, why, ctx.Err())
		case <-tick.C:
		}
	}
}
