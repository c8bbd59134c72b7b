package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// userAgent identifies probes to servers; a "User-Agent" header overrides it.
const userAgent = "tailscale-gateway-health/v1alpha1"

// env is what a probe needs besides its target.
type env struct {
	dialer Dialer
	// sessions resumes the target's TLS sessions (HTTPS); nil for one-off probes.
	sessions tls.ClientSessionCache
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
func runProbe(ctx context.Context, e env, t Target) error {
	probe, ok := probes[t.Check.Type]
	if !ok {
		return fmt.Errorf("unsupported health check type %q", t.Check.Type)
	}
	ctx, cancel := context.WithTimeout(ctx, t.Check.Timeout)
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

// bindDeadline makes I/O on conn end at ctx's deadline or cancellation. Call stop when done.
func bindDeadline(ctx context.Context, conn net.Conn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
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
