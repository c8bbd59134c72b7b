package forward

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func counters(t *testing.T) (*Metrics, *Counters) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	return m, m.For(RoleEgress, "egress/tcp/1", "ns/obj/ep")
}

// echoServer echoes each TCP connection until EOF, then half-closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestPipePassesHalfClosesAndCountsBytes(t *testing.T) {
	_, c := counters(t)
	target := echoServer(t)
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := front.Accept()
		if err != nil {
			return
		}
		back, err := net.Dial("tcp", target)
		if err != nil {
			conn.Close()
			return
		}
		Pipe(conn, back, c)
	}()
	client, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	msg := strings.Repeat("x", 300000)
	go func() {
		_, _ = io.WriteString(client, msg)
		_ = client.(*net.TCPConn).CloseWrite() // the echo server only answers EOF once it sees ours
	}()
	_ = client.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || len(got) != len(msg) {
		t.Fatalf("read %d of %d bytes: %v", len(got), len(msg), err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Pipe did not return after both directions ended")
	}
	if up, down := testutil.ToFloat64(c.ToTarget), testutil.ToFloat64(c.FromTarget); up != 300000 || down != 300000 {
		t.Errorf("bytes to target %v, from target %v; want 300000 each", up, down)
	}
}

func TestUDPRelayKeepsOneSessionPerClient(t *testing.T) {
	_, c := counters(t)
	// The target: a UDP echo.
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, src, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], src)
		}
	}()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	relay := &UDPRelay{PC: pc, Counters: c, Idle: time.Minute,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", echo.LocalAddr().String())
		}}
	served := make(chan error, 1)
	go func() { served <- relay.Serve(ctx) }()

	for _, client := range []string{"a", "b"} {
		conn, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := range 3 {
			msg := client + string(rune('0'+i))
			if _, err := conn.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := conn.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("client %s: echo %q, %v", client, buf[:n], err)
			}
		}
	}
	if n := testutil.ToFloat64(c.Connections); n != 2 {
		t.Errorf("%v sessions, want one per client", n)
	}
	if n := testutil.ToFloat64(c.Active); n != 2 {
		t.Errorf("%v active sessions, want 2", n)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestForgetDropsAListenersSeries(t *testing.T) {
	m, c := counters(t)
	c.Connections.Inc()
	m.NoBackend("egress/tcp/1")
	m.Forget("egress/tcp/1")
	if n := testutil.CollectAndCount(m.connections) + testutil.CollectAndCount(m.noBackend); n != 0 {
		t.Errorf("%d series left after Forget", n)
	}
}
