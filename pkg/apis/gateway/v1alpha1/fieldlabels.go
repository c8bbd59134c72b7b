package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
)

// SelectableFields lists, per kind, the field labels accepted by field selectors besides
// metadata.name and metadata.namespace.
var SelectableFields = map[string][]string{
	"TailscaleTailnet":   {"spec.tailnet"},
	"TailscaleEndpoints": {"spec.tailnet"},
	"TailscaleServices":  {"spec.vipService.name"},
	"TailscaleGateway":   {"spec.gatewayRef.name"},
}

func addFieldLabelConversions(scheme *runtime.Scheme) error {
	for kind, extra := range SelectableFields {
		allowed := map[string]bool{"metadata.name": true, "metadata.namespace": true}
		for _, f := range extra {
			allowed[f] = true
		}
		err := scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind(kind),
			func(label, value string) (string, string, error) {
				if !allowed[label] {
					return "", "", fmt.Errorf("field label %q not supported for %s", label, kind)
				}
				return label, value, nil
			})
		if err != nil {
			return err
		}
	}
	return nil
}
