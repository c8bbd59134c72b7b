package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// handshakeServer completes TLS handshakes with config (plus a self-signed certificate) and
// reports each completed one as "<version> resumed=<bool>".
func handshakeServer(t *testing.T, config *tls.Config) (addr string, seen <-chan string) {
	ch := make(chan string, 10)
	config.Certificates = []tls.Certificate{selfSignedCert(t)}
	ln := listen(t)
	serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, config)
		_ = tc.SetDeadline(time.Now().Add(waitTimeout))
		if tc.Handshake() != nil {
			return
		}
		st := tc.ConnectionState()
		ch <- fmt.Sprintf("%s resumed=%t", tls.VersionName(st.Version), st.DidResume)
		_, _ = tc.Read(make([]byte, 1)) // until the prober hangs up
	})
	return ln.Addr().String(), ch
}

// nextHandshake waits for the next handshake a handshakeServer completes. (It may complete
// after the probe: a TLS client is done with the handshake before its last message arrives.)
func nextHandshake(t *testing.T, seen <-chan string) string {
	t.Helper()
	select {
	case s := <-seen:
		return s
	case <-time.After(waitTimeout):
		t.Fatal("server completed no handshake")
		return ""
	}
}

// TestTLSProbesResumeTLS12 checks that scheduled TLS probes offer TLS 1.2 and resume their
// session, while one-off probes offer TLS 1.3.
func TestTLSProbesResumeTLS12(t *testing.T) {
	addr, seen := handshakeServer(t, &tls.Config{})
	tg := Target{Key: "a", Address: addr, Check: Check{Type: ProtocolTLS, Interval: time.Hour}}
	p := New(Options{})
	p.Update([]Target{tg})
	for i, want := range []string{"TLS 1.2 resumed=false", "TLS 1.2 resumed=true", "TLS 1.2 resumed=true"} {
		if r := probeKey(t, p, "a"); r.Error != "" {
			t.Fatal(r.Error)
		}
		if got := nextHandshake(t, seen); got != want {
			t.Errorf("probe %d: server saw %s, want %s", i+1, got, want)
		}
	}
	if err := p.Probe(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	if got, want := nextHandshake(t, seen), "TLS 1.3 resumed=false"; got != want {
		t.Errorf("one-off probe: server saw %s, want %s", got, want)
	}
}

// TestTLSProbesFallBackToTLS13 checks that a server refusing TLS 1.2 is probed with TLS 1.3,
// at once and from then on.
func TestTLSProbesFallBackToTLS13(t *testing.T) {
	addr, seen := handshakeServer(t, &tls.Config{MinVersion: tls.VersionTLS13})
	var dialer countingDialer
	p := New(Options{DialerFor: func(string) Dialer { return &dialer }})
	p.Update([]Target{{Key: "a", Address: addr, Check: Check{Type: ProtocolTLS, Interval: time.Hour}}})
	for i, wantDials := range []int64{2, 1} {
		dials := dialer.all.Load()
		if r := probeKey(t, p, "a"); r.Error != "" {
			t.Fatal(r.Error)
		}
		if got := nextHandshake(t, seen); got != "TLS 1.3 resumed=false" {
			t.Errorf("probe %d: server saw %s, want TLS 1.3", i+1, got)
		}
		if n := dialer.all.Load() - dials; n != wantDials {
			t.Errorf("probe %d dialled %d times, want %d", i+1, n, wantDials)
		}
	}

	// HTTPS probes fall back likewise, and then resume TLS 1.3 sessions.
	var log requestLog
	var resumed []bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.mu.Lock()
		resumed = append(resumed, r.TLS.Version == tls.VersionTLS13 && r.TLS.DidResume)
		log.mu.Unlock()
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.Update([]Target{{Key: "b", Address: srv.Listener.Addr().String(), Check: Check{Type: ProtocolHTTPS, Interval: time.Hour}}})
	dials := dialer.all.Load()
	for range 2 {
		if r := probeKey(t, p, "b"); r.Error != "" {
			t.Fatal(r.Error)
		}
	}
	if n := dialer.all.Load() - dials; n != 3 {
		t.Errorf("two HTTPS probes dialled %d times, want 3", n)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if !slices.Equal(resumed, []bool{false, true}) {
		t.Errorf("TLS 1.3 sessions resumed: %v, want [false true]", resumed)
	}
}

// TestTLSProbeFailureKeepsTLS12 checks that a server failing every handshake is reported as
// such and still offered TLS 1.2.
func TestTLSProbeFailureKeepsTLS12(t *testing.T) {
	var dialer countingDialer
	p := New(Options{DialerFor: func(string) Dialer { return &dialer }})
	p.Update([]Target{{Key: "a", Address: tcpServer(t), Check: Check{Type: ProtocolTLS, Interval: time.Hour}}})
	wantProbe(t, fmt.Errorf("%s", probeKey(t, p, "a").Error), "tls handshake")
	if n := dialer.all.Load(); n != 2 {
		t.Errorf("dialled %d times, want 2 (TLS 1.2, then TLS 1.3)", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.targets["a"].sessions.maxVersion(); v != tls.VersionTLS12 {
		t.Errorf("next probe offers up to %s, want TLS 1.2", tls.VersionName(v))
	}
}
