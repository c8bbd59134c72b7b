package proxydeploy

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Names of proxy objects, all in one namespace now, must differ across tenants (the same
// name in two namespaces, and names whose concatenations collide), stay DNS labels a Service
// and a StatefulSet accept, and stay readable.
func TestNamesAreUniqueAcrossTenantsAndDNSSafe(t *testing.T) {
	long := strings.Repeat("n", 63)
	cases := [][2]string{{"web", "backends"}, {"api", "backends"}, {"web-a", "b"}, {"web", "a-b"}, {"a", "b-web"},
		{long, long}, {"0ns", "1.dotted.name"}, {long, "x"}, {long, "y"}}
	seen := map[string][2]string{}
	for _, c := range cases {
		n := NamesFor(c[0], c[1])
		if prev, dup := seen[n.Base]; dup {
			t.Errorf("%v and %v share the name %s", prev, c, n.Base)
		}
		seen[n.Base] = c
		if errs := validation.IsDNS1035Label(n.Base); len(errs) > 0 {
			t.Errorf("%v: %s is no Service name: %v", c, n.Base, errs)
		}
		if len(n.Base) > maxBase {
			t.Errorf("%v: %s is longer than %d", c, n.Base, maxBase)
		}
		for _, s := range []string{n.StateSecret(10), n.AuthKeySecret(10)} {
			if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
				t.Errorf("%v: Secret %s: %v", c, s, errs)
			}
		}
	}
	if got := NamesFor("web", "backends").Base; !strings.HasPrefix(got, "ts-backends-web-") {
		t.Errorf("NamesFor(web, backends) = %s, want a readable ts-backends-web-<hash>", got)
	}
}

// Ownership is the labels: namespace, name and UID of the parent, and our managed-by label.
func TestIsKeptFor(t *testing.T) {
	obj := testEndpoints(Egress, 1)
	m := &metav1.ObjectMeta{Labels: ParentLabels(obj.Namespace, obj.Name, obj.UID)}
	if !IsKeptFor(m, obj) {
		t.Fatal("an object with the parent's labels is not kept for it")
	}
	for what, edit := range map[string]func(map[string]string){
		"another UID":       func(l map[string]string) { l[ParentUIDLabel] = "other" },
		"another namespace": func(l map[string]string) { l[ParentNamespaceLabel] = "api" },
		"another name":      func(l map[string]string) { l[ParentNameLabel] = "other" },
		"not managed by us": func(l map[string]string) { delete(l, ManagedByLabel) },
	} {
		l := ParentLabels(obj.Namespace, obj.Name, obj.UID)
		edit(l)
		if IsKeptFor(&metav1.ObjectMeta{Labels: l}, obj) {
			t.Errorf("%s: kept for the object", what)
		}
	}
}
