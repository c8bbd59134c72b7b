package tailnetsim

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"time"
	"unsafe"

	"tailscale.com/derp/derpserver"
	"tailscale.com/net/netaddr"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// derpSTUN is an in-process DERP relay and STUN server bound to one address (127.0.0.1 unless
// Options.ListenAddr says otherwise).
//
// It mirrors tstest/integration.RunDERPAndSTUN, which needs a testing.TB
// (unavailable to cmd/tailnet-sim) and binds STUN on the wildcard address.
type derpSTUN struct {
	derp    *derpserver.Server
	httpSrv *httptest.Server
	stunPC  net.PacketConn
	stunWG  sync.WaitGroup
	derpMap *tailcfg.DERPMap
}

func startDERPAndSTUN(addr string, logf logger.Logf) (*derpSTUN, error) {
	d := &derpSTUN{derp: derpserver.New(key.NewNode(), logf)}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		d.derp.Close()
		return nil, fmt.Errorf("derp listen: %w", err)
	}
	d.httpSrv = httptest.NewUnstartedServer(derpserver.Handler(d.derp))
	d.httpSrv.Listener.Close()
	d.httpSrv.Listener = ln
	d.httpSrv.Config.ErrorLog = logger.StdLogger(logf)
	d.httpSrv.Config.TLSNextProto = make(map[string]func(*http.Server, *tls.Conn, http.Handler))
	d.httpSrv.StartTLS()

	pc, err := net.ListenPacket("udp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("stun listen: %w", err)
	}
	d.stunPC = pc
	d.stunWG.Add(1)
	go d.serveSTUN()

	d.derpMap = &tailcfg.DERPMap{
		Regions: map[int]*tailcfg.DERPRegion{
			1: {
				RegionID:   1,
				RegionCode: "sim",
				RegionName: "tailnetsim",
				Nodes: []*tailcfg.DERPNode{{
					Name:             "1a",
					RegionID:         1,
					HostName:         addr,
					IPv4:             addr,
					IPv6:             "none",
					STUNPort:         pc.LocalAddr().(*net.UDPAddr).Port,
					DERPPort:         ln.Addr().(*net.TCPAddr).Port,
					InsecureForTests: true,
					STUNTestIP:       addr,
				}},
			},
		},
	}
	return d, nil
}

// serveSTUN answers STUN binding requests until the socket is closed.
func (d *derpSTUN) serveSTUN() {
	defer d.stunWG.Done()
	buf := make([]byte, 64<<10)
	for {
		n, src, err := d.stunPC.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok || !stun.Is(buf[:n]) {
			continue
		}
		txid, err := stun.ParseBindingRequest(buf[:n])
		if err != nil {
			continue
		}
		_, _ = d.stunPC.WriteTo(stun.Response(txid, netaddr.Unmap(ua.AddrPort())), src)
	}
}

// Close stops DERP and STUN.
func (d *derpSTUN) Close() {
	if d.httpSrv != nil {
		d.httpSrv.CloseClientConnections()
		d.httpSrv.Close()
	}
	d.derp.Close()
	if d.stunPC != nil {
		d.stunPC.Close()
		d.stunWG.Wait()
	}
}

// connTracker records which nodes hold a streaming map poll open on the
// control server, which is what "connected to control" means.
type connTracker struct {
	mu       sync.Mutex
	streams  map[key.NodePublic]int
	lastSeen map[key.NodePublic]time.Time
	created  map[key.NodePublic]time.Time
	now      func() time.Time
}

func newConnTracker(now func() time.Time) *connTracker {
	return &connTracker{
		streams:  map[key.NodePublic]int{},
		lastSeen: map[key.NodePublic]time.Time{},
		created:  map[key.NodePublic]time.Time{},
		now:      now,
	}
}

// holdMapRequest is installed as testcontrol.Server.HoldMapRequest. For
// streaming polls the returned func runs when the poll ends.
func (c *connTracker) holdMapRequest(req *tailcfg.MapRequest) func() {
	nk := req.NodeKey
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if _, ok := c.created[nk]; !ok {
		c.created[nk] = now
	}
	c.lastSeen[nk] = now
	if !req.Stream || req.ReadOnly {
		return nil
	}
	c.streams[nk]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.streams[nk]--
		if c.streams[nk] <= 0 {
			delete(c.streams, nk)
		}
		c.lastSeen[nk] = c.now()
	}
}

// state reports whether nk has a streaming poll open, when it was last seen
// and when it first contacted control.
func (c *connTracker) state(nk key.NodePublic) (connected bool, lastSeen, created time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[nk] > 0, c.lastSeen[nk], c.created[nk]
}

