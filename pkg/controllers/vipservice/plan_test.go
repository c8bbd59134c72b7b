package vipservice

import (
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

var (
	now  = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ttl  = 24 * time.Hour
	ours = OwnerRef{OperatorID: "op-a", Resource: &Resource{Kind: Kind, Name: "ns/web", UID: "uid-a"}}
	b    = OwnerRef{OperatorID: "op-b", Resource: &Resource{Kind: Kind, Name: "ns/web", UID: "uid-b"}}
)

func servicesObject(discover bool) *v1alpha1.TailscaleServices {
	o := &v1alpha1.TailscaleServices{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "uid-a"},
		Spec: v1alpha1.TailscaleServicesSpec{VIPService: &v1alpha1.VIPServiceSpec{Name: "svc:web", Ports: []string{"tcp:80"},
			Tags: []string{"tag:web"}, Comment: "web", Annotations: map[string]string{"team": "a"}}},
	}
	if discover {
		o.Spec.ServiceDiscovery = &v1alpha1.ServiceDiscoverySpec{DiscoverVIPServices: true,
			VIPServiceSelector: &v1alpha1.VIPServiceSelector{Tags: []string{"tag:shared"}}}
	}
	return o
}

func annotated(refs []OwnerRef, heartbeats map[string]string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range extra {
		out[k] = v
	}
	if refs != nil {
		raw, _ := json.Marshal(ownerAnnotationValue{OwnerRefs: refs})
		out[OwnerAnnotation] = string(raw)
	}
	if heartbeats != nil {
		raw, _ := json.Marshal(heartbeats)
		out[HeartbeatAnnotation] = string(raw)
	}
	return out
}

func TestPlan(t *testing.T) {
	addrs := []string{"100.100.0.1", "fd7a:115c:a1e0::1"}
	mine := tailnet.Service{Name: "svc:web", Addrs: addrs, Ports: []string{"tcp:80"}, Tags: []string{"tag:web"}, Comment: "web",
		Annotations: annotated([]OwnerRef{ours}, nil, map[string]string{"team": "a"})}
	fresh := now.Add(-time.Hour).Format(time.RFC3339)
	stale := now.Add(-48 * time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		name     string
		discover bool
		cur      tailnet.Service
		exists   bool
		want     action
		check    func(t *testing.T, p plan)
	}{
		{name: "absent: create with our reference alone", want: actionCreate, check: func(t *testing.T, p plan) {
			if len(p.next.Addrs) != 0 || p.owners.owner() != "op-a" || p.next.Annotations["team"] != "a" {
				t.Errorf("create: %+v", p.next)
			}
		}},
		{name: "ours and equal: nothing", cur: mine, exists: true, want: actionNone},
		{name: "ours, ports as a set", exists: true, want: actionNone, cur: func() tailnet.Service {
			s := mine
			s.Ports = []string{"tcp:80", "tcp:80"}
			return s
		}()},
		{name: "ours, drifted comment: update carrying addrs", exists: true, want: actionUpdate, cur: func() tailnet.Service {
			s := mine
			s.Comment = "by hand"
			return s
		}(), check: func(t *testing.T, p plan) {
			if p.next.Comment != "web" || len(p.next.Addrs) != 2 || p.next.Addrs[0] != addrs[0] {
				t.Errorf("update: %+v", p.next)
			}
		}},
		{name: "by hand, no annotation: conflict", exists: true, want: actionConflict,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs}},
		{name: "by hand, attach asked: read-only consumer", discover: true, exists: true, want: actionAttachReadOnly,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs, Tags: []string{"tag:shared"}}},
		{name: "other operator: conflict", exists: true, want: actionConflict,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs, Annotations: annotated([]OwnerRef{b}, nil, nil)},
			check: func(t *testing.T, p plan) {
				if p.owners.owner() != "op-b" || p.message == "" {
					t.Errorf("conflict: %+v", p)
				}
			}},
		{name: "other operator, selector does not match: conflict", discover: true, exists: true, want: actionConflict,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs, Tags: []string{"tag:other"}, Annotations: annotated([]OwnerRef{b}, nil, nil)}},
		{name: "other operator, attach: consumer keeps the fields", discover: true, exists: true, want: actionUpdate,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs, Comment: "b's", Tags: []string{"tag:shared"}, Annotations: annotated([]OwnerRef{b}, nil, nil)},
			check: func(t *testing.T, p plan) {
				if !p.attached || p.next.Comment != "b's" || p.owners.owner() != "op-b" || len(p.owners.consumers()) != 1 {
					t.Errorf("attach: %+v", p)
				}
				o, _ := parseOwners(p.next.Annotations)
				if o.heartbeats[ours.key()].IsZero() {
					t.Errorf("no heartbeat on a shared service: %v", p.next.Annotations)
				}
			}},
		{name: "consumer with a fresh heartbeat: nothing", discover: true, exists: true, want: actionNone,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs, Tags: []string{"tag:shared"},
				Annotations: annotated([]OwnerRef{b, ours}, map[string]string{ours.key(): fresh}, nil)}},
		{name: "consumer, owner's heartbeat stale: expired, we own", discover: true, exists: true, want: actionUpdate,
			cur: tailnet.Service{Name: "svc:web", Addrs: addrs, Tags: []string{"tag:shared"},
				Annotations: annotated([]OwnerRef{b, ours}, map[string]string{b.key(): stale, ours.key(): fresh}, nil)},
			check: func(t *testing.T, p plan) {
				if len(p.expired) != 1 || p.owners.owner() != "op-a" || p.next.Comment != "web" {
					t.Errorf("expiry: %+v", p)
				}
			}},
		{name: "unreadable annotation: conflict", exists: true, want: actionConflict,
			cur: tailnet.Service{Name: "svc:web", Annotations: map[string]string{OwnerAnnotation: "{"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planFor(wantService(servicesObject(tc.discover)), tc.cur, tc.exists, ours, now, ttl)
			if p.action != tc.want {
				t.Fatalf("action %d, want %d (%+v)", p.action, tc.want, p)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func TestOwnersWithout(t *testing.T) {
	o := owners{present: true, refs: []OwnerRef{b, ours}, heartbeats: map[string]time.Time{ours.key(): now, b.key(): now}}
	rest := o.without(ours)
	if len(rest.refs) != 1 || rest.owner() != "op-b" || !rest.heartbeats[ours.key()].IsZero() {
		t.Fatalf("without: %+v", rest)
	}
	if len(o.refs) != 2 {
		t.Fatal("without modified its receiver")
	}
	ann := rest.annotations(map[string]string{"x": "y"}, ours, now, time.Hour)
	back, err := parseOwners(ann)
	if err != nil || len(back.refs) != 1 || back.refs[0].OperatorID != "op-b" || ann["x"] != "y" {
		t.Fatalf("round trip: %v %v %v", ann, back, err)
	}
}
