package tenancy

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GeneratedByGateway reports whether o is controlled (controller ownerReference) by a
// TailscaleGateway: the listener TailscaleServices pkg/controllers/tsgateway generates, whose
// externalServices point at the Envoy Service of the Gateway. Such externalServices are exempt
// from --allow-external-services: admission (pkg/admission/tenancy) lets only the server itself
// write externalServices on an object controlled by a TailscaleGateway, whatever the flag, so a
// user can neither forge one nor reach that exemption; everything else that dials
// externalServices (the proxy, live status) then honours them on such objects.
func GeneratedByGateway(o metav1.Object) bool {
	ref := metav1.GetControllerOfNoCopy(o)
	return ref != nil && ref.Kind == "TailscaleGateway" && strings.HasPrefix(ref.APIVersion, "gateway.tailscale.com/")
}
