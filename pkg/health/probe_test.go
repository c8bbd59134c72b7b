package health

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// probeOnce probes addr with c through a direct dialer.
func probeOnce(t *testing.T, addr string, c Check) error {
	t.Helper()
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	return New(Options{}).Probe(context.Background(), Target{Key: "k", Address: addr, Check: c})
}

// wantProbe checks err against wantErr: "" means healthy, otherwise a substring of the error.
func wantProbe(t *testing.T, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("probe failed: %v", err)
	case wantErr != "" && err == nil:
		t.Errorf("probe succeeded, want error containing %q", wantErr)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("probe error %q, want it to contain %q", err, wantErr)
	}
}

// requestLog records what an HTTP handler saw.
type requestLog struct {
	mu   sync.Mutex
	seen seen
}

// seen is what one request carried.
type seen struct{ uri, host, auth, agent, sni string }

func (l *requestLog) handler(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = seen{uri: r.URL.RequestURI(), host: r.Host, auth: r.Header.Get("Authorization"), agent: r.UserAgent()}
		if r.TLS != nil {
			l.seen.sni = r.TLS.ServerName
		}
		l.mu.Unlock()
		if code == http.StatusFound {
			http.Redirect(w, r, "/elsewhere", code)
			return
		}
		w.WriteHeader(code)
	}
}

func (l *requestLog) get() seen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen
}

func TestProbeHTTP(t *testing.T) {
	tests := []struct {
		name    string
		code    int
		check   Check
		wantErr string
		want    seen // fields compared when non-empty
	}{
		{name: "200 is healthy by default", code: 200, want: seen{uri: "/", agent: userAgent}},
		{name: "500 is unhealthy", code: 500, wantErr: "HTTP status 500, want 200"},
		{name: "redirect is not followed", code: 302, wantErr: "HTTP status 302, want 200"},
		{name: "expected status honoured", code: 204, check: Check{ExpectedStatus: 204}},
		{name: "other status than expected", code: 200, check: Check{ExpectedStatus: 204}, wantErr: "HTTP status 200, want 204"},
		{
			name: "path, query and headers are sent", code: 200,
			check: Check{Path: "/api/v1/health?deep=1", Headers: map[string]string{"Authorization": "Bearer t0k", "User-Agent": "custom"}},
			want:  seen{uri: "/api/v1/health?deep=1", auth: "Bearer t0k", agent: "custom"},
		},
		{name: "server name is the host", code: 200, check: Check{ServerName: "api.example.ts.net"}, want: seen{host: "api.example.ts.net"}},
		{
			name: "host header wins over server name", code: 200,
			check: Check{ServerName: "api.example.ts.net", Headers: map[string]string{"host": "vhost.internal"}},
			want:  seen{host: "vhost.internal"},
		},
		{name: "invalid path", code: 200, check: Check{Path: "http://elsewhere/"}, wantErr: "invalid health check path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log requestLog
			srv := httptest.NewServer(log.handler(tc.code))
			defer srv.Close()
			tc.check.Type = ProtocolHTTP
			wantProbe(t, probeOnce(t, srv.Listener.Addr().String(), tc.check), tc.wantErr)
			got := log.get()
			for field, pair := range map[string][2]string{
				"uri": {got.uri, tc.want.uri}, "host": {got.host, tc.want.host},
				"authorization": {got.auth, tc.want.auth}, "user agent": {got.agent, tc.want.agent},
			} {
				if pair[1] != "" && pair[0] != pair[1] {
					t.Errorf("server saw %s %q, want %q", field, pair[0], pair[1])
				}
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		wantProbe(t, probeOnce(t, closedAddr(t), Check{Type: ProtocolHTTP}), "connection refused")
	})
	t.Run("the prober closes first", testProbeHTTPClosesFirst)
}

// testProbeHTTPClosesFirst: the probe does not ask the server to close (no "Connection: close")
// and closes the connection itself after the status, while the server keeps it open; the
// connection's TIME_WAIT is then the prober's (see httpGet).
func testProbeHTTPClosesFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	result := make(chan error, 1)
	go func() {
		result <- func() error {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			req, err := http.ReadRequest(br)
			if err != nil {
				return err
			}
			if req.Close {
				return fmt.Errorf("the probe asked the server to close: Connection %q", req.Header.Get("Connection"))
			}
			if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return err
			}
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				return fmt.Errorf("after the response: read %d bytes, %v; want the prober's EOF", n, err)
			}
			return nil
		}()
	}()
	wantProbe(t, probeOnce(t, ln.Addr().String(), Check{Type: ProtocolHTTP}), "")
	if err := <-result; err != nil {
		t.Error(err)
	}
}

