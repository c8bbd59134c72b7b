package tenancy

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

func lister(t *testing.T, tailnets ...*v1alpha1.TailscaleTailnet) listers.TailscaleTailnetLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, tn := range tailnets {
		if err := idx.Add(tn); err != nil {
			t.Fatal(err)
		}
	}
	return listers.NewTailscaleTailnetLister(idx)
}

func tailnet(name, domain string, an *v1alpha1.AllowedNamespaces) *v1alpha1.TailscaleTailnet {
	return &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"},
		Spec: v1alpha1.TailscaleTailnetSpec{Tailnet: domain, AllowedNamespaces: an}}
}

func TestDecide(t *testing.T) {
	l := lister(t,
		tailnet("open", "open.ts.net", nil),
		tailnet("all", "-", &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromAll}),
		tailnet("team", "team.ts.net", &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}),
		tailnet("byname", "byname.ts.net", &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "alpha"}}}),
		tailnet("listed", "listed.ts.net", &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromNames, Names: []string{"alpha"}}),
	)
	ns := NamespacesFunc(func(name string) (labels.Set, bool) {
		switch name {
		case "alpha":
			return labels.Set{"kubernetes.io/metadata.name": "alpha", "team": "a"}, true
		case "beta":
			return labels.Set{"kubernetes.io/metadata.name": "beta", "team": "b"}, true
		}
		return nil, false
	})
	p := New(l, ns, ExternalServices{})
	for _, tc := range []struct {
		namespace, ref string
		allowed        bool
		tailnet        string
	}{
		{"beta", "open", true, "open"},
		{"beta", "all", true, "all"},
		{"alpha", "team", true, "team"},
		{"beta", "team", false, "team"},
		{"beta", "team.ts.net", false, "team"}, // by domain
		{"gamma", "team", false, "team"},       // labels unknown
		{"alpha", "listed", true, "listed"},
		{"beta", "listed.ts.net", false, "listed"},
		{"beta", "nosuch", true, ""},
	} {
		d := p.Decide(tc.namespace, tc.ref)
		if d.Allowed != tc.allowed || d.Tailnet != tc.tailnet {
			t.Errorf("Decide(%s, %s) = %+v, want allowed %v tailnet %q", tc.namespace, tc.ref, d, tc.allowed, tc.tailnet)
		}
	}
	// Standalone namespaces carry only kubernetes.io/metadata.name.
	sp := New(l, StandaloneNamespaces{}, ExternalServices{})
	if d := sp.Decide("alpha", "byname"); !d.Allowed {
		t.Errorf("standalone alpha on byname: %+v", d)
	}
	if d := sp.Decide("alpha", "team"); d.Allowed {
		t.Errorf("standalone alpha on team (label team=a unknown standalone) allowed: %+v", d)
	}
	var nilPolicy *Policy
	if d := nilPolicy.Decide("x", "team"); !d.Allowed {
		t.Errorf("nil policy refused")
	}
	c := AcceptedCondition(p.Decide("alpha", "team"), p.Decide("beta", "team"))
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonNotAllowedByTailnet || !Refused([]metav1.Condition{c}) {
		t.Errorf("AcceptedCondition = %+v", c)
	}
	if Refused([]metav1.Condition{AcceptedCondition(p.Decide("alpha", "team"))}) {
		t.Error("accepted condition reads as refused")
	}
}

