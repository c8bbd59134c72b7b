package examples

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	generatedopenapi "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/openapi"
)

// TestRequiredFieldsAreRequired checks the "Required" column of the API reference (the OpenAPI
// schema's required fields) against validation: removing a field the schema marks required from
// any example object that has it must make validation fail on that field.
func TestRequiredFieldsAreRequired(t *testing.T) {
	defs := generatedopenapi.GetOpenAPIDefinitions(func(path string) spec.Ref { return spec.MustCreateRef(path) })
	prefix := strings.TrimSuffix(v1alpha1.TailscaleTailnet{}.OpenAPIModelName(), "TailscaleTailnet")
	scheme, decoder := newScheme(t)

	// Every required property of this API's types, and those some example exercised.
	all, covered := map[string]bool{}, map[string]bool{}
	for name, def := range defs {
		if strings.HasPrefix(name, prefix) {
			for _, r := range def.Schema.Required {
				all[strings.TrimPrefix(name, prefix)+"."+r] = true
			}
		}
	}

	for _, doc := range readDocuments(t) {
		js, err := utilyaml.ToJSON(doc.data)
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		var root map[string]any
		if err := json.Unmarshal(js, &root); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		kind, _ := root["kind"].(string)

		// check removes the required property prop of the object at path and validates.
		check := func(path *field.Path, typeName, prop string, remove func(), restore func()) {
			remove()
			defer restore()
			covered[typeName+"."+prop] = true
			data, err := json.Marshal(root)
			if err != nil {
				t.Fatal(err)
			}
			ex, err := decode(scheme, decoder, document{file: doc.file, index: doc.index, data: data})
			if err != nil {
				t.Errorf("%s without %s: %v", doc, path.Child(prop), err)
				return
			}
			errs, err := validate(ex.internal)
			if err != nil {
				t.Fatal(err)
			}
			want := path.Child(prop).String()
			for _, e := range errs {
				if e.Field == want || strings.HasPrefix(e.Field, want+".") || strings.HasPrefix(e.Field, want+"[") {
					return
				}
			}
			t.Errorf("%s: the reference marks %s.%s required, but validation accepts the object without %s (errors: %v)",
				doc, typeName, prop, want, errs.ToAggregate())
		}

		var walk func(v any, typeName string, path *field.Path)
		walk = func(v any, typeName string, path *field.Path) {
			obj, ok := v.(map[string]any)
			def, known := defs[prefix+typeName]
			if !ok || !known {
				return
			}
			for _, r := range def.Schema.Required {
				if val, present := obj[r]; present {
					check(path, typeName, r, func() { delete(obj, r) }, func() { obj[r] = val })
				}
			}
			for prop, ps := range def.Schema.Properties {
				child, present := obj[prop]
				if !present {
					continue
				}
				if ref := ps.Ref.String(); strings.HasPrefix(ref, prefix) {
					walk(child, strings.TrimPrefix(ref, prefix), path.Child(prop))
				}
				if ps.Items != nil && ps.Items.Schema != nil && strings.HasPrefix(ps.Items.Schema.Ref.String(), prefix) {
					if list, ok := child.([]any); ok {
						for i, item := range list {
							walk(item, strings.TrimPrefix(ps.Items.Schema.Ref.String(), prefix), path.Child(prop).Index(i))
						}
					}
				}
			}
		}
		spec, _ := root["spec"]
		walk(spec, kind+"Spec", field.NewPath("spec"))
	}

	var uncovered []string
	for r := range all {
		if !covered[r] && !strings.HasSuffix(r, "List.items") {
			uncovered = append(uncovered, r)
		}
	}
	sort.Strings(uncovered)
	if len(covered) == 0 {
		t.Fatal("no required field of any example was checked")
	}
	t.Log(fmt.Sprintf("checked %d required fields; not present in any example: %s", len(covered), strings.Join(uncovered, ", ")))
}
