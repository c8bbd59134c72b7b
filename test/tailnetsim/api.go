package tailnetsim

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go4.org/mem"
	"tailscale.com/net/tsaddr"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// ErrorInjection makes the fake API fail requests, as a struggling
// Tailscale API would. It applies to the next Count matching requests, or
// to every matching request for Duration (both set: whichever ends first;
// neither: one request). Injections queue; the first matching one applies.
type ErrorInjection struct {
	// Status is the HTTP status to answer with, e.g. 500 or 429.
	Status int
	// Count is the number of requests to fail.
	Count int
	// Duration fails matching requests for this long from InjectErrors.
	Duration time.Duration
	// RetryAfter, if positive, is sent as Retry-After (whole seconds, rounded up).
	RetryAfter time.Duration
	// Body replaces the default JSON error body {"message": ...}.
	Body string
	// ContentType of Body; "application/json" by default.
	ContentType string
	// PathPrefix limits the injection to paths with this prefix, e.g.
	// "/api/v2/tailnet/". Empty matches every request except the OAuth
	// token endpoint.
	PathPrefix string
	// IncludeTokenEndpoint also fails POST /api/v2/oauth/token.
	IncludeTokenEndpoint bool
}

// HTMLErrorBody is a non-JSON error page, as a proxy in front of the API
// might serve; use it with ContentType "text/html".
const HTMLErrorBody = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>\n"

type injection struct {
	ErrorInjection
	remaining int
	until     time.Time
}

const tokenPath = "/api/v2/oauth/token"

// nodeInfo is a device as the API derives it.
type nodeInfo struct {
	node      *tailcfg.Node
	connected bool
	lastSeen  time.Time
	created   time.Time
	ephemeral bool
}

// apiServer is a stateful fake of the Tailscale API v2.
type apiServer struct {
	now          func() time.Time
	tailnet      string
	clientID     string
	clientSecret string
	apiKey       string
	authKey      string
	tokenTTL     time.Duration
	nodes        func() []nodeInfo // live nodes (control server), may be nil
	// removeNode deletes a live node from control (DELETE device); nil deletes none.
	removeNode func(id tailcfg.StableNodeID) (bool, error)
	randHex    func(nbytes int) string
	mux        *http.ServeMux

	mu          sync.Mutex
	tokens      map[string]time.Time
	virtual     []nodeInfo
	online      map[string]onlineOverride // by hostname
	tags        map[string][]string       // tags set through the API, by hostname
	services    map[string]*apiService
	nextSvcIP   int
	hosts       map[string]map[string]*serviceHost // service -> hostname -> host
	keys        map[string]*keyJSON
	keyOrder    []string
	minted      []string // every key value minted, deleted or not
	injections  []*injection
	total       int64
	counts      map[string]int64
	nextVirtual int

	// changed, if set, runs after a request that changed Services or host approval (the
	// simulator routes Services from them), outside mu.
	changed func()
}

// onlineOverride is an API-level connectedToControl set by SetAPIOnline.
type onlineOverride struct {
	online bool
	since  time.Time
}

type serviceHost struct {
	configured bool   // set by SetServiceHost or DeviceSpec.Services
	advertised bool   // the node advertises the Service (c2n GET /vip-services, see serviceRouter)
	approval   string // "", approvalAuto, approvalManual or approvalNone
}

const (
	approvalNone   = "not-approved"
	approvalAuto   = "approved:auto"
	approvalManual = "approved:manual"
)

