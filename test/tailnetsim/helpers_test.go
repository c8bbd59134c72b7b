package tailnetsim

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	tailscale "tailscale.com/client/tailscale/v2"
)

// quietLogf buffers logs and prints the tail only if the test fails.
func quietLogf(t testing.TB) func(string, ...any) {
	const keep = 3000
	var (
		mu    sync.Mutex
		lines []string
	)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		t.Logf("last %d log lines:\n%s", len(lines), strings.Join(lines, "\n"))
	})
	return func(format string, args ...any) {
		line := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, strings.TrimRight(line, "\n"))
		if len(lines) > keep {
			lines = lines[len(lines)-keep:]
		}
	}
}

// waitFor polls cond every 50ms until it returns nil or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// oauthClient returns a real Tailscale API client using the tailnet's OAuth
// client credentials.
func oauthClient(t testing.TB, tn *Tailnet) *tailscale.Client {
	t.Helper()
	u, err := url.Parse(tn.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	return &tailscale.Client{
		BaseURL: u,
		Auth:    &tailscale.OAuth{ClientID: tn.OAuthClientID(), ClientSecret: tn.OAuthClientSecret()},
		HTTP:    &http.Client{Timeout: 30 * time.Second},
	}
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
