// Package examples checks that every manifest under examples/ is a valid object of the
// gateway.tailscale.com/v1alpha1 API: strictly decoded, defaulted, converted to the internal version
// and validated exactly as the API server does, and that the examples are consistent with each other
// (every tailnet they reference exists, no object is defined twice).
package examples

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/install"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/autoprovision"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tenancy"
)

// examplesDir is the examples directory relative to this package.
const examplesDir = "../../examples"

// document is one YAML document of an example file.
type document struct {
	file  string // base name of the file
	index int    // position of the document in the file, from 1
	data  []byte // the document as written
}

func (d document) String() string { return fmt.Sprintf("%s#%d", d.file, d.index) }

// example is a decoded, defaulted and converted object.
type example struct {
	doc      document
	gvk      schema.GroupVersionKind
	internal runtime.Object
	meta     metav1.Object
}

func (e example) String() string {
	id := e.gvk.Kind + " " + e.meta.GetName()
	if ns := e.meta.GetNamespace(); ns != "" {
		id = e.gvk.Kind + " " + ns + "/" + e.meta.GetName()
	}
	return e.doc.String() + " (" + id + ")"
}

func newScheme(t *testing.T) (*runtime.Scheme, runtime.Decoder) {
	t.Helper()
	scheme := runtime.NewScheme()
	install.Install(scheme)
	codecs := serializer.NewCodecFactory(scheme, serializer.EnableStrict)
	return scheme, codecs.UniversalDeserializer()
}

// readDocuments splits every *.yaml file of examplesDir into its non-empty documents.
func readDocuments(t *testing.T) []document {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.yaml files in %s", examplesDir)
	}
	sort.Strings(files)

	var docs []document
	for _, path := range files {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(path)
		if first, _, _ := strings.Cut(string(raw), "\n"); !strings.HasPrefix(first, "# ") {
			t.Errorf("%s: must start with a comment saying what it shows, got %q", name, first)
		}
		checkDocReferences(t, name, string(raw))
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		n, objects := 0, 0
		for {
			data, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: splitting documents: %v", name, err)
			}
			n++
			js, err := utilyaml.ToJSON(data)
			if err != nil {
				t.Errorf("%s#%d: invalid YAML: %v", name, n, err)
				continue
			}
			if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
				continue // only comments or whitespace
			}
			objects++
			docs = append(docs, document{file: name, index: n, data: data})
		}
		if objects == 0 {
			t.Errorf("%s: holds no object", name)
		}
	}
	return docs
}

// decode decodes a document strictly, checks its group and version, defaults it and converts it to
// the internal version.
func decode(scheme *runtime.Scheme, decoder runtime.Decoder, doc document) (example, error) {
	obj, gvk, err := decoder.Decode(doc.data, nil, nil)
	if err != nil {
		return example{}, fmt.Errorf("decode: %w", err)
	}
	if gvk.GroupVersion() != v1alpha1.SchemeGroupVersion {
		return example{}, fmt.Errorf("apiVersion %q, want %q", gvk.GroupVersion(), v1alpha1.SchemeGroupVersion)
	}
	scheme.Default(obj)
	internal, err := scheme.ConvertToVersion(obj, gateway.SchemeGroupVersion)
	if err != nil {
		return example{}, fmt.Errorf("convert to the internal version: %w", err)
	}
	meta, ok := internal.(metav1.Object)
	if !ok {
		return example{}, fmt.Errorf("%T has no object metadata", internal)
	}
	return example{doc: doc, gvk: *gvk, internal: internal, meta: meta}, nil
}

// validate runs the API's validation of the object's kind.
func validate(obj runtime.Object) (field.ErrorList, error) {
	switch o := obj.(type) {
	case *gateway.TailscaleTailnet:
		return validation.ValidateTailscaleTailnet(o), nil
	case *gateway.TailscaleEndpoints:
		return validation.ValidateTailscaleEndpoints(o), nil
	case *gateway.TailscaleServices:
		return validation.ValidateTailscaleServices(o), nil
	case *gateway.TailscaleGateway:
		return validation.ValidateTailscaleGateway(o), nil
	default:
		return nil, fmt.Errorf("unexpected kind %T in examples", obj)
	}
}

// loadExamples decodes and validates every example, reporting failures per document.
func loadExamples(t *testing.T) []example {
	t.Helper()
	scheme, decoder := newScheme(t)
	var examples []example
	for _, doc := range readDocuments(t) {
		ex, err := decode(scheme, decoder, doc)
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		examples = append(examples, ex)
	}
	return examples
}