func newAPIServer(tailnet, clientID, clientSecret, apiKey, authKey string, tokenTTL time.Duration, now func() time.Time, nodes func() []nodeInfo) *apiServer {
	a := &apiServer{
		now:          now,
		tailnet:      tailnet,
		clientID:     clientID,
		clientSecret: clientSecret,
		apiKey:       apiKey,
		authKey:      authKey,
		tokenTTL:     tokenTTL,
		nodes:        nodes,
		randHex:      randHex,
		tokens:       map[string]time.Time{},
		online:       map[string]onlineOverride{},
		tags:         map[string][]string{},
		services:     map[string]*apiService{},
		hosts:        map[string]map[string]*serviceHost{},
		keys:         map[string]*keyJSON{},
		counts:       map[string]int64{},
	}
	m := http.NewServeMux()
	m.HandleFunc("POST "+tokenPath, a.handleToken)
	m.HandleFunc("GET /api/v2/tailnet/{tailnet}/devices", a.tailnetScoped(a.handleListDevices))
	m.HandleFunc("GET /api/v2/device/{deviceId}", a.handleGetDevice)
	m.HandleFunc("POST /api/v2/device/{deviceId}/tags", a.handleSetDeviceTags)
	m.HandleFunc("DELETE /api/v2/device/{deviceId}", a.handleDeleteDevice)
	m.HandleFunc("GET /api/v2/tailnet/{tailnet}/keys", a.tailnetScoped(a.handleListKeys))
	m.HandleFunc("POST /api/v2/tailnet/{tailnet}/keys", a.tailnetScoped(a.handleCreateKey))
	m.HandleFunc("GET /api/v2/tailnet/{tailnet}/keys/{keyId}", a.tailnetScoped(a.handleGetKey))
	m.HandleFunc("DELETE /api/v2/tailnet/{tailnet}/keys/{keyId}", a.tailnetScoped(a.handleDeleteKey))
	for _, kind := range []string{"vip-services", "services"} {
		base := "/api/v2/tailnet/{tailnet}/" + kind
		m.HandleFunc("GET "+base, a.tailnetScoped(a.handleListServices))
		m.HandleFunc("GET "+base+"/{name}", a.tailnetScoped(a.handleGetService))
		m.HandleFunc("PUT "+base+"/{name}", a.notifying(a.tailnetScoped(a.handlePutService)))
		m.HandleFunc("DELETE "+base+"/{name}", a.notifying(a.tailnetScoped(a.handleDeleteService)))
		m.HandleFunc("GET "+base+"/{name}/devices", a.tailnetScoped(a.handleServiceHosts))
		m.HandleFunc("GET "+base+"/{name}/device/{deviceId}/approved", a.tailnetScoped(a.handleGetApproval))
		m.HandleFunc("POST "+base+"/{name}/device/{deviceId}/approved", a.notifying(a.tailnetScoped(a.handleSetApproval)))
	}
	a.mux = m
	return a
}

// ServeHTTP counts the request, applies error injection and authentication,
// then routes it.
func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pattern := a.mux.Handler(r)
	a.mu.Lock()
	a.total++
	if pattern == "" {
		a.counts["unmatched"]++
	} else {
		a.counts[pattern]++
	}
	inj := a.takeInjectionLocked(r)
	a.mu.Unlock()

	if inj != nil {
		writeInjected(w, inj)
		return
	}
	if pattern == "" {
		writeAPIError(w, http.StatusNotFound, "not found")
		return
	}
	if r.URL.Path != tokenPath && !a.authorized(r) {
		writeAPIError(w, http.StatusUnauthorized, "API token invalid")
		return
	}
	a.mux.ServeHTTP(w, r)
}

func (a *apiServer) takeInjectionLocked(r *http.Request) *ErrorInjection {
	now := a.now()
	isToken := r.URL.Path == tokenPath
	for i := 0; i < len(a.injections); {
		inj := a.injections[i]
		expired := (inj.Count > 0 && inj.remaining <= 0) || (inj.Duration > 0 && !now.Before(inj.until))
		if expired {
			a.injections = slices.Delete(a.injections, i, i+1)
			continue
		}
		if (isToken && !inj.IncludeTokenEndpoint) || !strings.HasPrefix(r.URL.Path, inj.PathPrefix) {
			i++
			continue
		}
		if inj.Count > 0 {
			inj.remaining--
		}
		e := inj.ErrorInjection
		return &e
	}
	return nil
}

func (a *apiServer) inject(e ErrorInjection) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.Count <= 0 && e.Duration <= 0 {
		e.Count = 1
	}
	a.injections = append(a.injections, &injection{ErrorInjection: e, remaining: e.Count, until: a.now().Add(e.Duration)})
}

func (a *apiServer) clearInjections() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.injections = nil
}

func writeInjected(w http.ResponseWriter, e *ErrorInjection) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if e.Body == "" {
		msg := http.StatusText(e.Status)
		if e.Status == http.StatusTooManyRequests {
			msg = "rate limit exceeded"
		}
		writeAPIError(w, e.Status, msg)
		return
	}
	ct := e.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(e.Status)
	io.WriteString(w, e.Body)
}

func (a *apiServer) requestCounts() (int64, map[string]int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]int64, len(a.counts))
	for k, v := range a.counts {
		m[k] = v
	}
	return a.total, m
}

