package replicas

import (
	"context"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestMembershipExpiresSilentReplicas drives two members' renewals by hand on one Lease store,
// with a clock of their own: a member that stops renewing drops out once its duration has passed
// since its last renewal was seen, and one that leaves is gone at once.
func TestMembershipExpiresSilentReplicas(t *testing.T) {
	ctx := context.Background()
	leases := fake.NewClientset().CoordinationV1().Leases("system")
	clock := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var changes [][]string
	member := func(id string) *Membership {
		m := NewMembership(MembershipOptions{Leases: leases, Group: "tsgw", Identity: id, LeaseDuration: 10 * time.Second,
			RenewPeriod: 2 * time.Second, OnChange: func(ms []string) { changes = append(changes, ms) }})
		m.now = func() time.Time { return clock }
		return m
	}
	a, b := member("a"), member("b")
	step := func(ms ...*Membership) {
		for _, m := range ms {
			if err := m.renew(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range []*Membership{a, b} {
			if err := m.refresh(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	step(a, b)
	if got := a.Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a sees %v", got)
	}
	// a owns some keys and b the others, and they agree.
	var ownedA, ownedB int
	for _, k := range []string{"ns/x", "ns/y", "ns/z", "ns/w", "other/x", "other/y", "other/z", "other/w"} {
		if a.Owns(k) == b.Owns(k) {
			t.Fatalf("%s: a owns %v, b owns %v", k, a.Owns(k), b.Owns(k))
		}
		if a.Owns(k) {
			ownedA++
		} else {
			ownedB++
		}
	}
	if ownedA == 0 || ownedB == 0 {
		t.Fatalf("a owns %d, b %d of 8 keys", ownedA, ownedB)
	}

	// b goes silent: a keeps it until 10s after it last saw b's renewal.
	clock = clock.Add(8 * time.Second)
	step(a)
	if got := a.Members(); len(got) != 2 {
		t.Fatalf("after 8s a sees %v", got)
	}
	clock = clock.Add(3 * time.Second)
	step(a)
	if got := a.Members(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after 11s a sees %v", got)
	}
	// b comes back, then leaves for good.
	step(a, b)
	if got := a.Members(); len(got) != 2 {
		t.Fatalf("after b renewed a sees %v", got)
	}
	b.leave()
	step(a)
	if got := a.Members(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after b left a sees %v", got)
	}
	if len(changes) < 4 {
		t.Fatalf("changes %v", changes)
	}

	// b comes back and dies without leaving: its Lease stays until it has gone unrenewed for
	// staleLeases durations, then a deletes it; a's own Lease stays.
	step(a, b)
	clock = clock.Add((staleLeases*10 - 1) * time.Second)
	step(a)
	if _, err := leases.Get(ctx, "tsgw-b", metav1.GetOptions{}); err != nil {
		t.Fatalf("b's Lease before %d lease durations: %v", staleLeases, err)
	}
	clock = clock.Add(time.Second)
	step(a)
	if _, err := leases.Get(ctx, "tsgw-b", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("b's Lease after %d lease durations: %v, want it deleted", staleLeases, err)
	}
	if _, err := leases.Get(ctx, "tsgw-a", metav1.GetOptions{}); err != nil {
		t.Fatalf("a's own Lease: %v", err)
	}
}
