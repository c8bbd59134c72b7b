package tailnet

import (
	"encoding/json"
	"testing"
	"time"
)

// TestCacheFollowerImportsAndTakesOver runs two caches as two replicas would: the leader polls
// and hands each snapshot (through JSON, as the etcd exchange does) to a follower that never
// calls the API; once the follower starts polling, it continues the leader's schedule.
func TestCacheFollowerImportsAndTakesOver(t *testing.T) {
	f := newFakeAPI(t)
	f.setDevices(device("nA", "100.64.0.1", true), device("nB", "100.64.0.2", true))
	const interval = 50 * time.Millisecond

	follower := newTestCache(t, Options{Interval: interval, Jitter: -1, Follower: true})
	events := changes(t, follower)
	// An import before the follower knows the tailnet waits for Add.
	leader := newTestCache(t, Options{Interval: interval, Jitter: -1, OnPolled: func(s Snapshot) {
		raw, err := json.Marshal(s)
		if err != nil {
			t.Error(err)
			return
		}
		var in Snapshot
		if err := json.Unmarshal(raw, &in); err != nil {
			t.Error(err)
			return
		}
		follower.Import(in)
	}})
	leader.Add("prod", Config{BaseURL: f.URL()})
	waitFor(t, "the leader's first poll", func() bool { s, _ := leader.Stats("prod"); return s.Polls > 0 })
	follower.Add("prod", Config{BaseURL: f.URL()})
	nextChange(t, events, "first imported sync", func(x Change) bool { return x.Snapshot.Status.Synced })

	f.setOnline("nB", false)
	x := nextChange(t, events, "nB offline, imported", func(x Change) bool { return len(x.Online) > 0 })
	if len(x.Online) != 1 || x.Online[0].NodeID != "nB" || x.Online[0].Online {
		t.Fatalf("online changes %+v", x.Online)
	}
	if d, ok := x.Snapshot.DeviceByAddress("100.64.0.2"); !ok || d.Online {
		t.Fatalf("imported snapshot's index: %+v, %v", d, ok)
	}
	if s, _ := follower.Stats("prod"); s.Polls != 0 || s.APICalls != 0 || s.Imports == 0 {
		t.Fatalf("follower stats %+v; want imports and no API calls", s)
	}

	// The leader stops (its Lease lost); the follower takes over polling.
	leader.Close()
	before := f.count("GET", "/api/v2/tailnet/-/devices")
	follower.SetPolling(true)
	waitFor(t, "the follower's own polls", func() bool { return f.count("GET", "/api/v2/tailnet/-/devices") >= before+2 })
	if s, _ := follower.Stats("prod"); s.Polls < 2 {
		t.Fatalf("follower stats %+v after takeover; want its own polls", s)
	}
}
