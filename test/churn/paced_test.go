package churn

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRunPacedCountsFailuresByKind(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	var d net.Dialer
	dialTo := func(addr string) func(context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	res := RunPaced(t.Context(), 100, 300*time.Millisecond, dialTo(srv.Listener.Addr().String()))
	// A ticker drops ticks it could not deliver, never adds any: at most 30, and a loaded
	// machine may lose a few.
	if res.Failed != 0 || res.Conns == 0 || res.Conns > 30 {
		t.Errorf("served: %v, want up to 30 connections, none failed (samples %q)", res, res.Samples)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	res = RunPaced(t.Context(), 100, 100*time.Millisecond, dialTo(closed))
	if res.Conns == 0 || res.Failed != res.Conns || res.Kinds["dial: connection refused"] != res.Conns || len(res.Samples) == 0 {
		t.Errorf("refused: %v (%v), want every connection failed as dial: connection refused", res, res.Kinds)
	}

	// A server that resets connections once they asked.
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	go func() {
		for {
			c, err := rl.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 64))
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	res = RunPaced(t.Context(), 100, 100*time.Millisecond, dialTo(rl.Addr().String()))
	if res.Conns == 0 || res.Failed != res.Conns || res.Kinds["answer: connection reset"] != res.Conns {
		t.Errorf("reset: %v (%v), want every connection failed as answer: connection reset", res, res.Kinds)
	}
}
