package install

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/apitesting/roundtrip"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/fuzzer"
)

// TestRoundTripTypes fills every kind randomly and checks that internal -> v1alpha1 -> internal and
// JSON and protobuf-free encodings lose nothing.
func TestRoundTripTypes(t *testing.T) {
	roundtrip.RoundTripTestForAPIGroup(t, Install, fuzzer.Funcs)
}
