package tailnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	tsclient "tailscale.com/client/tailscale/v2"
)

// DefaultBaseURL is the Tailscale API.
const DefaultBaseURL = "https://api.tailscale.com"

// defaultUserAgent identifies the gateway to the API.
const defaultUserAgent = "tailscale-gateway"

// maxResponseBody bounds a decoded raw response.
const maxResponseBody = 32 << 20

// ClientOptions configures a Client.
type ClientOptions struct {
	// Tailnet is the tailnet's name in the API; "" or "-" selects the credentials' own.
	Tailnet string
	// BaseURL overrides DefaultBaseURL.
	BaseURL string
	// Credentials authenticate the client.
	Credentials Credentials
	// Transport tunes rate limiting and retries.
	Transport TransportOptions
	// UserAgent defaults to "tailscale-gateway".
	UserAgent string
}

// Client is the API for one tailnet, on tailscale.com/client/tailscale/v2 and a Transport.
type Client struct {
	tailnet string
	base    *url.URL
	ts      *tsclient.Client
	http    *http.Client // authenticated; shared with ts
	tr      *Transport
	red     *redactor
	agent   string
}

var _ API = (*Client)(nil)

// NewClient returns a Client. It makes no request.
func NewClient(opts ClientOptions) (*Client, error) {
	if err := opts.Credentials.Validate(); err != nil {
		return nil, fmt.Errorf("tailnet client: %w", err)
	}
	rawBase := opts.BaseURL
	if rawBase == "" {
		rawBase = DefaultBaseURL
	}
	base, err := url.Parse(strings.TrimSuffix(rawBase, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("tailnet client: invalid API base URL %q", rawBase)
	}
	if base.User != nil {
		return nil, errors.New("tailnet client: API base URL must not contain user info")
	}
	tailnet := opts.Tailnet
	if tailnet == "" {
		tailnet = "-"
	}
	agent := opts.UserAgent
	if agent == "" {
		agent = defaultUserAgent
	}

	red := newRedactor(opts.Credentials.secrets()...)
	// newTransport applies the defaults; applying them twice would turn MaxRetries -1 (none)
	// into the default.
	tr := newTransport(opts.Transport, red)
	plain := &http.Client{Transport: tr, Timeout: tr.opts.MaxElapsed + 30*time.Second}
	authed := authFor(opts.Credentials).HTTPClient(plain, base.String())

	return &Client{
		tailnet: tailnet,
		base:    base,
		ts:      &tsclient.Client{BaseURL: base, UserAgent: agent, Tailnet: tailnet, HTTP: authed},
		http:    authed,
		tr:      tr,
		red:     red,
		agent:   agent,
	}, nil
}

// Stats returns the counters of the client's Transport.
func (c *Client) Stats() TransportStats { return c.tr.Stats() }

// Devices implements API.
func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	ds, err := c.ts.Devices().List(ctx, tsclient.WithFields(tsclient.IncludeFieldsAll))
	if err != nil {
		return nil, c.fail("list devices", err)
	}
	out := make([]Device, 0, len(ds))
	for _, d := range ds {
		out = append(out, deviceFromAPI(d))
	}
	return out, nil
}

// Device implements API.
func (c *Client) Device(ctx context.Context, id string) (Device, error) {
	d, err := c.ts.Devices().GetWithAllFields(ctx, id)
	if err != nil {
		return Device{}, c.fail("get device "+id, err)
	}
	return deviceFromAPI(*d), nil
}

// Services implements API.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	ss, err := c.ts.Services().List(ctx)
	if err != nil {
		return nil, c.fail("list services", err)
	}
	out := make([]Service, 0, len(ss))
	for _, s := range ss {
		out = append(out, serviceFromAPI(s))
	}
	return out, nil
}

// Service implements API.
func (c *Client) Service(ctx context.Context, name string) (Service, error) {
	s, err := c.ts.Services().Get(ctx, name)
	if err != nil {
		return Service{}, c.fail("get service "+name, err)
	}
	return serviceFromAPI(*s), nil
}

// CreateOrUpdateService implements API.
func (c *Client) CreateOrUpdateService(ctx context.Context, svc Service) error {
	return c.fail("put service "+svc.Name, c.ts.Services().CreateOrUpdate(ctx, serviceToAPI(svc)))
}

// DeleteService implements API.
func (c *Client) DeleteService(ctx context.Context, name string) error {
	err := c.fail("delete service "+name, c.ts.Services().Delete(ctx, name))
	if IsNotFound(err) {
		return nil
	}
	return err
}

