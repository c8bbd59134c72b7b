package churn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Paced is what RunPaced saw: connections opened at a steady rate, and the failed ones by kind.
type Paced struct {
	Rate    int            `json:"rate"`    // new connections per second asked for
	Conns   int            `json:"conns"`   // connections opened
	Failed  int            `json:"failed"`  // dial or request failed within Timeout
	Slow    int            `json:"slow"`    // dialled only after Retransmit (a SYN retransmitted)
	Kinds   map[string]int `json:"kinds"`   // failed connections by Kind
	Samples []string       `json:"samples"` // the first failures, with when they started
	Elapsed time.Duration  `json:"elapsed"` // from the first connection to the last one's end
}

// maxSamples bounds Paced.Samples.
const maxSamples = 20

// RunPaced opens rate new connections per second with dial, one GET each (every other one
// closed first by the server, the rest by the client), for duration, and waits for the last
// one. Each connection runs on its own, so a slow one does not delay the next: the rate holds
// whatever the latency.
func RunPaced(ctx context.Context, rate int, duration time.Duration, dial func(context.Context) (net.Conn, error)) Paced {
	res := Paced{Rate: rate, Kinds: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	stop := time.NewTimer(duration)
	defer stop.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
		case <-stop.C:
		case <-tick.C:
			wg.Go(func() {
				began := time.Now()
				slow, err := one(ctx, i%2 == 0, dial)
				mu.Lock()
				defer mu.Unlock()
				res.Conns++
				if slow {
					res.Slow++
				}
				if err != nil {
					res.Failed++
					res.Kinds[Kind(err)]++
					if len(res.Samples) < maxSamples {
						res.Samples = append(res.Samples, fmt.Sprintf("+%v: %v", began.Sub(start).Round(time.Millisecond), err))
					}
				}
			})
			continue
		}
		break
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	sort.Strings(res.Samples)
	return res
}

// Kind names the kind of a failed connection of one: the step that failed ("dial", "request",
// "answer", ...) and what it met (refused, reset, timeout, EOF, ...).
func Kind(err error) string {
	step, _, _ := strings.Cut(err.Error(), ":")
	var what string
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		what = "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		what = "connection reset"
	case errors.Is(err, syscall.EPIPE):
		what = "broken pipe"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		what = "unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		what = "timeout"
	case errors.Is(err, context.Canceled):
		what = "canceled"
	case strings.Contains(err.Error(), "EOF"):
		what = "EOF"
	default:
		// Errors of other stacks (gVisor's netstack) carry no errno: keep the text after the step.
		_, rest, _ := strings.Cut(err.Error(), ": ")
		what = rest
		if i := strings.LastIndex(rest, ": "); i >= 0 {
			what = rest[i+2:]
		}
	}
	return step + ": " + what
}

func (p Paced) String() string {
	kinds := make([]string, 0, len(p.Kinds))
	for k, n := range p.Kinds {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d connections in %v (%.1f/s, asked %d/s): %d failed %v, %d needed a retransmitted SYN",
		p.Conns, p.Elapsed.Round(time.Millisecond), float64(p.Conns)/p.Elapsed.Seconds(), p.Rate, p.Failed, kinds, p.Slow)
}