// authorized accepts an unexpired OAuth access token as a bearer token, or
// the API key as a bearer token or as the basic-auth user name.
func (a *apiServer) authorized(r *http.Request) bool {
	if u, _, ok := r.BasicAuth(); ok {
		return secureEqual(u, a.apiKey)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	if secureEqual(tok, a.apiKey) {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.tokens[tok]
	return ok && a.now().Before(exp)
}

func secureEqual(a, b string) bool {
	return b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// tailnetScoped rejects requests for any tailnet but "-" and ours.
func (a *apiServer) tailnetScoped(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if t := r.PathValue("tailnet"); t != "-" && t != a.tailnet {
			writeAPIError(w, http.StatusNotFound, "tailnet not found")
			return
		}
		h(w, r)
	}
}

// apiError is the API's error body (tailscale.APIError).
type apiError struct {
	Message string `json:"message"`
}

func writeAPIError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// --- OAuth ---

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

func (a *apiServer) handleToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, oauthError{Error: "invalid_request", ErrorDescription: "malformed form body"})
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, oauthError{Error: "unsupported_grant_type"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if !secureEqual(id, a.clientID) || !secureEqual(secret, a.clientSecret) {
		writeJSON(w, http.StatusUnauthorized, oauthError{Error: "invalid_client", ErrorDescription: "invalid client credentials"})
		return
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		scope = "all"
	}
	tok := "tskey-api-sim" + a.randHex(16)
	a.mu.Lock()
	a.tokens[tok] = a.now().Add(a.tokenTTL)
	a.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int64(a.tokenTTL / time.Second), Scope: scope})
}

// --- Devices ---

// apiDevice follows the Device schema of the API (tailscale.Device).
type apiDevice struct {
	Addresses                 []string `json:"addresses"`
	ID                        string   `json:"id"`
	NodeID                    string   `json:"nodeId"`
	User                      string   `json:"user"`
	Name                      string   `json:"name"`
	Hostname                  string   `json:"hostname"`
	ClientVersion             string   `json:"clientVersion"`
	UpdateAvailable           bool     `json:"updateAvailable"`
	OS                        string   `json:"os"`
	Created                   string   `json:"created"`
	ConnectedToControl        bool     `json:"connectedToControl"`
	LastSeen                  string   `json:"lastSeen,omitempty"`
	KeyExpiryDisabled         bool     `json:"keyExpiryDisabled"`
	Expires                   string   `json:"expires"`
	Authorized                bool     `json:"authorized"`
	IsExternal                bool     `json:"isExternal"`
	IsEphemeral               bool     `json:"isEphemeral"`
	MachineKey                string   `json:"machineKey"`
	NodeKey                   string   `json:"nodeKey"`
	BlocksIncomingConnections bool     `json:"blocksIncomingConnections"`
	Tags                      []string `json:"tags,omitempty"`
	TailnetLockKey            string   `json:"tailnetLockKey"`
	TailnetLockError          string   `json:"tailnetLockError"`

	// Only with ?fields=all.
	AdvertisedRoutes   *[]string           `json:"advertisedRoutes,omitempty"`
	EnabledRoutes      *[]string           `json:"enabledRoutes,omitempty"`
	ClientConnectivity *clientConnectivity `json:"clientConnectivity,omitempty"`
}

type clientConnectivity struct {
	Endpoints             []string               `json:"endpoints"`
	DERP                  string                 `json:"derp"`
	MappingVariesByDestIP bool                   `json:"mappingVariesByDestIP"`
	Latency               map[string]derpLatency `json:"latency"`
	ClientSupports        map[string]bool        `json:"clientSupports"`
}

