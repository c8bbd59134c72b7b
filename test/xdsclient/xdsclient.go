// Package xdsclient is a small ADS client for tests, state-of-the-world and incremental: it dials
// an xDS server (plaintext or TLS), subscribes to one resource type per stream, ACKs every
// response and hands the decoded resources to the test. It reads Envoy Gateway's xDS in test/envoygateway and is meant for
// the project's own EDS server too.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resources tests read.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// Options configure Dial.
type Options struct {
	// TLS, when set, is the client's TLS configuration (with a client certificate for mTLS);
	// nil dials in plaintext.
	TLS *tls.Config
	// NodeID and NodeCluster identify the client as an Envoy node. Envoy Gateway keys its snapshots
	// by NodeCluster ("<gateway namespace>/<gateway name>"); NodeID must be unique per connection
	// to it. Defaults: "xdsclient" and "xdsclient".
	NodeID, NodeCluster string
	// MaxRecvMsgSize bounds one response; default 64 MiB.
	MaxRecvMsgSize int
	// Dialer, when set, opens the connections (e.g. inside another network namespace).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// Client is a connection to an xDS server; each Watch is its own ADS stream on it.
type Client struct {
	conn *grpc.ClientConn
	node *corev3.Node
}

// Dial connects to addr (host:port). It does not block: a server that is not listening yet makes
// the first Watch or Fetch wait (within its context) until it is.
func Dial(addr string, opts Options) (*Client, error) {
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	size := opts.MaxRecvMsgSize
	if size == 0 {
		size = 64 << 20
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(size))}
	if opts.Dialer != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(opts.Dialer))
	}
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dialing xDS server %s: %w", addr, err)
	}
	node := &corev3.Node{Id: opts.NodeID, Cluster: opts.NodeCluster}
	if node.Id == "" {
		node.Id = "xdsclient"
	}
	if node.Cluster == "" {
		node.Cluster = "xdsclient"
	}
	return &Client{conn: conn, node: node}, nil
}

// Close closes the connection and every stream on it.
func (c *Client) Close() error { return c.conn.Close() }

// Response is one DiscoveryResponse with its resources decoded.
type Response struct {
	VersionInfo string
	TypeURL     string
	Nonce       string
	// Removed are the names a delta response removed (DeltaWatch only).
	Removed []string
	// Resources are the decoded resources in the order the server sent them. Nested Any fields
	// (typed configs) stay packed; unpack them with anypb when a test needs them.
	Resources []proto.Message
}

// Clusters returns the Cluster resources of r.
func (r *Response) Clusters() []*clusterv3.Cluster { return only[*clusterv3.Cluster](r) }

// LoadAssignments returns the ClusterLoadAssignment resources of r.
func (r *Response) LoadAssignments() []*endpointv3.ClusterLoadAssignment {
	return only[*endpointv3.ClusterLoadAssignment](r)
}

// Listeners returns the Listener resources of r.
func (r *Response) Listeners() []*listenerv3.Listener { return only[*listenerv3.Listener](r) }

// RouteConfigurations returns the RouteConfiguration resources of r.
func (r *Response) RouteConfigurations() []*routev3.RouteConfiguration {
	return only[*routev3.RouteConfiguration](r)
}

// Cluster returns the cluster called name, or nil.
func (r *Response) Cluster(name string) *clusterv3.Cluster {
	for _, c := range r.Clusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// LoadAssignment returns the load assignment of the cluster (or EDS service) called name, or nil.
func (r *Response) LoadAssignment(name string) *endpointv3.ClusterLoadAssignment {
	for _, la := range r.LoadAssignments() {
		if la.GetClusterName() == name {
			return la
		}
	}
	return nil
}

// Names returns the names of the resources of r.
func (r *Response) Names() []string {
	var names []string
	for _, m := range r.Resources {
		if n, ok := m.(interface{ GetName() string }); ok {
			names = append(names, n.GetName())
		} else if la, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
			names = append(names, la.GetClusterName())
		}
	}
	return names
}