// startControl starts a testcontrol server on an httptest listener on addr that requires
// authKey for registration, and any other key to pass redeem (when set; see
// checkRegistrations); hold is its HoldMapRequest.
func startControl(addr string, derpMap *tailcfg.DERPMap, hold func(*tailcfg.MapRequest) func(), authKey, magicDNSSuffix string,
	redeem func(key, nodeKey string, tags []string) error, logf logger.Logf) (*testcontrol.Server, error) {
	control := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: magicDNSSuffix,
		RequireAuthKey: authKey,
		// Non-nil TagOwners makes testcontrol honour the tags a node
		// requests at registration (tsnet.Server.AdvertiseTags).
		TagOwners:      map[string][]string{},
		AllOnline:      true,
		HoldMapRequest: hold,
		Logf:           logf,
	}
	if redeem != nil {
		if err := checkRegistrations(control, authKey, redeem); err != nil {
			return nil, err // testcontrol changed shape: fails every test at start, loudly
		}
	}
	srv, err := serveOn(addr, control, nil, logf)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	control.HTTPTestServer = srv
	return control, nil
}

// serveOn starts an httptest server of h on a free port of addr, over TLS with cfg when cfg is
// not nil; logf (when not nil) receives its errors.
func serveOn(addr string, h http.Handler, cfg *tls.Config, logf logger.Logf) (*httptest.Server, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	if logf != nil {
		srv.Config.ErrorLog = logger.StdLogger(logf)
	}
	if cfg != nil {
		srv.TLS = cfg
		srv.StartTLS()
	} else {
		srv.Start()
	}
	return srv, nil
}

// checkRegistrations puts redeem in front of control's /machine/register, which testcontrol
// checks against one auth key only (RequireAuthKey): a registration presenting a key is refused
// with redeem's error, or passed on carrying required (the key testcontrol requires); one
// presenting none passes as required when control knows the node (a node with state
// re-registering, which needs no key at Tailscale either), else unchanged (refused when a key is
// required). testcontrol serves the registration, inside its Noise channel, from an unexported
// ServeMux: that field is replaced through reflection, before the server starts.
func checkRegistrations(control *testcontrol.Server, required string, redeem func(key, nodeKey string, tags []string) error) error {
	control.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/generate_204", nil)) // builds the mux
	field := reflect.ValueOf(control).Elem().FieldByName("mux")
	if !field.IsValid() || field.Type() != reflect.TypeFor[*http.ServeMux]() {
		return errors.New("tailnetsim: testcontrol.Server has no mux *http.ServeMux field: auth key checks need updating")
	}
	mux := (**http.ServeMux)(unsafe.Pointer(field.UnsafeAddr()))
	inner := *mux
	outer := http.NewServeMux()
	outer.Handle("/", inner)
	outer.HandleFunc("/machine/register", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body.Close()
		var req tailcfg.RegisterRequest
		if err != nil || json.Unmarshal(body, &req) != nil {
			http.Error(w, "bad register request", http.StatusBadRequest)
			return
		}
		known := control.Node(req.NodeKey) != nil || (!req.OldNodeKey.IsZero() && control.Node(req.OldNodeKey) != nil)
		switch {
		case req.Auth != nil && req.Auth.AuthKey != "":
			var tags []string
			if req.Hostinfo != nil {
				tags = req.Hostinfo.RequestTags
			}
			if err := redeem(req.Auth.AuthKey, req.NodeKey.String(), tags); err != nil {
				b, _ := json.Marshal(tailcfg.RegisterResponse{Error: err.Error()})
				w.WriteHeader(http.StatusOK)
				w.Write(b)
				return
			}
			req.Auth.AuthKey = required
		case known:
			req.Auth = &tailcfg.RegisterResponseAuth{AuthKey: required}
		}
		if body, err = json.Marshal(req); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		inner.ServeHTTP(w, r)
	})
	*mux = outer
	return nil
}

// removeNode deletes the node whose stable ID is id from control, as the Tailscale API's device
// deletion does: it leaves every peer's netmap (the remaining nodes get a new map), and the
// node, unknown to control from then on, gets no map and must register again with a key.
// testcontrol has no such call: its unexported nodes map is edited through reflection, under
// its mutex. It reports whether a node was removed. Limitation: testcontrol sends full peer
// lists, and an empty one is omitted from its JSON, which a client reads as "no change": the
// last peer of a node stays in that node's netmap (a tailnet of two nodes).
func removeNode(control *testcontrol.Server, id tailcfg.StableNodeID) (bool, error) {
	v := reflect.ValueOf(control).Elem()
	muField, nodesField := v.FieldByName("mu"), v.FieldByName("nodes")
	if !muField.IsValid() || muField.Type() != reflect.TypeFor[sync.Mutex]() ||
		!nodesField.IsValid() || nodesField.Type() != reflect.TypeFor[map[key.NodePublic]*tailcfg.Node]() {
		return false, errors.New("tailnetsim: testcontrol.Server has no mu sync.Mutex and nodes map: device deletion needs updating")
	}
	mu := (*sync.Mutex)(unsafe.Pointer(muField.UnsafeAddr()))
	nodes := (*map[key.NodePublic]*tailcfg.Node)(unsafe.Pointer(nodesField.UnsafeAddr()))
	mu.Lock()
	removed := false
	var remaining *tailcfg.Node
	for k, n := range *nodes {
		if n.StableID == id {
			delete(*nodes, k)
			removed = true
		} else if remaining == nil {
			remaining = n.Clone()
		}
	}
	mu.Unlock()
	if removed && remaining != nil {
		control.UpdateNode(remaining) // unchanged: sends every node a map without the removed one
	}
	return removed, nil
}