type derpLatency struct {
	Preferred bool    `json:"preferred,omitempty"`
	LatencyMs float64 `json:"latencyMs"`
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

// allNodes returns live and virtual nodes with API-level online overrides applied.
func (a *apiServer) allNodes() []nodeInfo {
	var nodes []nodeInfo
	if a.nodes != nil {
		nodes = a.nodes()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	nodes = append(nodes, a.virtual...)
	for i := range nodes {
		n := &nodes[i]
		if o, ok := a.online[n.node.Hostinfo.Hostname()]; ok {
			if n.connected && !o.online {
				n.lastSeen = o.since
			}
			n.connected = o.online
		}
	}
	return nodes
}

func (a *apiServer) deviceJSON(n nodeInfo, all bool) apiDevice {
	node := n.node
	hi := node.Hostinfo
	d := apiDevice{
		ID:                 strconv.FormatInt(int64(node.ID), 10),
		NodeID:             string(node.StableID),
		User:               fmt.Sprintf("user-%d@fake-control.example.net", node.User),
		Name:               strings.TrimSuffix(node.Name, "."),
		Hostname:           hi.Hostname(),
		ClientVersion:      hi.IPNVersion(),
		OS:                 hi.OS(),
		Created:            formatTime(n.created),
		ConnectedToControl: n.connected,
		KeyExpiryDisabled:  node.KeyExpiry.IsZero(),
		Expires:            node.KeyExpiry.UTC().Format(time.RFC3339),
		Authorized:         node.MachineAuthorized,
		IsEphemeral:        n.ephemeral,
		MachineKey:         node.Machine.String(),
		NodeKey:            node.Key.String(),
		Tags:               a.deviceTags(hi.Hostname(), node.Tags),
	}
	if len(d.Tags) > 0 {
		d.User = "tagged-devices"
	}
	if !n.connected {
		// The API omits lastSeen while a device is connected.
		d.LastSeen = formatTime(n.lastSeen)
	}
	for _, p := range node.Addresses {
		d.Addresses = append(d.Addresses, p.Addr().String())
	}
	if d.Addresses == nil {
		d.Addresses = []string{}
	}
	if all {
		adv, en := []string{}, []string{}
		for _, p := range node.PrimaryRoutes {
			adv = append(adv, p.String())
			en = append(en, p.String())
		}
		d.AdvertisedRoutes, d.EnabledRoutes = &adv, &en
		cc := &clientConnectivity{
			Endpoints:      []string{},
			Latency:        map[string]derpLatency{},
			ClientSupports: map[string]bool{"hairPinning": false, "ipv6": false, "pcp": false, "pmp": false, "udp": true, "upnp": false},
		}
		for _, ep := range node.Endpoints {
			cc.Endpoints = append(cc.Endpoints, ep.String())
		}
		if node.HomeDERP != 0 {
			cc.DERP = "sim"
			cc.Latency["sim"] = derpLatency{Preferred: true, LatencyMs: 0.1}
		}
		d.ClientConnectivity = cc
	}
	return d
}

func wantAllFields(r *http.Request) bool { return r.URL.Query().Get("fields") == "all" }

func (a *apiServer) handleListDevices(w http.ResponseWriter, r *http.Request) {
	all := wantAllFields(r)
	devs := []apiDevice{}
	for _, n := range a.allNodes() {
		devs = append(devs, a.deviceJSON(n, all))
	}
	writeJSON(w, http.StatusOK, map[string][]apiDevice{"devices": devs})
}

// findNode finds a node by numeric id or stable node id.
func (a *apiServer) findNode(id string) (nodeInfo, bool) {
	for _, n := range a.allNodes() {
		if string(n.node.StableID) == id || strconv.FormatInt(int64(n.node.ID), 10) == id {
			return n, true
		}
	}
	return nodeInfo{}, false
}

func (a *apiServer) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	n, ok := a.findNode(r.PathValue("deviceId"))
	if !ok {
		writeAPIError(w, http.StatusNotFound, "device not found")
		return
	}
	writeJSON(w, http.StatusOK, a.deviceJSON(n, wantAllFields(r)))
}

func (a *apiServer) setOnline(hostname string, online *bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if online == nil {
		delete(a.online, hostname)
		return
	}
	a.online[hostname] = onlineOverride{online: *online, since: a.now()}
}

// deviceTags are the tags set through the API for hostname, else the node's own.
func (a *apiServer) deviceTags(hostname string, own []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tags[hostname]; ok {
		return slices.Clone(t)
	}
	return slices.Clone(own)
}

// setTags sets the tags the API reports for hostname.
func (a *apiServer) setTags(hostname string, tags []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tags[hostname] = slices.Clone(tags)
}

// handleDeleteDevice is DELETE /api/v2/device/{deviceId}: the node leaves control (its peers'
// netmaps, the device list) and must join again with a new key; 404 for an unknown device.
func (a *apiServer) handleDeleteDevice(w http.ResponseWriter, r *http.Request) {
	n, ok := a.findNode(r.PathValue("deviceId"))
	if !ok || a.removeNode == nil {
		writeAPIError(w, http.StatusNotFound, "device not found")
		return
	}
	removed, err := a.removeNode(n.node.StableID)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !removed {
		writeAPIError(w, http.StatusNotFound, "device not found")
		return
	}
	a.mu.Lock()
	delete(a.tags, n.node.Hostinfo.Hostname())
	// The single-use key it joined with is spent: the node registering again with it is
	// "another node" now, as at Tailscale, where a deleted device needs a new key.
	for _, k := range a.keys {
		if k.usedBy == n.node.Key.String() {
			k.usedBy = "deleted " + k.usedBy
		}
	}
	a.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// handleSetDeviceTags is POST /api/v2/device/{deviceId}/tags {"tags": [...]}. The API reports
// the new tags; the node's own (its netmap) keep what it advertised.
func (a *apiServer) handleSetDeviceTags(w http.ResponseWriter, r *http.Request) {
	n, ok := a.findNode(r.PathValue("deviceId"))
	if !ok {
		writeAPIError(w, http.StatusNotFound, "device not found")
		return
	}
	var body struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	for _, t := range body.Tags {
		if !tagRE.MatchString(t) {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("invalid tag %q", t))
			return
		}
	}
	a.setTags(n.node.Hostinfo.Hostname(), body.Tags)
	w.WriteHeader(http.StatusOK)
}

// addVirtual adds a device that exists only in the API.
func (a *apiServer) addVirtual(hostname string, tags []string, magicDNSSuffix string) nodeInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextVirtual++
	n := a.nextVirtual
	v4 := netip.AddrFrom4([4]byte{100, 90, byte(n >> 8), byte(n)})
	v6 := tsaddr.Tailscale4To6(v4)
	hi := &tailcfg.Hostinfo{Hostname: hostname, OS: "linux", IPNVersion: "1.102.5-sim"}
	nk := sha256.Sum256([]byte("node/" + hostname))
	mk := sha256.Sum256([]byte("machine/" + hostname))
	node := &tailcfg.Node{
		ID:                tailcfg.NodeID(100000 + n),
		Key:               key.NodePublicFromRaw32(mem.B(nk[:])),
		Machine:           key.MachinePublicFromRaw32(mem.B(mk[:])),
		StableID:          tailcfg.StableNodeID(fmt.Sprintf("nVIRT%06dCNTRL", n)),
		Name:              hostname + "." + magicDNSSuffix + ".",
		User:              tailcfg.UserID(1),
		Addresses:         []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)},
		MachineAuthorized: true,
		Tags:              slices.Clone(tags),
		Hostinfo:          hi.View(),
	}
	ni := nodeInfo{node: node, connected: true, created: a.now(), lastSeen: a.now()}
	a.virtual = append(a.virtual, ni)
	return ni
}

