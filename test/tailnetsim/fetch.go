package tailnetsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/churn"
)

// Bounds of Fetch.
const (
	FetchTimeout = 10 * time.Second
	FetchMaxBody = 64 << 10
)

// ErrFetchRequest marks a Fetch that was refused before any request was made (unknown or
// offline device, unusable URL).
var ErrFetchRequest = errors.New("tailnetsim: bad fetch")

// FetchResult is the answer Fetch got.
type FetchResult struct {
	Device string `json:"device"`
	URL    string `json:"url"`
	Status int    `json:"status"`
	// Body is the response body, at most FetchMaxBody bytes of it.
	Body      string `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Fetch makes the HTTP GET request rawURL from the tsnet node of the device hostname: names
// resolve with the device's MagicDNS (peers and Tailscale Services) and the connection goes
// over the tailnet, as a curl on that device would. It follows no redirects and is bounded by
// FetchTimeout and FetchMaxBody. Only http URLs are accepted.
func (t *Tailnet) Fetch(ctx context.Context, hostname, rawURL string) (FetchResult, error) {
	res := FetchResult{Device: hostname, URL: rawURL}
	d, err := t.device(hostname)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrFetchRequest, err)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return res, fmt.Errorf("%w: url %q: want http://host[:port]/path", ErrFetchRequest, rawURL)
	}
	d.mu.Lock()
	run := d.run
	d.mu.Unlock()
	if run == nil {
		return res, fmt.Errorf("%w: device %s is offline", ErrFetchRequest, hostname)
	}
	hc := &http.Client{
		Timeout:       FetchTimeout,
		Transport:     &http.Transport{DialContext: run.srv.Dial, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrFetchRequest, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return res, fmt.Errorf("tailnetsim: %s: %w", hostname, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, FetchMaxBody+1))
	if err != nil {
		return res, fmt.Errorf("tailnetsim: %s: reading the response: %w", hostname, err)
	}
	if len(body) > FetchMaxBody {
		body, res.Truncated = body[:FetchMaxBody], true
	}
	res.Status, res.Body = resp.StatusCode, string(body)
	return res, nil
}

// MaxLoadDuration bounds Load.
const MaxLoadDuration = 5 * time.Minute

// Load opens rate new connections per second from the tsnet node of the device hostname to
// rawURL's host and port (names resolved as in Fetch), one GET each, for duration
// (churn.RunPaced), and returns what happened to them.
func (t *Tailnet) Load(ctx context.Context, hostname, rawURL string, rate int, duration time.Duration) (churn.Paced, error) {
	d, err := t.device(hostname)
	if err != nil {
		return churn.Paced{}, fmt.Errorf("%w: %w", ErrFetchRequest, err)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Hostname() == "" {
		return churn.Paced{}, fmt.Errorf("%w: url %q: want http://host[:port]/", ErrFetchRequest, rawURL)
	}
	if rate < 1 || rate > 1000 || duration <= 0 || duration > MaxLoadDuration {
		return churn.Paced{}, fmt.Errorf("%w: rate %d (1-1000), duration %v (up to %v)", ErrFetchRequest, rate, duration, MaxLoadDuration)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	d.mu.Lock()
	run := d.run
	d.mu.Unlock()
	if run == nil {
		return churn.Paced{}, fmt.Errorf("%w: device %s is offline", ErrFetchRequest, hostname)
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	return churn.RunPaced(ctx, rate, duration, func(ctx context.Context) (net.Conn, error) {
		return run.srv.Dial(ctx, "tcp", addr)
	}), nil
}