func TestExternalServices(t *testing.T) {
	cidrs, err := ParseCIDRs([]string{"192.0.2.0/24", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCIDRs([]string{"nonsense"}); err == nil {
		t.Error("ParseCIDRs accepted nonsense")
	}
	for _, tc := range []struct {
		rule    ExternalServices
		address string
		ok      bool
	}{
		{ExternalServices{}, "192.0.2.1", false},
		{ExternalServices{Allowed: true}, "api.example.com", true},
		{ExternalServices{Allowed: true, CIDRs: cidrs}, "192.0.2.7", true},
		{ExternalServices{Allowed: true, CIDRs: cidrs}, "2001:db8::1", true},
		{ExternalServices{Allowed: true, CIDRs: cidrs}, "198.51.100.1", false},
		{ExternalServices{Allowed: true, CIDRs: cidrs}, "api.example.com", false},
	} {
		if err := tc.rule.Check(tc.address); (err == nil) != tc.ok {
			t.Errorf("%+v.Check(%s) = %v, want ok %v", tc.rule, tc.address, err, tc.ok)
		}
	}
}

// BenchmarkDecide is the cost each read adds per object: a tailnet named by domain under a
// selector (the slowest path), among 10 tailnets.
func BenchmarkDecide(b *testing.B) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for i := range 10 {
		tn := tailnet("t"+string(rune('a'+i)), string(rune('a'+i))+".ts.net", &v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}})
		if err := idx.Add(tn); err != nil {
			b.Fatal(err)
		}
	}
	ns := NamespacesFunc(func(string) (labels.Set, bool) { return labels.Set{"team": "a"}, true })
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &v1alpha1.TailscaleTailnet{}, 0, cache.Indexers{})
	for _, o := range idx.List() {
		if err := inf.GetStore().Add(o); err != nil {
			b.Fatal(err)
		}
	}
	indexed, err := NewForInformer(inf, ns, ExternalServices{})
	if err != nil {
		b.Fatal(err)
	}
	policies := map[string]*Policy{"scan": New(listers.NewTailscaleTailnetLister(idx), ns, ExternalServices{}), "indexed": indexed}
	for _, tc := range []struct{ policy, ref string }{{"scan", "tj"}, {"scan", "j.ts.net"}, {"indexed", "j.ts.net"}} {
		p := policies[tc.policy]
		b.Run(tc.policy+"/ref="+tc.ref, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !p.Decide("ns", tc.ref).Allowed {
					b.Fatal("refused")
				}
			}
		})
	}
}

// A domain several tailnets share resolves to the first by name, scanned or indexed.
func TestResolveSharedDomain(t *testing.T) {
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &v1alpha1.TailscaleTailnet{}, 0, cache.Indexers{})
	p, err := NewForInformer(inf, nil, ExternalServices{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"c-dup", "a-dup", "b-dup"} {
		if err := inf.GetStore().Add(tailnet(n, "dup.ts.net", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok := p.Resolve("dup.ts.net"); !ok || got.Name != "a-dup" {
		t.Errorf("indexed: %v %v, want a-dup", got, ok)
	}
	if got, ok := Resolve(listers.NewTailscaleTailnetLister(inf.GetIndexer()), "dup.ts.net"); !ok || got.Name != "a-dup" {
		t.Errorf("scanned: %v %v, want a-dup", got, ok)
	}
	if got, ok := p.Resolve("b-dup"); !ok || got.Name != "b-dup" {
		t.Errorf("by name: %v %v", got, ok)
	}
}

func TestProxyTagsFor(t *testing.T) {
	unset := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "corp"}, Spec: v1alpha1.TailscaleTailnetSpec{Tags: []string{"tag:k8s-operator"}}}
	bounded := &v1alpha1.TailscaleTailnet{ObjectMeta: metav1.ObjectMeta{Name: "corp"}, Spec: v1alpha1.TailscaleTailnetSpec{
		Tags: []string{"tag:k8s-operator"}, ProxyTags: []string{"tag:proxy", "tag:web", "tag:db"}}}
	for _, tc := range []struct {
		name      string
		t         *v1alpha1.TailscaleTailnet
		requested []string
		want      []string
		refused   string
	}{
		{name: "default bound, none asked", t: unset, want: []string{DefaultProxyTag}},
		{name: "default bound, the operator's tag asked", t: unset, requested: []string{"tag:k8s-operator"}, refused: "tags [tag:k8s-operator] are not among the proxy tags [tag:k8s]"},
		{name: "first proxy tag when none asked", t: bounded, want: []string{"tag:proxy"}},
		{name: "asked within the bound", t: bounded, requested: []string{"tag:web", "tag:db", "tag:web"}, want: []string{"tag:db", "tag:web"}},
		{name: "one outside", t: bounded, requested: []string{"tag:web", "tag:k8s-operator", "tag:admin"}, refused: "tags [tag:k8s-operator, tag:admin] are not among"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProxyTagsFor(tc.t, tc.requested)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.refused)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