// --- Keys ---

type keyCapabilities struct {
	Devices struct {
		Create struct {
			Reusable      bool     `json:"reusable"`
			Ephemeral     bool     `json:"ephemeral"`
			Preauthorized bool     `json:"preauthorized"`
			Tags          []string `json:"tags"`
		} `json:"create"`
	} `json:"devices"`
}

// keyJSON follows the Key schema (tailscale.Key) for auth keys.
type keyJSON struct {
	ID            string          `json:"id"`
	KeyType       string          `json:"keyType"`
	Key           string          `json:"key,omitempty"`
	Description   string          `json:"description"`
	ExpirySeconds int64           `json:"expirySeconds"`
	Created       string          `json:"created"`
	Updated       string          `json:"updated"`
	Expires       string          `json:"expires"`
	Invalid       bool            `json:"invalid"`
	Capabilities  keyCapabilities `json:"capabilities"`
	UserID        string          `json:"userId"`

	// usedBy is the node key that registered with a key that is not reusable ("" while unused).
	usedBy string
}

// invalid reports what the API's "invalid" says of k at now: expired, or a single-use key
// already used (a revoked key is deleted here).
func (k *keyJSON) invalid(now time.Time) bool {
	return k.expired(now) || (!k.Capabilities.Devices.Create.Reusable && k.usedBy != "")
}

// expired reports whether k's expiry has passed at now.
func (k *keyJSON) expired(now time.Time) bool {
	exp, err := time.Parse(time.RFC3339, k.Expires)
	return err == nil && !now.Before(exp)
}

type createKeyRequest struct {
	KeyType       string          `json:"keyType"`
	Capabilities  keyCapabilities `json:"capabilities"`
	ExpirySeconds int64           `json:"expirySeconds"`
	Description   string          `json:"description"`
}

var tagRE = regexp.MustCompile(`^tag:[a-zA-Z0-9][a-zA-Z0-9-]*$`)

