package envoygateway

import (
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// BackendRef is one backendRef of an HTTPRoute rule. Group and Kind empty mean a core Service.
type BackendRef struct {
	Group, Kind, Name string
	Port              int32
	Weight            *int32
}

// EndpointsRef and ServicesRef reference our kinds.
func EndpointsRef(name string, port int32) BackendRef {
	return BackendRef{Group: TailscaleEndpointsGVK.Group, Kind: TailscaleEndpointsGVK.Kind, Name: name, Port: port}
}

// ServicesRef references a TailscaleServices.
func ServicesRef(name string, port int32) BackendRef {
	return BackendRef{Group: TailscaleServicesGVK.Group, Kind: TailscaleServicesGVK.Kind, Name: name, Port: port}
}

// GatewayClassYAML is a GatewayClass of the harness's controller.
func GatewayClassYAML(name string) string {
	return mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "GatewayClass",
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"controllerName": ControllerName},
	})
}

// GatewayYAML is a Gateway of class className with one HTTP listener "http" on port.
func GatewayYAML(namespace, name, className string, port int32) string {
	return mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "Gateway",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec": map[string]any{
			"gatewayClassName": className,
			"listeners":        []any{map[string]any{"name": "http", "protocol": "HTTP", "port": port}},
		},
	})
}

// HTTPRouteYAML is an HTTPRoute attached to the Gateway namespace/gateway with one rule per
// element of rules (rule i matches the path prefix /r<i>).
func HTTPRouteYAML(namespace, name, gateway string, rules ...[]BackendRef) string {
	var rs []any
	for i, refs := range rules {
		var brs []any
		for _, ref := range refs {
			br := map[string]any{"name": ref.Name}
			if ref.Group != "" || ref.Kind != "" {
				br["group"], br["kind"] = ref.Group, ref.Kind
			}
			if ref.Port != 0 {
				br["port"] = ref.Port
			}
			if ref.Weight != nil {
				br["weight"] = *ref.Weight
			}
			brs = append(brs, br)
		}
		rs = append(rs, map[string]any{
			"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": fmt.Sprintf("/r%d", i)}}},
			"backendRefs": brs,
		})
	}
	return mustYAML(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "HTTPRoute",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"name": gateway}},
			"rules":      rs,
		},
	})
}

// ObjectYAML renders an API object (a typed object of pkg/apis, or a map) as YAML with the given
// apiVersion and kind, without status and without the null creationTimestamp of typed objects.
func ObjectYAML(apiVersion, kind string, obj any) (string, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return "", err
	}
	m["apiVersion"], m["kind"] = apiVersion, kind
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok && meta["creationTimestamp"] == nil {
		delete(meta, "creationTimestamp")
	}
	out, err := yaml.Marshal(m)
	return string(out), err
}

// JoinYAML joins documents into one multi-document YAML file.
func JoinYAML(docs ...string) string {
	var b strings.Builder
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.WriteString(strings.TrimRight(d, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

func mustYAML(v any) string {
	out, err := yaml.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(out)
}

// ClusterName is the name Envoy Gateway gives the cluster of rule i of an HTTPRoute, which the
// Cluster hook receives and the xDS holds.
func ClusterName(namespace, route string, rule int) string {
	return fmt.Sprintf("httproute/%s/%s/rule/%d", namespace, route, rule)
}
