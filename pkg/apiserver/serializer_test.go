package apiserver

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestWithoutProtobufOffersJSONAndYAMLOnly(t *testing.T) {
	var types []string
	for _, info := range (withoutProtobuf{Codecs}).SupportedMediaTypes() {
		types = append(types, info.MediaType)
	}
	if slices.Contains(types, runtime.ContentTypeProtobuf) {
		t.Errorf("media types %v offer protobuf", types)
	}
	for _, want := range []string{runtime.ContentTypeJSON, runtime.ContentTypeYAML} {
		if !slices.Contains(types, want) {
			t.Errorf("media types %v lack %s", types, want)
		}
	}
}