func TestProbeHTTPS(t *testing.T) {
	var log requestLog
	srv := newHTTPSServer(log.handler(http.StatusOK)) // self-signed
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolHTTPS}), "")
	if got := log.get().sni; got != "" {
		t.Errorf("SNI %q sent for an IP address, want none", got)
	}
	wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolHTTPS, ServerName: "api.example.ts.net"}), "")
	if got := log.get(); got.sni != "api.example.ts.net" || got.host != "api.example.ts.net" {
		t.Errorf("SNI %q, Host %q, want api.example.ts.net for both", got.sni, got.host)
	}

	bad := newHTTPSServer(log.handler(http.StatusServiceUnavailable))
	defer bad.Close()
	wantProbe(t, probeOnce(t, bad.Listener.Addr().String(), Check{Type: ProtocolHTTPS}), "HTTP status 503, want 200")

	plain := httptest.NewServer(log.handler(http.StatusOK))
	defer plain.Close()
	wantProbe(t, probeOnce(t, plain.Listener.Addr().String(), Check{Type: ProtocolHTTPS}), "tls handshake")
}

func TestProbeTCP(t *testing.T) {
	wantProbe(t, probeOnce(t, tcpServer(t), Check{Type: ProtocolTCP}), "")
	wantProbe(t, probeOnce(t, closedAddr(t), Check{Type: ProtocolTCP}), "connection refused")
}

func TestProbeTLS(t *testing.T) {
	srv := newTLSServer(t)
	wantProbe(t, probeOnce(t, srv.Addr, Check{Type: ProtocolTLS, ServerName: "db.example.ts.net"}), "")
	select {
	case sni := <-srv.sni:
		if sni != "db.example.ts.net" {
			t.Errorf("SNI %q, want db.example.ts.net", sni)
		}
	case <-time.After(5 * time.Second):
		t.Error("server saw no ClientHello")
	}
	// A server that hangs up instead of handshaking.
	wantProbe(t, probeOnce(t, tcpServer(t), Check{Type: ProtocolTLS}), "tls handshake")
	wantProbe(t, probeOnce(t, closedAddr(t), Check{Type: ProtocolTLS}), "connection refused")
}

func TestProbeUDP(t *testing.T) {
	wantProbe(t, probeOnce(t, udpServer(t, true), Check{Type: ProtocolUDP}), "")
	wantProbe(t, probeOnce(t, udpServer(t, false), Check{Type: ProtocolUDP, Timeout: 100 * time.Millisecond}), "no reply")
	// Nothing listening: the kernel answers ICMP port unreachable.
	wantProbe(t, probeOnce(t, closedUDPAddr(t), Check{Type: ProtocolUDP}), "connection refused")
}

func TestProbeGRPC(t *testing.T) {
	hs := health.NewServer() // service "" is SERVING
	hs.SetServingStatus("svc.Up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("svc.Down", healthpb.HealthCheckResponse_NOT_SERVING)
	addr := grpcServer(t, hs)

	for _, tc := range []struct{ path, wantErr string }{
		{"", ""},
		{"/", ""},
		{"/grpc.health.v1.Health/Check", ""},
		{"/svc.Up", ""},
		{"/svc.Down", `health service "svc.Down" is NOT_SERVING`},
		{"/svc.Missing", `health service "svc.Missing" unknown to the server`},
	} {
		t.Run("path "+tc.path, func(t *testing.T) {
			wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC, Path: tc.path}), tc.wantErr)
		})
	}

	t.Run("flip serving status", func(t *testing.T) {
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC}), `health service "" is NOT_SERVING`)
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC}), "")
	})
	t.Run("no health service", func(t *testing.T) {
		wantProbe(t, probeOnce(t, grpcServer(t, nil), Check{Type: ProtocolGRPC}), "does not implement grpc.health.v1.Health")
	})
	t.Run("connection refused", func(t *testing.T) {
		wantProbe(t, probeOnce(t, closedAddr(t), Check{Type: ProtocolGRPC}), "connection refused")
	})
	t.Run("headers as metadata and server name as authority", func(t *testing.T) {
		var mu sync.Mutex
		var auth, authority []string
		record := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			auth, authority = md.Get("authorization"), md.Get(":authority")
			mu.Unlock()
			return h(ctx, req)
		})
		addr := grpcServer(t, health.NewServer(), record)
		check := Check{Type: ProtocolGRPC, ServerName: "grpc.example.ts.net", Headers: map[string]string{"Authorization": "Bearer t0k"}}
		wantProbe(t, probeOnce(t, addr, check), "")
		mu.Lock()
		if len(auth) != 1 || auth[0] != "Bearer t0k" {
			t.Errorf("authorization metadata %q, want [Bearer t0k]", auth)
		}
		if len(authority) != 1 || authority[0] != "grpc.example.ts.net" {
			t.Errorf("authority %q, want [grpc.example.ts.net]", authority)
		}
		mu.Unlock()

		check.Headers = map[string]string{"Host": "vhost.internal"}
		wantProbe(t, probeOnce(t, addr, check), "")
		mu.Lock()
		defer mu.Unlock()
		if len(authority) != 1 || authority[0] != "vhost.internal" {
			t.Errorf("authority %q with a Host header, want [vhost.internal]", authority)
		}
	})
}

