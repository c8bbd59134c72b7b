package apiserver

import (
	"k8s.io/apimachinery/pkg/runtime"
)

// withoutProtobuf offers every media type of s but protobuf, which the API's types have no
// encoding for. Offered, protobuf would be chosen for clients that prefer it and accept JSON too,
// such as kube-controller-manager's namespace controller, and their requests would fail with
// encoding errors instead of being answered in JSON.
type withoutProtobuf struct {
	runtime.NegotiatedSerializer
}

var _ runtime.NegotiatedSerializer = withoutProtobuf{}

// SupportedMediaTypes implements runtime.NegotiatedSerializer.
func (s withoutProtobuf) SupportedMediaTypes() []runtime.SerializerInfo {
	var infos []runtime.SerializerInfo
	for _, info := range s.NegotiatedSerializer.SupportedMediaTypes() {
		if info.MediaType != runtime.ContentTypeProtobuf {
			infos = append(infos, info)
		}
	}
	return infos
}