func only[T proto.Message](r *Response) []T {
	var out []T
	for _, m := range r.Resources {
		if v, ok := m.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Watch is one ADS stream subscribed to one resource type. Responses are ACKed as they arrive.
type Watch struct {
	typeURL string
	cancel  context.CancelFunc
	updates chan *Response

	mu   sync.Mutex
	err  error
	last *Response
	done chan struct{}
}

// Watch opens a state-of-the-world ADS stream and subscribes to typeURL; names empty means every
// resource of the type (a wildcard subscription). The stream lives until ctx ends or Stop is
// called.
//
// A server built on go-control-plane's snapshot cache in ADS mode (Envoy Gateway's, for one)
// answers a named SotW subscription only when it names every resource of the type in the
// snapshot; subscribe by wildcard there, or use DeltaWatch as Envoy Gateway's Envoys do.
func (c *Client) Watch(ctx context.Context, typeURL string, names ...string) (*Watch, error) {
	return c.watchSotW(ctx, typeURL, names, func(ctx context.Context) (sotwStream, error) {
		return discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	})
}

// EndpointsWatch subscribes to load assignments over the EndpointDiscoveryService, the stream
// Envoy opens for an EDS config source of api_type GRPC (rather than ADS).
func (c *Client) EndpointsWatch(ctx context.Context, names ...string) (*Watch, error) {
	return c.watchSotW(ctx, EndpointType, names, func(ctx context.Context) (sotwStream, error) {
		return endpointservice.NewEndpointDiscoveryServiceClient(c.conn).StreamEndpoints(ctx, grpc.WaitForReady(true))
	})
}

// sotwStream is a state-of-the-world discovery stream: ADS or one of the per-type services.
type sotwStream interface {
	Send(*discoveryv3.DiscoveryRequest) error
	Recv() (*discoveryv3.DiscoveryResponse, error)
}

func (c *Client) watchSotW(ctx context.Context, typeURL string, names []string, open func(context.Context) (sotwStream, error)) (*Watch, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := open(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening a %s stream: %w", typeURL, err)
	}
	req := &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typeURL, ResourceNames: slices.Clone(names)}
	if err := stream.Send(req); err != nil {
		cancel()
		return nil, fmt.Errorf("subscribing to %s: %w", typeURL, err)
	}
	w := &Watch{typeURL: typeURL, cancel: cancel, updates: make(chan *Response, 1), done: make(chan struct{})}
	go w.run(func(last *Response) (*Response, error) {
		resp, err := stream.Recv()
		if err != nil {
			return nil, streamErr(err)
		}
		r, err := decode(resp)
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(),
			ResourceNames: slices.Clone(names), VersionInfo: resp.GetVersionInfo()}
		if err != nil {
			// NACK: keep the previously accepted version, as Envoy would.
			ack.VersionInfo = ""
			if last != nil {
				ack.VersionInfo = last.VersionInfo
			}
			ack.ErrorDetail = status.New(codes.InvalidArgument, err.Error()).Proto()
		}
		if sendErr := stream.Send(ack); sendErr != nil {
			return nil, fmt.Errorf("acknowledging version %q: %w", resp.GetVersionInfo(), sendErr)
		}
		return r, err
	})
	return w, nil
}

// DeltaWatch opens an incremental (delta) ADS stream, as Envoy Gateway's Envoys use, and
// subscribes to names of typeURL (none: a wildcard subscription). Each Response holds the whole
// current state (every resource received and not removed, sorted by name), VersionInfo is the
// response's system_version_info, and Removed lists what that response removed.
func (c *Client) DeltaWatch(ctx context.Context, typeURL string, names ...string) (*Watch, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening a delta ADS stream: %w", err)
	}
	req := &discoveryv3.DeltaDiscoveryRequest{Node: c.node, TypeUrl: typeURL, ResourceNamesSubscribe: slices.Clone(names)}
	if err := stream.Send(req); err != nil {
		cancel()
		return nil, fmt.Errorf("subscribing to %s: %w", typeURL, err)
	}
	w := &Watch{typeURL: typeURL, cancel: cancel, updates: make(chan *Response, 1), done: make(chan struct{})}
	state := map[string]proto.Message{}
	go w.run(func(*Response) (*Response, error) {
		resp, err := stream.Recv()
		if err != nil {
			return nil, streamErr(err)
		}
		next := maps.Clone(state)
		for _, name := range resp.GetRemovedResources() {
			delete(next, name)
		}
		for _, res := range resp.GetResources() {
			m, decodeErr := anypb.UnmarshalNew(res.GetResource(), proto.UnmarshalOptions{})
			if decodeErr != nil {
				err = fmt.Errorf("decoding %s (%s) of version %q: %w", res.GetName(), res.GetResource().GetTypeUrl(), resp.GetSystemVersionInfo(), decodeErr)
				break
			}
			next[res.GetName()] = m
		}
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if err != nil {
			ack.ErrorDetail = status.New(codes.InvalidArgument, err.Error()).Proto()
		}
		if sendErr := stream.Send(ack); sendErr != nil {
			return nil, fmt.Errorf("acknowledging nonce %q: %w", resp.GetNonce(), sendErr)
		}
		if err != nil {
			return nil, err
		}
		state = next
		r := &Response{VersionInfo: resp.GetSystemVersionInfo(), TypeURL: resp.GetTypeUrl(), Nonce: resp.GetNonce(),
			Removed: slices.Clone(resp.GetRemovedResources())}
		for _, name := range slices.Sorted(maps.Keys(state)) {
			r.Resources = append(r.Resources, state[name])
		}
		return r, nil
	})
	return w, nil
}

