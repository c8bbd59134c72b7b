package health

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Local servers on 127.0.0.1 for probes to talk to.

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// selfSignedCert returns a fresh self-signed ECDSA certificate for "localhost" and 127.0.0.1.
func selfSignedCert(t testing.TB) tls.Certificate {
	t.Helper()
	cert, err := newSelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newSelfSignedCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// newHTTPSServer starts an httptest TLS server (self-signed) whose handshake errors, common
// when probes are cut short at the end of a test, are not logged.
func newHTTPSServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	return srv
}

// listen opens a TCP listener on 127.0.0.1 closed at cleanup.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// serve accepts connections on ln and hands each to handle on its own goroutine; connections
// are closed when handle returns and at cleanup.
func serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			go func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			}()
		}
	}()
}

// tcpServer accepts and closes connections.
func tcpServer(t testing.TB) string {
	ln := listen(t)
	serve(t, ln, func(net.Conn) {})
	return ln.Addr().String()
}

// silentTCPServer accepts connections and never writes; they stay open until cleanup.
func silentTCPServer(t testing.TB) string {
	ln := listen(t)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	serve(t, ln, func(net.Conn) { <-stop })
	return ln.Addr().String()
}

// closedUDPAddr returns a loopback UDP address with (very likely) nothing bound: a port the kernel
// just handed out for UDP and took back. (A free TCP port says nothing of the same UDP port.)
func closedUDPAddr(t testing.TB) string {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := conn.LocalAddr().String()
	_ = conn.Close()
	return addr
}

// closedAddr returns a loopback TCP address with (very likely) nothing listening.
func closedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// tlsServer completes TLS handshakes and records the SNI of each.
type tlsServer struct {
	Addr string
	sni  chan string
}

func newTLSServer(t testing.TB) *tlsServer {
	s := &tlsServer{sni: make(chan string, 100)}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{selfSignedCert(t)},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case s.sni <- hello.ServerName:
			default:
			}
			return nil, nil
		},
	}
	ln := listen(t)
	s.Addr = ln.Addr().String()
	serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if tc.Handshake() == nil {
			// Wait for the client to hang up so the handshake's last flight is read.
			_, _ = tc.Read(make([]byte, 1))
		}
	})
	return s
}

// udpServer answers (or, when silent, swallows) datagrams on 127.0.0.1.
func udpServer(t testing.TB, echo bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if echo {
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// grpcServer serves grpc.health.v1.Health (unless health is nil) with the given interceptor.
func grpcServer(t testing.TB, hs *health.Server, opts ...grpc.ServerOption) string {
	t.Helper()
	srv := grpc.NewServer(opts...)
	if hs != nil {
		healthpb.RegisterHealthServer(srv, hs)
	}
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// flipHandler answers 200 or 500 as told, counting answers of each kind since the last flip.
// Answer and count happen under one lock, so every answer is attributed to one side of a flip.
type flipHandler struct {
	mu      sync.Mutex
	healthy bool
	ok, bad int
	total   atomic.Int64
}

func (h *flipHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.total.Add(1)
	h.mu.Lock()
	code := http.StatusOK
	if h.healthy {
		h.ok++
	} else {
		h.bad++
		code = http.StatusInternalServerError
	}
	h.mu.Unlock()
	w.WriteHeader(code)
}

func (h *flipHandler) set(healthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.healthy, h.ok, h.bad = healthy, 0, 0
}

func (h *flipHandler) counts() (ok, bad int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok, h.bad
}

// reflectingServer answers every HTTP request with a malformed response that quotes the
// request's headers, as a broken or hostile server might: in the status line (which Go's
// client quotes with %q) or, with inHeader, as a malformed header line (quoted raw).
func reflectingServer(t testing.TB, inHeader bool) string {
	ln := listen(t)
	serve(t, ln, func(c net.Conn) {
		r := bufio.NewReader(c)
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				break
			}
			lines = append(lines, line)
		}
		reply := "BOGUS/" + strings.ReplaceAll(strings.Join(lines, "|"), " ", "_") + "\r\n\r\n"
		if inHeader {
			reply = "HTTP/1.1 200 OK\r\nEcho " + strings.Join(lines, " ") + "\r\n\r\n"
		}
		_, _ = c.Write([]byte(reply))
	})
	return ln.Addr().String()
}

// recordingDialer forwards dials to loopback (keeping the port) and records what was asked.
type recordingDialer struct {
	mu    sync.Mutex
	calls []string
	d     net.Dialer
}

var _ Dialer = (*recordingDialer)(nil)

func (r *recordingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	r.mu.Lock()
	r.calls = append(r.calls, network+" "+address)
	r.mu.Unlock()
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	return r.d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

func (r *recordingDialer) dialed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// countingDialer tracks connections open at once (dial to close) and the peak.
type countingDialer struct {
	d               net.Dialer
	open, peak, all atomic.Int64
}

var _ Dialer = (*countingDialer)(nil)

func (c *countingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	n := c.open.Add(1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	c.all.Add(1)
	conn, err := c.d.DialContext(ctx, network, address)
	if err != nil {
		c.open.Add(-1)
		return nil, err
	}
	return &countedConn{Conn: conn, c: c}, nil
}

type countedConn struct {
	net.Conn
	c    *countingDialer
	once sync.Once
}

func (cc *countedConn) Close() error {
	cc.once.Do(func() { cc.c.open.Add(-1) })
	return cc.Conn.Close()
}
