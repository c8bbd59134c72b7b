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

// TestCacheFollowerWithoutSnapshotsTurnsStale stops the only leader: the follower, which does
// not poll, keeps its last-known devices but reports the tailnet not synced (NotPolled) once
// FollowerStaleIntervals intervals pass without a snapshot, and synced again when a leader's
// snapshots arrive.
func TestCacheFollowerWithoutSnapshotsTurnsStale(t *testing.T) {
	f := newFakeAPI(t)
	f.setDevices(device("nA", "100.64.0.1", true))
	const interval = 50 * time.Millisecond
	follower := newTestCache(t, Options{Interval: interval, Jitter: -1, Follower: true})
	events := changes(t, follower)
	export := func(s Snapshot) {
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
	}
	follower.Add("prod", Config{BaseURL: f.URL()})
	leader := newTestCache(t, Options{Interval: interval, Jitter: -1, OnPolled: export})
	leader.Add("prod", Config{BaseURL: f.URL()})
	nextChange(t, events, "imported sync", func(x Change) bool { return x.Snapshot.Status.Synced })

	leader.Close()
	x := nextChange(t, events, "NotPolled", func(x Change) bool { return x.Snapshot.Status.Reason == ReasonNotPolled })
	s := x.Snapshot
	if s.Status.Synced || !s.Stale || len(s.Devices) != 1 || s.LastSync.IsZero() {
		t.Fatalf("snapshot after the leader stopped: %+v", s)
	}
	if age := s.Status.Since.Sub(s.LastAttempt); age < FollowerStaleIntervals*interval {
		t.Fatalf("turned stale %s after the last poll; want at least %d intervals", age, FollowerStaleIntervals)
	}
	if st, _ := follower.Stats("prod"); st.Polls != 0 || st.APICalls != 0 {
		t.Fatalf("the follower polled: %+v", st)
	}

	next := newTestCache(t, Options{Interval: interval, Jitter: -1, OnPolled: export})
	next.Add("prod", Config{BaseURL: f.URL()})
	nextChange(t, events, "synced again from the new leader", func(x Change) bool { return x.Snapshot.Status.Synced })
	// Snapshots keep arriving for twice the stale limit: it stays synced throughout.
	st, _ := follower.Stats("prod")
	since := st.Imports
	waitFor(t, "more imports", func() bool { st, _ := follower.Stats("prod"); return st.Imports >= since+2*FollowerStaleIntervals })
	if got, _ := follower.Snapshot("prod"); !got.Status.Synced || got.Status.Reason != ReasonSynced {
		t.Fatalf("follower with arriving snapshots: %+v", got.Status)
	}
	for {
		select {
		case x := <-events:
			if x.Snapshot.Status.Reason == ReasonNotPolled {
				t.Fatalf("NotPolled while snapshots arrived: %+v", x.Snapshot.Status)
			}
			continue
		default:
		}
		break
	}
}