func TestExamplesAreValid(t *testing.T) {
	examples := loadExamples(t)
	for _, ex := range examples {
		t.Run(ex.doc.String(), func(t *testing.T) {
			_, clusterScoped := ex.internal.(*gateway.TailscaleTailnet)
			switch ns := ex.meta.GetNamespace(); {
			case clusterScoped && ns != "":
				t.Errorf("%s: cluster-scoped kind with metadata.namespace %q", ex, ns)
			case !clusterScoped && ns == "":
				t.Errorf("%s: namespaced kind without metadata.namespace", ex)
			}
			errs, err := validate(ex.internal)
			if err != nil {
				t.Fatalf("%s: %v", ex, err)
			}
			for _, e := range errs {
				t.Errorf("%s: %v", ex, e)
			}
		})
	}
}

func TestExamplesAreUnique(t *testing.T) {
	seen := map[string]example{}
	for _, ex := range loadExamples(t) {
		key := ex.gvk.Kind + " " + ex.meta.GetNamespace() + "/" + ex.meta.GetName()
		if prev, ok := seen[key]; ok {
			t.Errorf("%s defines the same object as %s", ex, prev)
			continue
		}
		seen[key] = ex
	}
}

func TestExamplesReferenceExistingTailnets(t *testing.T) {
	examples := loadExamples(t)

	names := map[string]*gateway.TailscaleTailnet{}   // TailscaleTailnet metadata.name
	domains := map[string]*gateway.TailscaleTailnet{} // TailscaleTailnet spec.tailnet
	for _, ex := range examples {
		if tn, ok := ex.internal.(*gateway.TailscaleTailnet); ok {
			names[tn.Name] = tn
			if tn.Spec.Tailnet != "" && tn.Spec.Tailnet != gateway.DefaultTailnet {
				domains[tn.Spec.Tailnet] = tn
			}
		}
	}
	// A tailnet field holds a TailscaleTailnet name or a tailnet domain matched against
	// spec.tailnet; the proxy tags asked beside it must be within its spec.proxyTags, as
	// admission requires.
	checkTailnet := func(ex example, path, tailnet string, tags []string) {
		t.Helper()
		tn := names[tailnet]
		if tn == nil {
			tn = domains[tailnet]
		}
		if tn == nil {
			t.Errorf("%s: %s %q is neither the name nor the spec.tailnet of a TailscaleTailnet in %s",
				ex, path, tailnet, examplesDir)
			return
		}
		bound := tn.Spec.ProxyTags
		if len(bound) == 0 {
			bound = []string{tenancy.DefaultProxyTag}
		}
		for _, tag := range tags {
			if !slices.Contains(bound, tag) {
				t.Errorf("%s: tag %s beside %s is not among the proxyTags %v of TailscaleTailnet %s", ex, tag, path, bound, tn.Name)
			}
		}
	}

	for _, ex := range examples {
		switch o := ex.internal.(type) {
		case *gateway.TailscaleEndpoints:
			checkTailnet(ex, "spec.tailnet", o.Spec.Tailnet, o.Spec.Tags)
		case *gateway.TailscaleServices:
			if tmpl := o.Spec.EndpointTemplate; tmpl != nil {
				checkTailnet(ex, "spec.endpointTemplate.tailnet", tmpl.Tailnet, tmpl.Tags)
			}
		case *gateway.TailscaleGateway:
			for i, tc := range o.Spec.Tailnets {
				ref := tc.TailscaleTailnetRef
				path := fmt.Sprintf("spec.tailnets[%d].tailscaleTailnetRef", i)
				if ref.Kind != v1alpha1.TailscaleTailnetKind || ref.Group != gateway.GroupName {
					t.Errorf("%s: %s references %s.%s, want TailscaleTailnet.%s", ex, path, ref.Kind, ref.Group, gateway.GroupName)
				}
				if names[ref.Name] == nil {
					t.Errorf("%s: %s.name %q is not the name of a TailscaleTailnet in %s", ex, path, ref.Name, examplesDir)
				}
			}
		}
	}
}

