package forward

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// DefaultUDPIdle ends a UDP session after this long without a datagram in either direction.
const DefaultUDPIdle = 2 * time.Minute

// UDPRelay relays datagrams arriving on PC to a target: each client address gets its own
// session, a connected UDP socket dialled through Dial, whose replies go back to that client.
type UDPRelay struct {
	// PC receives the clients' datagrams.
	PC net.PacketConn
	// Dial opens the session socket to the target.
	Dial func(ctx context.Context) (net.Conn, error)
	// Idle ends a session after this long without traffic; DefaultUDPIdle when zero.
	Idle time.Duration
	// Counters count sessions as connections, and their bytes.
	Counters *Counters

	mu       sync.Mutex
	sessions map[string]*udpSession
}

type udpSession struct {
	conn net.Conn
	last atomic.Int64 // unix nanoseconds of the last datagram
}

// Serve relays until ctx ends or PC is closed, then closes every session.
func (r *UDPRelay) Serve(ctx context.Context) error {
	idle := r.Idle
	if idle <= 0 {
		idle = DefaultUDPIdle
	}
	r.mu.Lock()
	r.sessions = map[string]*udpSession{}
	r.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { r.PC.Close() })
	defer stop()
	defer r.closeAll()

	buf := make([]byte, 64<<10)
	for {
		n, src, err := r.PC.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s, err := r.session(ctx, src, idle)
		if err != nil {
			klog.V(2).InfoS("UDP session dial failed", "client", src.String(), "err", err)
			continue
		}
		s.last.Store(time.Now().UnixNano())
		if _, err := s.conn.Write(buf[:n]); err == nil {
			r.Counters.ToTarget.Add(float64(n))
		}
	}
}

// session returns the session of src, dialling a new one if needed.
func (r *UDPRelay) session(ctx context.Context, src net.Addr, idle time.Duration) (*udpSession, error) {
	key := src.String()
	r.mu.Lock()
	s, ok := r.sessions[key]
	r.mu.Unlock()
	if ok {
		return s, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := r.Dial(dctx)
	if err != nil {
		r.Counters.DialErrors.Inc()
		return nil, err
	}
	s = &udpSession{conn: conn}
	s.last.Store(time.Now().UnixNano())
	r.mu.Lock()
	r.sessions[key] = s
	r.mu.Unlock()
	r.Counters.Connections.Inc()
	r.Counters.Active.Inc()
	go r.replies(s, key, src, idle)
	return s, nil
}

// replies sends the target's datagrams back to the client until the session idles out.
func (r *UDPRelay) replies(s *udpSession, key string, client net.Addr, idle time.Duration) {
	defer func() {
		r.mu.Lock()
		if r.sessions[key] == s {
			delete(r.sessions, key)
		}
		r.mu.Unlock()
		s.conn.Close()
		r.Counters.Active.Dec()
	}()
	buf := make([]byte, 64<<10)
	for {
		_ = s.conn.SetReadDeadline(time.Unix(0, s.last.Load()).Add(idle))
		n, err := s.conn.Read(buf)
		if n > 0 {
			s.last.Store(time.Now().UnixNano())
			if _, werr := r.PC.WriteTo(buf[:n], client); werr == nil {
				r.Counters.FromTarget.Add(float64(n))
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, s.last.Load())) < idle {
				continue // traffic from the client moved the deadline on
			}
			return
		}
	}
}

func (r *UDPRelay) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sessions {
		s.conn.Close()
	}
}
