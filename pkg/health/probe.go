package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userAgent identifies probes to servers; a "User-Agent" header overrides it.
const userAgent = "tailscale-gateway-health/v1alpha1"

// env is what a probe needs besides its target.
type env struct {
	dialer Dialer
	// sessions is the target's TLS state (HTTPS, TLS); nil for one-off probes.
	sessions *sessionCache
}

// probeFunc runs one probe of t; ctx carries the probe's deadline.
type probeFunc func(ctx context.Context, e env, t Target) error

var probes = map[Protocol]probeFunc{
	ProtocolHTTP:  probeHTTP,
	ProtocolHTTPS: probeHTTPS,
	ProtocolTCP:   probeTCP,
	ProtocolTLS:   probeTLS,
	ProtocolUDP:   probeUDP,
	ProtocolGRPC:  probeGRPC,
}

// runProbe probes t (whose Check is defaulted) within t.Check.Timeout. The error never
// contains a value of t.Check.Headers.
type viaKey struct{}

// ViaFrom returns the Via of the target a Dialer dials for (empty when none).
func ViaFrom(ctx context.Context) string {
	v, _ := ctx.Value(viaKey{}).(string)
	return v
}

func runProbe(ctx context.Context, e env, t Target) error {
	probe, ok := probes[t.Check.Type]
	if !ok {
		return fmt.Errorf("unsupported health check type %q", t.Check.Type)
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, viaKey{}, t.Via), t.Check.Timeout)
	defer cancel()
	err := probe(ctx, e, t)
	if err == nil {
		return nil
	}
	// Connection deadlines may fire just before ctx notices its own.
	if deadline, _ := ctx.Deadline(); errors.Is(ctx.Err(), context.DeadlineExceeded) || !time.Now().Before(deadline) {
		err = fmt.Errorf("timed out after %s: %w", t.Check.Timeout, err)
	}
	return redact(err, t.Check.Headers)
}

// redact replaces header values a server may have reflected into err. A redacted error does not
// wrap the original, whose message holds the secret.
func redact(err error, headers map[string]string) error {
	msg := err.Error()
	out := msg
	for _, v := range headers {
		for _, secret := range secretForms(v) {
			out = strings.ReplaceAll(out, secret, "[redacted]")
		}
	}
	if out == msg {
		return err
	}
	return errors.New(out)
}

// secretForms lists the spellings of a header value worth hiding: the value, its Go-quoted
// form (errors often %q what they quote), and its longer words ("Bearer <token>" -> token).
func secretForms(v string) []string {
	const minValue, minWord = 4, 8
	if len(v) < minValue {
		return nil
	}
	forms := []string{v}
	if q := strconv.Quote(v); q[1:len(q)-1] != v {
		forms = append(forms, q[1:len(q)-1])
	}
	for _, w := range strings.Fields(v) {
		if len(w) >= minWord && w != v {
			forms = append(forms, w)
		}
	}
	return forms
}

// aLongTimeAgo is a deadline in the past: it interrupts pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

// dial connects to address for a probe. I/O on the connection ends at ctx's deadline or
// cancellation; closing it releases that binding.
func dial(ctx context.Context, e env, network, address string) (net.Conn, error) {
	conn, err := e.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	return &boundConn{Conn: conn, stop: stop}, nil
}

// boundConn is a connection whose I/O is bound to a probe's context; see dial.
type boundConn struct {
	net.Conn
	stop func() bool
}

func (c *boundConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// serverName is the TLS server name and default virtual host of t.
func serverName(t Target) string {
	if t.Check.ServerName != "" {
		return t.Check.ServerName
	}
	if host, _, err := net.SplitHostPort(t.Address); err == nil {
		return host
	}
	return t.Address
}

// readers recycles the buffered readers probes parse responses with.
var readers = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// newReader returns a buffered reader of r; hand it back with freeReader.
func newReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func freeReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}