func (a *apiServer) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	var req createKeyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	if req.KeyType != "" && req.KeyType != "auth" {
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("keyType %q is not supported by the simulator", req.KeyType))
		return
	}
	for _, t := range req.Capabilities.Devices.Create.Tags {
		if !tagRE.MatchString(t) {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("invalid tag %q", t))
			return
		}
	}
	if req.ExpirySeconds <= 0 {
		req.ExpirySeconds = 90 * 24 * 3600
	}
	now := a.now()
	id := "k" + strings.ToUpper(a.randHex(6)) + "CNTRL"
	k := &keyJSON{
		ID:            id,
		KeyType:       "auth",
		Key:           "tskey-auth-" + id + "-" + a.randHex(16),
		Description:   req.Description,
		ExpirySeconds: req.ExpirySeconds,
		Created:       formatTime(now),
		Updated:       formatTime(now),
		Expires:       formatTime(now.Add(time.Duration(req.ExpirySeconds) * time.Second)),
		Capabilities:  req.Capabilities,
		UserID:        "u1CNTRL",
	}
	a.mu.Lock()
	a.keys[k.ID] = k
	a.keyOrder = append(a.keyOrder, k.ID)
	a.minted = append(a.minted, k.Key)
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, k)
}

// redeem decides a registration of nodeKey presenting key value with requestedTags, as
// Tailscale's control plane does: the simulator's own key (AuthKey) always joins; any other
// must be a key minted here and not deleted (revoked), not expired, not used by another node
// when it is not reusable, and carrying every requested tag when it carries tags. A
// single-use key is used up by the first node that joins with it.
func (a *apiServer) redeem(value, nodeKey string, requestedTags []string) error {
	if secureEqual(value, a.authKey) {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var k *keyJSON
	for _, c := range a.keys {
		if secureEqual(value, c.Key) {
			k = c
		}
	}
	switch {
	case k == nil:
		return errors.New("invalid key: unknown or revoked")
	case k.expired(a.now()):
		return errors.New("invalid key: expired")
	case !k.Capabilities.Devices.Create.Reusable && k.usedBy != "" && k.usedBy != nodeKey:
		return errors.New("invalid key: single-use key already used")
	}
	if keyTags := k.Capabilities.Devices.Create.Tags; len(keyTags) > 0 {
		for _, t := range requestedTags {
			if !slices.Contains(keyTags, t) {
				return fmt.Errorf("requested tags [%s] are invalid or not permitted", strings.Join(requestedTags, ", "))
			}
		}
	}
	if !k.Capabilities.Devices.Create.Reusable {
		k.usedBy = nodeKey
	}
	return nil
}

func (a *apiServer) handleListKeys(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	keys := []keyJSON{}
	for _, id := range a.keyOrder {
		k := *a.keys[id]
		k.Key = ""
		k.Invalid = k.invalid(a.now())
		keys = append(keys, k)
	}
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string][]keyJSON{"keys": keys})
}

func (a *apiServer) handleGetKey(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	k, ok := a.keys[r.PathValue("keyId")]
	var out keyJSON
	if ok {
		out = *k
		out.Key = ""
		out.Invalid = k.invalid(a.now())
	}
	a.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "key not found")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// expireKey moves the expiry of key id to now, as time passing beyond it would.
func (a *apiServer) expireKey(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, ok := a.keys[id]
	if ok {
		k.Expires = formatTime(a.now())
		k.Updated = k.Expires
	}
	return ok
}

func (a *apiServer) handleDeleteKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("keyId")
	a.mu.Lock()
	_, ok := a.keys[id]
	delete(a.keys, id)
	a.keyOrder = slices.DeleteFunc(a.keyOrder, func(s string) bool { return s == id })
	a.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "key not found")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// --- Services ---

// apiService follows the Service schema (tailscale.Service).
type apiService struct {
	Name        string            `json:"name,omitempty"`
	Addrs       []string          `json:"addrs,omitempty"`
	Comment     string            `json:"comment,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Ports       []string          `json:"ports,omitempty"`
	Tags        []string          `json:"tags,omitempty"`
}

var (
	serviceNameRE = regexp.MustCompile(`^svc:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	portRE        = regexp.MustCompile(`^(tcp|udp):([0-9]{1,5})(-[0-9]{1,5})?$`)
)

func (a *apiServer) handleListServices(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	names := make([]string, 0, len(a.services))
	for n := range a.services {
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]apiService, 0, len(names))
	for _, n := range names {
		list = append(list, cloneService(a.services[n]))
	}
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string][]apiService{"vipServices": list})
}

