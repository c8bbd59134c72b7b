package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// probeTLS is healthy iff a connection is established and a TLS handshake completes.
func probeTLS(ctx context.Context, e env, t Target) error {
	conn, err := dialTLS(ctx, e, t)
	if err != nil {
		return err
	}
	_ = conn.Close()
	return nil
}

// errHandshake marks errors of the TLS handshake, as opposed to the dial.
var errHandshake = errors.New("tls handshake")

// x25519Only is the key exchange TLS probes offer: handshakes dominate the cost of TLS probes,
// and a hybrid post-quantum exchange makes each one about a third dearer while an
// unauthenticated probe gains little from it.
var x25519Only = []tls.CurveID{tls.X25519}

// dialTLS connects to t and completes a TLS handshake without verifying the server's
// certificate.
//
// Scheduled probes (e.sessions set) resume the target's previous session and offer at most
// TLS 1.2 while the server accepts it: resuming a TLS 1.2 session takes symmetric crypto only,
// whereas a resumed TLS 1.3 handshake still runs a key exchange, the bulk of a TLS probe's
// cost. When a TLS 1.2 handshake fails, the probe tries again at once with TLS 1.3 allowed
// and, if that succeeds, offers TLS 1.3 to the target from then on.
func dialTLS(ctx context.Context, e env, t Target, alpn ...string) (net.Conn, error) {
	if e.sessions == nil {
		return handshakeTLS(ctx, e, t, tls.VersionTLS13, alpn)
	}
	version := e.sessions.maxVersion()
	conn, err := handshakeTLS(ctx, e, t, version, alpn)
	if version != tls.VersionTLS12 || !errors.Is(err, errHandshake) || ctx.Err() != nil {
		return conn, err
	}
	conn, err = handshakeTLS(ctx, e, t, tls.VersionTLS13, alpn)
	if err == nil {
		e.sessions.refuseTLS12()
	}
	return conn, err
}

// handshakeTLS dials t and completes a TLS handshake offering versions up to maxVersion.
func handshakeTLS(ctx context.Context, e env, t Target, maxVersion uint16, alpn []string) (net.Conn, error) {
	raw, err := dial(ctx, e, "tcp", t.Address)
	if err != nil {
		return nil, err
	}
	config := &tls.Config{
		ServerName: serverName(t), // not sent when it is an IP literal
		// Tailnet endpoints commonly serve self-signed certificates; a probe checks that TLS
		// works, not whom it talks to.
		InsecureSkipVerify: true, //nolint:gosec // documented in the package doc
		NextProtos:         alpn,
		CurvePreferences:   x25519Only,
		MaxVersion:         maxVersion,
	}
	if e.sessions != nil {
		config.ClientSessionCache = e.sessions
	}
	conn := tls.Client(&corkedConn{Conn: raw}, config)
	if err := conn.Handshake(); err != nil { // bounded by raw's deadline
		_ = conn.Close() // sends the alert the client may have written
		return nil, fmt.Errorf("%w: %w", errHandshake, err)
	}
	return conn, nil
}

// corkedConn holds back writes until the next Read, Close or deadline change, so that the end
// of a TLS handshake leaves with the request that follows it: each write to a local peer costs
// about as much as the peer's handling of it. Pending bytes go out under the deadline they were
// written under.
type corkedConn struct {
	net.Conn
	buf []byte
}

func (c *corkedConn) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *corkedConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *corkedConn) Close() error {
	return errors.Join(c.flush(), c.Conn.Close())
}

func (c *corkedConn) SetDeadline(t time.Time) error {
	return errors.Join(c.flush(), c.Conn.SetDeadline(t))
}

func (c *corkedConn) SetWriteDeadline(t time.Time) error {
	return errors.Join(c.flush(), c.Conn.SetWriteDeadline(t))
}

func (c *corkedConn) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}
