package tailnet

import "sync/atomic"

// Stats counts a tailnet's API use, so that tests and benchmarks can check that calls follow
// polls, not reads.
type Stats struct {
	// Polls is the number of polls started.
	Polls uint64
	// PollFailures is the number of polls that failed.
	PollFailures uint64
	// Refreshes is the number of Refresh calls.
	Refreshes uint64
	// CoalescedRefreshes is the subset of Refreshes that started no poll: they joined the poll
	// in flight or were answered from memory.
	CoalescedRefreshes uint64
	// APICalls is the number of API method calls (list devices, list services, ...), by the
	// poller and through Cache.API.
	APICalls uint64
	// Imports is the number of snapshots imported from another replica's polls.
	Imports uint64
	// HTTP counts HTTP requests, retries and token requests included, when the API is a *Client.
	HTTP TransportStats
}

// counters are the live form of Stats.
type counters struct {
	polls, pollFailures, refreshes, coalesced, apiCalls, imports atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Polls:              c.polls.Load(),
		PollFailures:       c.pollFailures.Load(),
		Refreshes:          c.refreshes.Load(),
		CoalescedRefreshes: c.coalesced.Load(),
		APICalls:           c.apiCalls.Load(),
		Imports:            c.imports.Load(),
	}
}

// add sums transport counters.
func (s TransportStats) add(o TransportStats) TransportStats {
	return TransportStats{
		Requests:      s.Requests + o.Requests,
		TokenRequests: s.TokenRequests + o.TokenRequests,
		Retries:       s.Retries + o.Retries,
		RateLimited:   s.RateLimited + o.RateLimited,
		Failures:      s.Failures + o.Failures,
	}
}

// transportStatser is implemented by APIs that count their HTTP requests, such as *Client.
type transportStatser interface {
	Stats() TransportStats
}

var _ transportStatser = (*Client)(nil)