// ServiceHosts implements API with GET /api/v2/tailnet/{tailnet}/services/{name}/devices, which
// the library lacks. Its answer is a list of {"stableNodeID", "approvalLevel", "configured"}
// under "hosts" (as third-party clients of the published API read it) or under "devices"
// (as test/tailnetsim serves it); both are accepted.
func (c *Client) ServiceHosts(ctx context.Context, name string) ([]ServiceHost, error) {
	var resp struct {
		Hosts   []serviceHostJSON `json:"hosts"`
		Devices []serviceHostJSON `json:"devices"`
	}
	if err := c.doJSON(ctx, http.MethodGet, nil, &resp, "services", name, "devices"); err != nil {
		return nil, c.fail("list hosts of service "+name, err)
	}
	out := make([]ServiceHost, 0, len(resp.Hosts)+len(resp.Devices))
	for _, h := range append(resp.Hosts, resp.Devices...) {
		out = append(out, h.toHost())
	}
	return out, nil
}

// ApproveServiceHost implements API with
// POST /api/v2/tailnet/{tailnet}/services/{name}/device/{nodeID}/approved {"approved": bool}.
func (c *Client) ApproveServiceHost(ctx context.Context, name, nodeID string, approved bool) error {
	body := map[string]bool{"approved": approved}
	// Setting approval is idempotent, so the POST may be retried.
	err := c.doJSON(withRetryable(ctx), http.MethodPost, body, nil, "services", name, "device", nodeID, "approved")
	return c.fail(fmt.Sprintf("set approval of %s for service %s", nodeID, name), err)
}

// CreateAuthKey implements API. The request is not repeated after errors that might mean the
// key was created, only after 429.
func (c *Client) CreateAuthKey(ctx context.Context, opts AuthKeyOptions) (AuthKey, error) {
	var req tsclient.CreateKeyRequest
	req.Capabilities.Devices.Create.Tags = opts.Tags
	req.Capabilities.Devices.Create.Ephemeral = opts.Ephemeral
	req.Capabilities.Devices.Create.Preauthorized = opts.Preauthorized
	req.Capabilities.Devices.Create.Reusable = opts.Reusable
	req.ExpirySeconds = int64(opts.Expiry / time.Second)
	req.Description = opts.Description
	k, err := c.ts.Keys().CreateAuthKey(ctx, req)
	if err != nil {
		return AuthKey{}, c.fail("create auth key", err)
	}
	c.red.learn(k.Key) // never echo it in a later error
	return AuthKey{ID: k.ID, Key: k.Key, Expires: k.Expires}, nil
}

// AuthKeyInfo implements API.
func (c *Client) AuthKeyInfo(ctx context.Context, id string) (AuthKeyInfo, error) {
	k, err := c.ts.Keys().Get(ctx, id)
	if err != nil {
		return AuthKeyInfo{}, c.fail("get auth key "+id, err)
	}
	return AuthKeyInfo{ID: k.ID, Tags: k.Capabilities.Devices.Create.Tags, Created: k.Created, Expires: k.Expires,
		Revoked: k.Revoked, Invalid: k.Invalid}, nil
}

// DeleteAuthKey implements API.
func (c *Client) DeleteAuthKey(ctx context.Context, id string) error {
	err := c.fail("delete auth key "+id, c.ts.Keys().Delete(ctx, id))
	if IsNotFound(err) {
		return nil
	}
	return err
}

// DeleteDevice implements API (DELETE /api/v2/device/{deviceId}).
func (c *Client) DeleteDevice(ctx context.Context, id string) error {
	err := c.fail("delete device "+id, c.ts.Devices().Delete(ctx, id))
	if IsNotFound(err) {
		return nil
	}
	return err
}

// doJSON sends a request to /api/v2/tailnet/{tailnet}/{path...} with the authenticated client.
func (c *Client) doJSON(ctx context.Context, method string, in, out any, path ...string) error {
	elems := []string{"api", "v2", "tailnet", url.PathEscape(c.tailnet)}
	for _, p := range path {
		elems = append(elems, url.PathEscape(p))
	}
	u := c.base.JoinPath(elems...)

	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", c.agent)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode >= 300 {
		return &Error{StatusCode: resp.StatusCode, Reason: reasonForStatus(resp.StatusCode), Message: "unexpected answer " + resp.Status}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody)).Decode(out); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return nil
}

// fail turns any error into an *Error for op, scrubbed, wrapping nothing that might carry a
// credential.
func (c *Client) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		out := *e
		out.Op = op
		out.Message = c.red.redact(out.Message)
		return &out
	}
	return &Error{Op: op, Reason: ReasonAPIUnavailable, Message: c.red.redact(err.Error()), cause: contextCause(err)}
}