// run delivers what next returns until it fails.
func (w *Watch) run(next func(last *Response) (*Response, error)) {
	defer close(w.done)
	for {
		r, err := next(w.Latest())
		if err != nil {
			w.fail(err)
			return
		}
		w.mu.Lock()
		w.last = r
		w.mu.Unlock()
		// Keep only the newest response for a reader that is behind.
		select {
		case <-w.updates:
		default:
		}
		w.updates <- r
	}
}

func streamErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("the server closed the stream")
	}
	return err
}

func (w *Watch) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// Err returns why the stream ended, or nil while it runs.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Latest returns the newest response received so far, or nil.
func (w *Watch) Latest() *Response {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Next returns the next response not yet returned by Next or WaitFor; it waits until one arrives,
// the stream fails or ctx ends.
func (w *Watch) Next(ctx context.Context) (*Response, error) {
	select {
	case r := <-w.updates:
		return r, nil
	case <-w.done:
		select {
		case r := <-w.updates:
			return r, nil
		default:
		}
		return nil, fmt.Errorf("%s stream: %w", w.typeURL, w.Err())
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a %s response: %w", w.typeURL, ctx.Err())
	}
}

// WaitFor returns the first response (the newest received, then each later one) for which match
// is true; it fails when the stream fails or ctx ends, saying what the last response held.
func (w *Watch) WaitFor(ctx context.Context, match func(*Response) bool) (*Response, error) {
	if r := w.Latest(); r != nil && match(r) {
		return r, nil
	}
	for {
		r, err := w.Next(ctx)
		if err != nil {
			if last := w.Latest(); last != nil {
				return nil, fmt.Errorf("%w (last response: version %q, resources %v)", err, last.VersionInfo, last.Names())
			}
			return nil, err
		}
		if match(r) {
			return r, nil
		}
	}
}

// WaitForVersion waits for a response whose version is version.
func (w *Watch) WaitForVersion(ctx context.Context, version string) (*Response, error) {
	return w.WaitFor(ctx, func(r *Response) bool { return r.VersionInfo == version })
}

// Stop ends the stream.
func (w *Watch) Stop() {
	w.cancel()
	<-w.done
}

// Fetch subscribes to typeURL (names empty: every resource), returns the first response for which
// match is true (the first response when match is nil) and closes the stream.
func (c *Client) Fetch(ctx context.Context, typeURL string, match func(*Response) bool, names ...string) (*Response, error) {
	w, err := c.Watch(ctx, typeURL, names...)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	if match == nil {
		return w.Next(ctx)
	}
	return w.WaitFor(ctx, match)
}

// FetchClusters returns the clusters of the first CDS response for which match is true (nil: the
// first response).
func (c *Client) FetchClusters(ctx context.Context, match func(*Response) bool) (*Response, error) {
	return c.Fetch(ctx, ClusterType, match)
}

// FetchEndpoints returns the load assignments named (none: all) of the first EDS response for
// which match is true (nil: the first response).
func (c *Client) FetchEndpoints(ctx context.Context, match func(*Response) bool, names ...string) (*Response, error) {
	return c.Fetch(ctx, EndpointType, match, names...)
}

func decode(resp *discoveryv3.DiscoveryResponse) (*Response, error) {
	r := &Response{VersionInfo: resp.GetVersionInfo(), TypeURL: resp.GetTypeUrl(), Nonce: resp.GetNonce()}
	for i, res := range resp.GetResources() {
		m, err := anypb.UnmarshalNew(res, proto.UnmarshalOptions{})
		if err != nil {
			return nil, fmt.Errorf("decoding resource %d (%s) of version %q: %w", i, res.GetTypeUrl(), resp.GetVersionInfo(), err)
		}
		r.Resources = append(r.Resources, m)
	}
	return r, nil
}
