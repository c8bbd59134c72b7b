package accesscontrol

import (
	"reflect"
	"testing"
)

func TestDecide(t *testing.T) {
	rule := Rule{Allowed: []string{"tag:prod", "enterprise-user"}, Denied: []string{"tag:dev"}}
	for _, tc := range []struct {
		name string
		rule Rule
		tags []string
		want string
	}{
		{"allowed tag", rule, []string{"tag:prod"}, ""},
		{"allowed without the tag: prefix", rule, []string{"tag:enterprise-user"}, ""},
		{"denied wins over allowed", rule, []string{"tag:prod", "tag:dev"}, ReasonDeniedTag},
		{"no allowed tag", rule, []string{"tag:other"}, ReasonNotAllowed},
		{"untagged with allowed tags set", rule, nil, ReasonNotAllowed},
		{"untagged with denied tags only", Rule{Denied: []string{"tag:dev"}}, nil, ""},
		{"denied only", Rule{Denied: []string{"dev"}}, []string{"tag:dev"}, ReasonDeniedTag},
		{"empty rule", Rule{}, []string{"tag:anything"}, ""},
		{"prefix is not a match", Rule{Allowed: []string{"tag:pro"}}, []string{"tag:prod"}, ReasonNotAllowed},
	} {
		if got := tc.rule.Decide(tc.tags); got != tc.want {
			t.Errorf("%s: Decide(%v) = %q, want %q", tc.name, tc.tags, got, tc.want)
		}
	}
}

func TestAnnotationsRoundTrip(t *testing.T) {
	r := Rule{Allowed: []string{"tag:a", "b"}, Denied: []string{"tag:c"}}
	a := r.Annotations()
	if a[AnnotationAllowedTags] != "tag:a,b" || a[AnnotationDeniedTags] != "tag:c" {
		t.Fatalf("annotations %v", a)
	}
	if got := FromAnnotations(a); !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
	if got := FromAnnotations(map[string]string{AnnotationDeniedTags: " tag:x, ,"}); !got.Equal(Rule{Denied: []string{"tag:x"}}) || (Rule{}).Annotations()[AnnotationAllowedTags] != "" {
		t.Fatalf("spaces and empty entries: %+v", got)
	}
	if !(Rule{}).Empty() || r.Empty() {
		t.Fatal("Empty")
	}
}
