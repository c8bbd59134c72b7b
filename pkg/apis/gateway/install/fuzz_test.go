package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/randfill"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/fuzzer"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
)

// examplesDir holds the manifests used as seeds.
const examplesDir = "../../../../examples"

func newCodecs() (*runtime.Scheme, serializer.CodecFactory) {
	s := runtime.NewScheme()
	Install(s)
	return s, serializer.NewCodecFactory(s)
}

// addExampleSeeds adds every document of examples/*.yaml, as JSON, to f.
func addExampleSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no examples under %s: %v", examplesDir, err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, doc := range bytes.Split(raw, []byte("\n---")) {
			js, err := utilyaml.ToJSON(doc)
			if err == nil && len(bytes.TrimSpace(js)) > 0 && !bytes.Equal(js, []byte("null")) {
				f.Add(js)
			}
		}
	}
}

// validate runs create and update validation of obj, an internal object of one of our kinds, and
// returns the errors; it reports false for other types.
func validate(obj runtime.Object) (field.ErrorList, bool) {
	switch o := obj.(type) {
	case *gateway.TailscaleTailnet:
		return append(validation.ValidateTailscaleTailnet(o), validation.ValidateTailscaleTailnetUpdate(o, o)...), true
	case *gateway.TailscaleEndpoints:
		return append(validation.ValidateTailscaleEndpoints(o), validation.ValidateTailscaleEndpointsUpdate(o, o)...), true
	case *gateway.TailscaleServices:
		return append(validation.ValidateTailscaleServices(o), validation.ValidateTailscaleServicesUpdate(o, o)...), true
	case *gateway.TailscaleGateway:
		return append(validation.ValidateTailscaleGateway(o), validation.ValidateTailscaleGatewayUpdate(o, o)...), true
	}
	return nil, false
}

// checkErrors fails unless every error names a field and a type.
func checkErrors(t *testing.T, errs field.ErrorList) {
	t.Helper()
	for _, e := range errs {
		if e == nil || e.Field == "" || e.Type == "" || !strings.HasPrefix(e.Field, "metadata") && !strings.HasPrefix(e.Field, "spec") {
			t.Fatalf("validation error without a field path: %#v", e)
		}
	}
}

// FuzzDecodeDefaultValidate decodes arbitrary bytes as the API server does (JSON/YAML of
// v1alpha1, defaulted, converted to the internal version) and validates what it accepts. Nothing
// may panic; validation errors carry field paths under metadata or spec; and what decodes is
// stable: encoding it as v1alpha1 and decoding again, twice, gives the same bytes and objects.
func FuzzDecodeDefaultValidate(f *testing.F) {
	addExampleSeeds(f)
	for _, seed := range []string{
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","metadata":{"name":"e","namespace":"n"},"spec":{"tailnet":"t","endpoints":[{"name":"a","tailscaleIP":"100.64.0.1","port":80,"protocol":"HTTP","healthCheck":{}}]}}`,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleServices","metadata":{"name":"s","namespace":"n"},"spec":{"loadBalancing":{"strategy":"failover","failoverConfig":{"failbackDelay":"-1s"}},"vipService":{"name":"svc:x","ports":["tcp:0"]}}}`,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleGateway","metadata":{"name":"g","namespace":"n"},"spec":{"gatewayRef":{"name":""},"tailnets":[{"name":"","tailscaleTailnetRef":{}}]}}`,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleTailnet","metadata":{"name":"t"},"spec":{"oauthSecretName":"x"}}`,
		`{"apiVersion":"gateway.tailscale.com/v1alpha1","kind":"TailscaleEndpoints","spec":null}`,
		`{"kind":"TailscaleEndpoints"}`, `{}`, `null`,
	} {
		f.Add([]byte(seed))
	}
	_, codecs := newCodecs()
	decoder := codecs.UniversalDecoder() // to the internal version, with defaulting
	encoder := codecs.LegacyCodec(v1alpha1.SchemeGroupVersion)
	f.Fuzz(func(t *testing.T, raw []byte) {
		obj, _, err := decoder.Decode(raw, nil, nil)
		if err != nil {
			return
		}
		errs, ours := validate(obj)
		if !ours {
			return // the scheme's meta types (Status, WatchEvent, ...) decode too
		}
		checkErrors(t, errs)

		var encoded [2][]byte
		var decoded [2]runtime.Object
		for i := range 2 {
			b, err := runtime.Encode(encoder, obj)
			if err != nil {
				t.Fatalf("encoding decoded %T: %v", obj, err)
			}
			if obj, _, err = decoder.Decode(b, nil, nil); err != nil {
				t.Fatalf("decoding our own encoding %s: %v", b, err)
			}
			encoded[i], decoded[i] = b, obj
		}
		if !bytes.Equal(encoded[0], encoded[1]) {
			t.Fatalf("encoding is not stable:\n%s\n%s", encoded[0], encoded[1])
		}
		if !equality.Semantic.DeepEqual(decoded[0], decoded[1]) {
			t.Fatalf("decoding is not stable: %#v\n%#v", decoded[0], decoded[1])
		}
		errs1, _ := validate(decoded[0])
		errs2, _ := validate(decoded[1])
		if errs1.ToAggregate().Error() != errs2.ToAggregate().Error() {
			t.Fatalf("validation of equal objects differs: %v / %v", errs1, errs2)
		}
	})
}