// TestExamplesSelectTheirEndpoints checks the selector rules between TailscaleServices and
// TailscaleEndpoints: endpointTemplate.labels are matched by the selector, and every auto-provisioned
// TailscaleEndpoints is selected by a TailscaleServices of its namespace.
func TestExamplesSelectTheirEndpoints(t *testing.T) {
	examples := loadExamples(t)

	type service struct {
		ex       example
		selector labels.Selector
	}
	var services []service
	for _, ex := range examples {
		svc, ok := ex.internal.(*gateway.TailscaleServices)
		if !ok {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(svc.Spec.Selector)
		if err != nil {
			t.Errorf("%s: spec.selector: %v", ex, err)
			continue
		}
		if selector.Empty() {
			t.Errorf("%s: spec.selector selects everything", ex)
		}
		// The spec's own examples have such templates: they are accepted with a warning (the
		// validation package's), which the example must say it expects.
		if tmpl := svc.Spec.EndpointTemplate; tmpl != nil && !selector.Matches(labels.Set(tmpl.Labels)) {
			raw, err := os.ReadFile(filepath.Join(examplesDir, ex.doc.file))
			if err != nil {
				t.Fatal(err)
			}
			if validation.UnselectedTemplate(&svc.Spec) == "" {
				t.Errorf("%s: spec.endpointTemplate.labels %v are not matched by spec.selector %q, yet no warning", ex, tmpl.Labels, selector)
			}
			if !strings.Contains(string(raw), "EndpointTemplateSelected=False") {
				t.Errorf("%s: spec.endpointTemplate.labels %v are not matched by spec.selector %q: the file must say it expects the warning and EndpointTemplateSelected=False",
					ex, tmpl.Labels, selector)
			}
		}
		services = append(services, service{ex: ex, selector: selector})
	}

	for _, ex := range examples {
		eps, ok := ex.internal.(*gateway.TailscaleEndpoints)
		if !ok || !autoprovision.IsAutoProvisioned(eps) {
			continue
		}
		selected := false
		for _, svc := range services {
			if svc.ex.meta.GetNamespace() == eps.Namespace && svc.selector.Matches(labels.Set(eps.Labels)) {
				selected = true
			}
		}
		if !selected {
			t.Errorf("%s: auto-provisioned, but no TailscaleServices in namespace %q selects its labels %v", ex, eps.Namespace, eps.Labels)
		}
	}
}

// TestDecoderIsStrict makes sure the decoder used above rejects what the examples must not contain.
func TestDecoderIsStrict(t *testing.T) {
	scheme, decoder := newScheme(t)
	const header = "apiVersion: gateway.tailscale.com/v1alpha1\nkind: TailscaleTailnet\nmetadata:\n  name: t\n"
	for name, doc := range map[string]string{
		"unknown field":   header + "spec:\n  tailnet: company.ts.net\n  unknownField: true\n",
		"duplicate field": header + "spec:\n  tailnet: company.ts.net\n  tailnet: other.ts.net\n",
		"other group":     "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decode(scheme, decoder, document{file: name, index: 1, data: []byte(doc)}); err == nil {
				t.Errorf("decoded without error:\n%s", doc)
			}
		})
	}
	ok := header + "spec:\n  tailnet: company.ts.net\n"
	if _, err := decode(scheme, decoder, document{file: "valid", index: 1, data: []byte(ok)}); err != nil {
		t.Errorf("valid document: %v", err)
	}
}

// TestEndpointTemplatePorts checks both places of a template's ports: beside proxy, as the
// examples above write them, and under proxy, as
// objects stored before were written; setting both is rejected.
func TestEndpointTemplatePorts(t *testing.T) {
	scheme, decoder := newScheme(t)
	const head = `apiVersion: gateway.tailscale.com/v1alpha1
kind: TailscaleServices
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  endpointTemplate:
    tailnet: company.ts.net
    labels: {app: web}
    proxy:
      replicas: 2
`
	for name, tc := range map[string]struct {
		doc   string
		valid bool
	}{
		"beside proxy": {head + "    ports:\n      - port: 80\n        protocol: TCP\n", true},
		"under proxy":  {head + "      ports:\n        - port: 80\n          protocol: TCP\n", true},
		"both":         {head + "      ports:\n        - port: 80\n    ports:\n      - port: 443\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			ex, err := decode(scheme, decoder, document{file: name, index: 1, data: []byte(tc.doc)})
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			errs, err := validate(ex.internal)
			if err != nil {
				t.Fatal(err)
			}
			if (len(errs) == 0) != tc.valid {
				t.Fatalf("valid=%v, errors %v", tc.valid, errs)
			}
		})
	}
}

// docRefRE matches a reference to a Markdown page.
var docRefRE = regexp.MustCompile(`[A-Za-z0-9_./-]+\.md\b`)

// checkDocReferences fails unless an example cites at least one page of docs/ and every page it
// cites is a page of docs/ that exists.
func checkDocReferences(t *testing.T, name, raw string) {
	t.Helper()
	refs := docRefRE.FindAllString(raw, -1)
	if len(refs) == 0 {
		t.Errorf("%s: cites no page of docs/", name)
	}
	for _, ref := range refs {
		if !strings.HasPrefix(ref, "docs/") {
			t.Errorf("%s: cites %s, which is not a page of docs/", name, ref)
			continue
		}
		if _, err := os.Stat(filepath.Join(examplesDir, "..", filepath.FromSlash(ref))); err != nil {
			t.Errorf("%s: cites %s: %v", name, ref, err)
		}
	}
}