// TestProbeTimeout checks that every protocol gives up after Timeout against a server that
// never answers.
func TestProbeTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	silentTCP, silentUDP := silentTCPServer(t), udpServer(t, false)
	for _, typ := range []Protocol{ProtocolHTTP, ProtocolHTTPS, ProtocolTLS, ProtocolGRPC, ProtocolUDP} {
		t.Run(string(typ), func(t *testing.T) {
			addr := silentTCP
			if typ == ProtocolUDP {
				addr = silentUDP
			}
			start := time.Now()
			err := probeOnce(t, addr, Check{Type: typ, Timeout: timeout})
			elapsed := time.Since(start)
			wantProbe(t, err, "timed out after 150ms")
			// Generous bound: the point is that the probe ends, not how promptly on a busy machine.
			if elapsed > timeout+5*time.Second {
				t.Errorf("probe took %s with a timeout of %s", elapsed, timeout)
			}
		})
	}
}

// TestProbeErrorsRedactHeaders checks that header values reflected by a server never reach
// the error.
func TestProbeErrorsRedactHeaders(t *testing.T) {
	const token, apiKey = "s3cr3t-t0ken-value", `key"with"quotes`
	headers := map[string]string{"Authorization": "Bearer " + token, "X-Api-Key": apiKey, "X-Short": "abc"}
	secrets := []string{token, apiKey, `key\"with\"quotes`}

	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("probe succeeded, want an error")
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q contains header value %q", err, s)
			}
		}
		if !strings.Contains(err.Error(), "[redacted]") {
			t.Errorf("error %q: want the reflected values replaced by [redacted]", err)
		}
	}
	t.Run("HTTP status line", func(t *testing.T) {
		check(t, probeOnce(t, reflectingServer(t, false), Check{Type: ProtocolHTTP, Headers: headers}))
	})
	t.Run("HTTP header line", func(t *testing.T) {
		check(t, probeOnce(t, reflectingServer(t, true), Check{Type: ProtocolHTTP, Headers: headers}))
	})
	t.Run("gRPC", func(t *testing.T) {
		reject := grpc.UnaryInterceptor(func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			return nil, status.Errorf(codes.PermissionDenied, "credentials %q and %q rejected", md.Get("authorization"), md.Get("x-api-key"))
		})
		check(t, probeOnce(t, grpcServer(t, health.NewServer(), reject), Check{Type: ProtocolGRPC, Headers: headers}))
	})
}

func TestProbeUnsupportedType(t *testing.T) {
	wantProbe(t, probeOnce(t, "127.0.0.1:1", Check{Type: "ICMP"}), `unsupported health check type "ICMP"`)
}

func TestProbeTypeIsCaseInsensitive(t *testing.T) {
	wantProbe(t, probeOnce(t, tcpServer(t), Check{Type: "tcp"}), "")
	wantProbe(t, probeOnce(t, grpcServer(t, health.NewServer()), Check{Type: "GRPC"}), "")
}

func TestProbeCancellation(t *testing.T) {
	// A parent context ending mid-probe ends the probe, not only its own timeout.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln := listen(t)
	accepted, stop := make(chan struct{}, 1), make(chan struct{})
	defer close(stop)
	serve(t, ln, func(net.Conn) { accepted <- struct{}{}; <-stop })
	done := make(chan error, 1)
	go func() {
		done <- New(Options{}).Probe(ctx, Target{Address: ln.Addr().String(), Check: Check{Type: ProtocolHTTP, Timeout: time.Hour}})
	}()
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("probe never connected")
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("cancelled probe reported healthy")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("probe did not end after its context was cancelled")
	}
}