func cloneService(s *apiService) apiService {
	c := *s
	c.Addrs = slices.Clone(s.Addrs)
	c.Ports = slices.Clone(s.Ports)
	c.Tags = slices.Clone(s.Tags)
	if s.Annotations != nil {
		c.Annotations = make(map[string]string, len(s.Annotations))
		for k, v := range s.Annotations {
			c.Annotations[k] = v
		}
	}
	return c
}

func (a *apiServer) handleGetService(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	s, ok := a.services[r.PathValue("name")]
	var out apiService
	if ok {
		out = cloneService(s)
	}
	a.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "service not found")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *apiServer) handlePutService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !serviceNameRE.MatchString(name) {
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("invalid service name %q: want svc:<dns-label>", name))
		return
	}
	var in apiService
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	if in.Name != "" && in.Name != name {
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("name %q in body does not match path %q", in.Name, name))
		return
	}
	for _, p := range in.Ports {
		if p != "do-not-validate" && !portRE.MatchString(p) {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("invalid port %q: want tcp:<port>", p))
			return
		}
	}
	for _, t := range in.Tags {
		if !tagRE.MatchString(t) {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("invalid tag %q", t))
			return
		}
	}
	in.Name = name
	a.mu.Lock()
	defer a.mu.Unlock()
	if old, ok := a.services[name]; ok {
		// As the real API does, an update must carry the addresses allocated at creation
		// (Get before PUT): without them the PUT fails, and they cannot be changed.
		if len(in.Addrs) == 0 {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("service %s exists: addrs must be given (its current addresses %v)", name, old.Addrs))
			return
		}
		if !slices.Equal(in.Addrs, old.Addrs) && !(len(in.Addrs) == 1 && in.Addrs[0] == old.Addrs[0]) {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("addrs of service %s cannot be changed from %v", name, old.Addrs))
			return
		}
		in.Addrs = old.Addrs
	} else {
		addrs, err := a.allocServiceAddrsLocked(in.Addrs)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, err.Error())
			return
		}
		in.Addrs = addrs
	}
	s := cloneService(&in)
	a.services[name] = &s
	writeJSON(w, http.StatusOK, cloneService(&s))
}

// allocServiceAddrsLocked allocates an IPv4 from 100.100.0.0/16 (or the
// requested one) and the matching fd7a:115c:a1e0:: IPv6.
func (a *apiServer) allocServiceAddrsLocked(requested []string) ([]string, error) {
	used := map[netip.Addr]bool{}
	for _, s := range a.services {
		for _, ad := range s.Addrs {
			if ip, err := netip.ParseAddr(ad); err == nil {
				used[ip] = true
			}
		}
	}
	var v4 netip.Addr
	if len(requested) > 0 {
		ip, err := netip.ParseAddr(requested[0])
		if err != nil || !ip.Is4() || !tsaddr.CGNATRange().Contains(ip) {
			return nil, fmt.Errorf("requested address %q must be an IPv4 address in 100.64.0.0/10", requested[0])
		}
		if used[ip] {
			return nil, fmt.Errorf("address %v is already in use", ip)
		}
		v4 = ip
	} else {
		for range 1 << 16 {
			a.nextSvcIP++
			ip := netip.AddrFrom4([4]byte{100, 100, byte(a.nextSvcIP >> 8), byte(a.nextSvcIP)})
			if !used[ip] {
				v4 = ip
				break
			}
		}
		if !v4.IsValid() {
			return nil, fmt.Errorf("service address pool exhausted")
		}
	}
	return []string{v4.String(), tsaddr.Tailscale4To6(v4).String()}, nil
}

func (a *apiServer) handleDeleteService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	a.mu.Lock()
	_, ok := a.services[name]
	delete(a.services, name)
	a.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "service not found")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// serviceHostJSON is one device hosting a service.
type serviceHostJSON struct {
	StableNodeID  string `json:"stableNodeID"`
	Hostname      string `json:"hostname"`
	ApprovalLevel string `json:"approvalLevel"`
	Configured    bool   `json:"configured"`
}

type approvalJSON struct {
	Approved     bool `json:"approved"`
	AutoApproved bool `json:"autoApproved"`
}

// notifying runs a.changed after h.
func (a *apiServer) notifying(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h(w, r)
		a.mu.Lock()
		changed := a.changed
		a.mu.Unlock()
		if changed != nil {
			changed()
		}
	}
}