// FuzzFillDefaultValidate fills objects of every kind with arbitrary structure (nil pointers,
// empty and long lists, any strings), defaults them as v1alpha1 and validates them before and
// after defaulting, and validates updates between two such objects. Nothing may panic, and every
// error carries a field path.
func FuzzFillDefaultValidate(f *testing.F) {
	for _, seed := range []string{"", "\x00", "tailnet", strings.Repeat("\xff\x01", 64), strings.Repeat("gateway", 40)} {
		f.Add([]byte(seed))
	}
	scheme, codecs := newCodecs()
	funcs := fuzzer.Funcs(codecs)
	kinds := []func() (runtime.Object, runtime.Object){
		func() (runtime.Object, runtime.Object) {
			return &gateway.TailscaleTailnet{}, &v1alpha1.TailscaleTailnet{}
		},
		func() (runtime.Object, runtime.Object) {
			return &gateway.TailscaleEndpoints{}, &v1alpha1.TailscaleEndpoints{}
		},
		func() (runtime.Object, runtime.Object) {
			return &gateway.TailscaleServices{}, &v1alpha1.TailscaleServices{}
		},
		func() (runtime.Object, runtime.Object) {
			return &gateway.TailscaleGateway{}, &v1alpha1.TailscaleGateway{}
		},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		filler := randfill.NewFromGoFuzz(data).Funcs(funcs...).NilChance(0.3).NumElements(0, 4)
		for _, kind := range kinds {
			obj, versioned := kind()
			old, _ := kind()
			filler.Fill(obj)
			filler.Fill(old)
			errs, _ := validate(obj)
			checkErrors(t, errs)
			checkErrors(t, updateErrors(obj, old))

			if err := scheme.Convert(obj, versioned, nil); err != nil {
				t.Fatalf("converting %T to v1alpha1: %v", obj, err)
			}
			scheme.Default(versioned)
			defaulted, _ := kind()
			if err := scheme.Convert(versioned, defaulted, nil); err != nil {
				t.Fatalf("converting defaulted %T back: %v", versioned, err)
			}
			errs, _ = validate(defaulted)
			checkErrors(t, errs)
		}
	})
}

// updateErrors validates obj as an update of old, both of the same kind.
func updateErrors(obj, old runtime.Object) field.ErrorList {
	switch o := obj.(type) {
	case *gateway.TailscaleTailnet:
		return validation.ValidateTailscaleTailnetUpdate(o, old.(*gateway.TailscaleTailnet))
	case *gateway.TailscaleEndpoints:
		return validation.ValidateTailscaleEndpointsUpdate(o, old.(*gateway.TailscaleEndpoints))
	case *gateway.TailscaleServices:
		return validation.ValidateTailscaleServicesUpdate(o, old.(*gateway.TailscaleServices))
	case *gateway.TailscaleGateway:
		return validation.ValidateTailscaleGatewayUpdate(o, old.(*gateway.TailscaleGateway))
	}
	return nil
}
