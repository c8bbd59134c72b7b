package ports

import (
	"fmt"
	"testing"
)

func TestEgressPortIsStableAndInRange(t *testing.T) {
	// Golden values: changing the derivation moves every deployed egress address.
	golden := []struct {
		object, endpoint string
		port             int32
		want             int32
	}{
		{"backends", "web", 80, 14438},
		{"backends", "db", 5432, 16116},
		{"simulated-devices", "api-http", 80, 14664},
	}
	for _, g := range golden {
		if got := EgressPort(g.object, g.endpoint, g.port); got != g.want {
			t.Errorf("EgressPort(%q, %q, %d) = %d, want %d", g.object, g.endpoint, g.port, got, g.want)
		}
	}
	for i := range 10000 {
		p := EgressPort(fmt.Sprintf("obj-%d", i%7), fmt.Sprintf("ep-%d", i), int32(i%65535+1))
		if p < EgressBase || p >= EgressBase+EgressSpan {
			t.Fatalf("port %d outside [%d, %d)", p, EgressBase, EgressBase+EgressSpan)
		}
	}
}

func TestEgressPortDependsOnlyOnItsInputs(t *testing.T) {
	a := EgressPort("backends", "web", 80)
	if EgressPort("backends", "web", 8080) == a && EgressPort("other", "web", 80) == a && EgressPort("backends", "api", 80) == a {
		t.Fatal("the port ignores its inputs")
	}
}

func TestAssignResolvesCollisionsIndependentlyOfOrder(t *testing.T) {
	// Find two endpoints that collide.
	var a, b Endpoint
	seen := map[int32]Endpoint{}
	for i := 0; ; i++ {
		ep := Endpoint{Object: "obj", Endpoint: fmt.Sprintf("ep-%d", i), Port: 80}
		p := EgressPort(ep.Object, ep.Endpoint, ep.Port)
		if prev, ok := seen[p]; ok {
			a, b = prev, ep
			break
		}
		seen[p] = ep
	}
	if less(b, a) {
		a, b = b, a
	}
	other := Endpoint{Object: "obj", Endpoint: "other", Port: 443}
	udp := b
	udp.UDP = true
	for _, order := range [][]Endpoint{{a, b, other, udp}, {udp, other, b, a}} {
		got, conflicts := Assign(order)
		if got[a] != EgressPort(a.Object, a.Endpoint, a.Port) || got[other] == 0 || got[udp] == 0 {
			t.Errorf("Assign(%v) = %v", order, got)
		}
		if _, ok := got[b]; ok || len(conflicts) != 1 || conflicts[0] != b {
			t.Errorf("Assign(%v): %v should lose the collision with %v, conflicts %v", order, b, a, conflicts)
		}
	}
}