// advertise records that hostname (a node with tags) advertises exactly the Services named in
// services, and returns the addresses of those of them the API knows and approves for it:
// explicit approval, else a tag shared with the Service (approvalLocked). A host entry that only
// advertising created is removed when the advertisement ends.
func (a *apiServer) advertise(hostname string, tags, services []string) map[string][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, hs := range a.hosts {
		if h := hs[hostname]; h != nil && h.advertised && !slices.Contains(services, name) {
			h.advertised = false
			if !h.configured && h.approval == "" {
				delete(hs, hostname)
			}
		}
	}
	var out map[string][]string
	for _, name := range services {
		hs := a.hosts[name]
		if hs == nil {
			hs = map[string]*serviceHost{}
			a.hosts[name] = hs
		}
		h := hs[hostname]
		if h == nil {
			h = &serviceHost{}
			hs[hostname] = h
		}
		h.advertised = true
		svc, ok := a.services[name]
		if !ok || len(svc.Addrs) == 0 || a.approvalLocked(svc, h, tags) == approvalNone {
			continue
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[name] = slices.Clone(svc.Addrs)
	}
	return out
}

// setHost records that hostname advertises (or stops advertising) service.
func (a *apiServer) setHost(service, hostname string, hosting bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := a.hosts[service]
	if hs == nil {
		hs = map[string]*serviceHost{}
		a.hosts[service] = hs
	}
	h := hs[hostname]
	if h == nil {
		h = &serviceHost{}
		hs[hostname] = h
	}
	h.configured = hosting
}

// approvalLocked is the effective approval level of a host: explicit
// approval wins, otherwise a device sharing a tag with the service is
// auto-approved (a stand-in for autoApprovers in the policy file).
func (a *apiServer) approvalLocked(svc *apiService, h *serviceHost, tags []string) string {
	if h.approval != "" {
		return h.approval
	}
	if svc != nil {
		for _, t := range tags {
			if slices.Contains(svc.Tags, t) {
				return approvalAuto
			}
		}
	}
	return approvalNone
}

func (a *apiServer) handleServiceHosts(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	nodes := a.allNodes()
	a.mu.Lock()
	svc, ok := a.services[name]
	if !ok {
		a.mu.Unlock()
		writeAPIError(w, http.StatusNotFound, "service not found")
		return
	}
	out := []serviceHostJSON{}
	for _, n := range nodes {
		hostname := n.node.Hostinfo.Hostname()
		h := a.hosts[name][hostname]
		if h == nil {
			continue
		}
		out = append(out, serviceHostJSON{
			StableNodeID:  string(n.node.StableID),
			Hostname:      hostname,
			ApprovalLevel: a.approvalLocked(svc, h, n.node.Tags),
			Configured:    h.configured || h.advertised,
		})
	}
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string][]serviceHostJSON{"devices": out})
}

func (a *apiServer) handleGetApproval(w http.ResponseWriter, r *http.Request) {
	a.approval(w, r, nil)
}

func (a *apiServer) handleSetApproval(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Approved *bool `json:"approved"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || body.Approved == nil {
		writeAPIError(w, http.StatusBadRequest, `body must be {"approved": true|false}`)
		return
	}
	a.approval(w, r, body.Approved)
}

func (a *apiServer) approval(w http.ResponseWriter, r *http.Request, set *bool) {
	name := r.PathValue("name")
	n, ok := a.findNode(r.PathValue("deviceId"))
	if !ok {
		writeAPIError(w, http.StatusNotFound, "device not found")
		return
	}
	hostname := n.node.Hostinfo.Hostname()
	a.mu.Lock()
	defer a.mu.Unlock()
	svc, ok := a.services[name]
	if !ok {
		writeAPIError(w, http.StatusNotFound, "service not found")
		return
	}
	hs := a.hosts[name]
	if hs == nil {
		hs = map[string]*serviceHost{}
		a.hosts[name] = hs
	}
	h := hs[hostname]
	if h == nil {
		h = &serviceHost{}
		if set != nil {
			hs[hostname] = h
		}
	}
	if set != nil {
		h.approval = approvalNone
		if *set {
			h.approval = approvalManual
		}
	}
	lvl := a.approvalLocked(svc, h, n.node.Tags)
	writeJSON(w, http.StatusOK, approvalJSON{Approved: lvl != approvalNone, AutoApproved: lvl == approvalAuto})
}
