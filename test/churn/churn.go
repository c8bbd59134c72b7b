// Package churn opens many new HTTP connections, closed first by the server or by the client,
// and counts those that failed or needed a retransmitted SYN: the measure of dropped SYNs in the
// data plane's tests and benchmarks (docs/data-plane.md).
package churn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Result counts what happened to a run of new connections.
type Result struct {
	Conns   int
	Failed  int           // dial or request failed within Timeout
	Reset   int           // of Failed, those reset by the peer: answered, so no SYN was lost
	Slow    int           // dialled, but only after Retransmit: a SYN was retransmitted
	Elapsed time.Duration // wall time of the run
	First   error         // the first failure
}

const (
	// Timeout bounds each connection: dial, request and answer.
	Timeout = 10 * time.Second
	// Retransmit is gVisor's initial retransmission timeout: a dial that took longer had
	// its SYN (or SYN-ACK) lost once.
	Retransmit = time.Second
	Workers    = 16
)

// Run opens n new HTTP connections with dial from Workers goroutines, one GET each.
// With serverFirst the request says "Connection: close" and the server closes first (its side
// of the connection is left in TIME_WAIT); otherwise the client closes once it has the answer.
func Run(ctx context.Context, n int, serverFirst bool, dial func(context.Context) (net.Conn, error)) Result {
	var res Result
	var mu sync.Mutex
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range Workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				slow, err := one(ctx, serverFirst, dial)
				mu.Lock()
				res.Conns++
				if slow {
					res.Slow++
				}
				if err != nil {
					res.Failed++
					if errors.Is(err, syscall.ECONNRESET) {
						res.Reset++
					}
					if res.First == nil {
						res.First = err
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// one opens one connection with dial and makes one GET on it; slow reports a dial that took
// Retransmit or longer. With serverFirst the request says "Connection: close" and the server
// closes first; otherwise the client closes once it has the answer.
func one(ctx context.Context, serverFirst bool, dial func(context.Context) (net.Conn, error)) (slow bool, err error) {
	req := "GET / HTTP/1.1\r\nHost: churn\r\n\r\n"
	if serverFirst {
		req = "GET / HTTP/1.1\r\nHost: churn\r\nConnection: close\r\n\r\n"
	}
	cctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	start := time.Now()
	c, err := dial(cctx)
	if err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	slow = time.Since(start) >= Retransmit
	_ = c.SetDeadline(start.Add(Timeout))
	if _, err := io.WriteString(c, req); err != nil {
		return slow, fmt.Errorf("request: %w", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return slow, fmt.Errorf("answer: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return slow, fmt.Errorf("answer body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return slow, fmt.Errorf("answer: status %s", resp.Status)
	}
	if serverFirst { // wait for the server's FIN before closing
		if _, err := br.ReadByte(); err != io.EOF {
			return slow, fmt.Errorf("the server did not close first: %v", err)
		}
	}
	return slow, nil
}

func (r Result) String() string {
	return fmt.Sprintf("%d connections in %v (%.0f/s): %d failed (%d reset), %d needed a retransmitted SYN (first error: %v)",
		r.Conns, r.Elapsed.Round(time.Millisecond), float64(r.Conns)/r.Elapsed.Seconds(), r.Failed, r.Reset, r.Slow, r.First)
}

// BothWays runs Run with n/2 connections the server closes first, then n/2 the client
// closes first, and returns both results.
func BothWays(ctx context.Context, n int, dial func(context.Context) (net.Conn, error)) (serverFirst, clientFirst Result) {
	return Run(ctx, n/2, true, dial), Run(ctx, n/2, false, dial)
}

// Err reports connections lost without an answer (dial timeouts, no reply before Timeout) and
// retransmitted SYNs; nil when there were none. Resets are counted in String but not here: the
// peer answered, so they are not the SYN drops this package measures.
func (r Result) Err() error {
	if r.Failed == r.Reset && r.Slow == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d connections failed without a reset and %d needed a retransmitted SYN, want none (first error: %v)",
		r.Failed-r.Reset, r.Conns, r.Slow, r.First)
}
