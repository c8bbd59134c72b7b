package balance

import (
	"fmt"
	"testing"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

func backends(groups ...string) []Backend {
	var out []Backend
	for i, g := range groups {
		out = append(out, Backend{Key: fmt.Sprintf("%s/%d", g, i), Group: g, Network: "tcp", Address: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: 1})
	}
	return out
}

// picks makes n picks, releasing each at once unless hold, and counts them by key.
func picks(t *testing.T, b *Balancer, n int, hold bool) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		be, release, ok := b.Pick(nil)
		if !ok {
			t.Fatal("no backend")
		}
		got[be.Key]++
		if !hold {
			release()
		}
	}
	return got
}

func TestRoundRobinIsEvenAndSkipsUnhealthy(t *testing.T) {
	bes := backends("a", "a", "b", "c")
	bes[1].Unhealthy = true
	b := New(Policy{Strategy: v1alpha1.StrategyRoundRobin}, bes, NewConns())
	got := picks(t, b, 300, false)
	if got["a/0"] != 100 || got["b/2"] != 100 || got["c/3"] != 100 || got["a/1"] != 0 {
		t.Errorf("picks = %v, want 100 each of the healthy backends", got)
	}
}

func TestNoUsableBackend(t *testing.T) {
	bes := backends("a", "b")
	bes[0].Unhealthy, bes[1].Unhealthy = true, true
	if _, _, ok := New(Policy{}, bes, NewConns()).Pick(nil); ok {
		t.Error("picked an unhealthy backend")
	}
	if _, _, ok := New(Policy{}, backends("a"), NewConns()).Pick([]string{"a/0"}); ok {
		t.Error("picked a tried backend")
	}
}

func TestPickSkipsTried(t *testing.T) {
	b := New(Policy{}, backends("a", "b", "c"), NewConns())
	seen := map[string]bool{}
	var tried []string
	for range 3 {
		be, release, ok := b.Pick(tried)
		if !ok || seen[be.Key] {
			t.Fatalf("pick %v (ok %v) after %v", be.Key, ok, tried)
		}
		release()
		seen[be.Key] = true
		tried = append(tried, be.Key)
	}
}

func TestLeastConnectionsCountsHeldConnections(t *testing.T) {
	conns := NewConns()
	b := New(Policy{Strategy: v1alpha1.StrategyLeastConnections}, backends("a", "b", "c"), conns)
	// Five connections held on a (from an earlier configuration: same Conns).
	old := New(Policy{Strategy: v1alpha1.StrategyLeastConnections}, backends("a"), conns)
	picks(t, old, 5, true)
	got := picks(t, b, 10, true)
	// b and c take the first ten: 5 each, catching up with a.
	if got["a/0"] != 0 || got["b/1"] != 5 || got["c/2"] != 5 {
		t.Errorf("picks = %v, want b and c to take them all", got)
	}
	if conns.Active("b/1") != 5 {
		t.Errorf("active(b) = %d, want 5", conns.Active("b/1"))
	}
	got = picks(t, b, 30, true)
	if got["a/0"] != 10 || got["b/1"] != 10 || got["c/2"] != 10 {
		t.Errorf("picks = %v, want 10 each once equal", got)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	conns := NewConns()
	b := New(Policy{}, backends("a"), conns)
	_, release, _ := b.Pick(nil)
	release()
	release()
	if n := conns.Active("a/0"); n != 0 {
		t.Errorf("active = %d after release twice", n)
	}
}

func TestWeightedProportionsAndMembers(t *testing.T) {
	bes := backends("a", "a", "b", "c", "z")
	bes[0].Weight, bes[1].Weight = 6, 6 // group a: weight 6, two members
	bes[2].Weight = 3
	bes[3].Weight = 1
	bes[4].Weight = 0 // no share
	b := New(Policy{Strategy: v1alpha1.StrategyWeighted}, bes, NewConns())
	got := picks(t, b, 1000, false)
	if got["a/0"]+got["a/1"] != 600 || got["b/2"] != 300 || got["c/3"] != 100 || got["z/4"] != 0 {
		t.Errorf("picks = %v, want a 600, b 300, c 100, z 0", got)
	}
	if got["a/0"] != 300 || got["a/1"] != 300 {
		t.Errorf("members of a: %d and %d, want 300 each", got["a/0"], got["a/1"])
	}
	// An unhealthy group gives its share to the others, in proportion.
	bes[2].Unhealthy = true
	got = picks(t, New(Policy{Strategy: v1alpha1.StrategyWeighted}, bes, NewConns()), 700, false)
	if got["a/0"]+got["a/1"] != 600 || got["c/3"] != 100 {
		t.Errorf("picks without b = %v, want a 600, c 100", got)
	}
}

func TestFailoverFollowsTheActiveTier(t *testing.T) {
	bes := backends("primary", "primary", "backup")
	bes[2].Secondary = true
	for _, tc := range []struct {
		name      string
		active    string
		unhealthy []int
		want      map[string]int
	}{
		{"primary active", TierPrimary, nil, map[string]int{"primary/0": 50, "primary/1": 50}},
		{"unset means primary", "", nil, map[string]int{"primary/0": 50, "primary/1": 50}},
		{"one primary down", TierPrimary, []int{0}, map[string]int{"primary/1": 100}},
		{"secondary active though primaries are healthy (failback delay)", TierSecondary, nil, map[string]int{"backup/2": 100}},
		{"active tier has no usable backend", TierPrimary, []int{0, 1}, map[string]int{"backup/2": 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bes := append([]Backend(nil), bes...)
			for _, i := range tc.unhealthy {
				bes[i].Unhealthy = true
			}
			got := picks(t, New(Policy{Strategy: v1alpha1.StrategyFailover, ActiveTier: tc.active}, bes, NewConns()), 100, false)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("picks = %v, want %v", got, tc.want)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, s := range []v1alpha1.LoadBalancingStrategy{v1alpha1.StrategyRoundRobin, v1alpha1.StrategyLeastConnections, v1alpha1.StrategyWeighted} {
		b.Run(string(s), func(b *testing.B) {
			bal := New(Policy{Strategy: s}, backends("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"), NewConns())
			for b.Loop() {
				_, release, _ := bal.Pick(nil)
				release()
			}
		})
	}
}
