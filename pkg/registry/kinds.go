package registry

import (
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/validation"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/livestatus"
)

// The kinds served by the registry, keyed by plural resource name in Kinds.
var (
	TailscaleTailnets = &Kind[gateway.TailscaleTailnet, *gateway.TailscaleTailnet]{
		Resource: "tailscaletailnets", Singular: "tailscaletailnet", ShortNames: []string{"tstn"},
		GroupVersion: v1alpha1.SchemeGroupVersion,
		NewList:      func() runtime.Object { return &gateway.TailscaleTailnetList{} },
		Spec:         func(o *gateway.TailscaleTailnet) any { return &o.Spec },
		Status:       func(o *gateway.TailscaleTailnet) any { return &o.Status },
		Fields: func(o *gateway.TailscaleTailnet) fields.Set {
			return fields.Set{"spec.tailnet": o.Spec.Tailnet}
		},
		StripLive:      func(o *gateway.TailscaleTailnet) { livestatus.StripTailnet(&o.Status) },
		Validate:       validation.ValidateTailscaleTailnet,
		ValidateUpdate: validation.ValidateTailscaleTailnetUpdate,
		Columns: []metav1.TableColumnDefinition{
			{Name: "Tailnet", Type: "string", Description: "The tailnet's name in the Tailscale API."},
			{Name: "Ready", Type: "string", Description: "The Ready condition."},
			{Name: "Devices", Type: "integer", Description: "Devices in the tailnet."},
			{Name: "Connected", Type: "integer", Priority: 1, Description: "Devices connected to the control plane."},
			{Name: "Tags", Type: "string", Priority: 1, Description: "Tags given to devices the gateway creates."},
		},
		Cells: func(o *gateway.TailscaleTailnet) []any {
			return []any{o.Spec.Tailnet, conditionStatus(o.Status.Conditions, "Ready"),
				int64(o.Status.DeviceCount), int64(o.Status.ConnectedDeviceCount), list(o.Spec.Tags)}
		},
	}

	TailscaleEndpoints = &Kind[gateway.TailscaleEndpoints, *gateway.TailscaleEndpoints]{
		Resource: "tailscaleendpoints", Singular: "tailscaleendpoints", ShortNames: []string{"tsep"},
		GroupVersion: v1alpha1.SchemeGroupVersion, Namespaced: true,
		NewList: func() runtime.Object { return &gateway.TailscaleEndpointsList{} },
		Spec:    func(o *gateway.TailscaleEndpoints) any { return &o.Spec },
		Status:  func(o *gateway.TailscaleEndpoints) any { return &o.Status },
		Fields: func(o *gateway.TailscaleEndpoints) fields.Set {
			return fields.Set{"spec.tailnet": o.Spec.Tailnet}
		},
		StripLive:      func(o *gateway.TailscaleEndpoints) { livestatus.StripEndpoints(&o.Status) },
		Validate:       validation.ValidateTailscaleEndpoints,
		ValidateUpdate: validation.ValidateTailscaleEndpointsUpdate,
		Columns: []metav1.TableColumnDefinition{
			{Name: "Tailnet", Type: "string", Description: "The tailnet of the endpoints."},
			{Name: "Endpoints", Type: "integer", Description: "Endpoints defined in the spec."},
			{Name: "Healthy", Type: "integer", Description: "Endpoints whose health check passes."},
			{Name: "Ready", Type: "string", Description: "The Ready condition."},
			{Name: "Addresses", Type: "string", Priority: 1, Description: "Tailnet addresses of the endpoints."},
			{Name: "Protocols", Type: "string", Priority: 1, Description: "Protocols of the endpoints."},
		},
		Cells: func(o *gateway.TailscaleEndpoints) []any {
			var addrs, protos []string
			for _, e := range o.Spec.Endpoints {
				addrs = append(addrs, e.TailscaleIP)
				protos = append(protos, string(e.Protocol))
			}
			return []any{o.Spec.Tailnet, int64(len(o.Spec.Endpoints)), int64(o.Status.HealthyEndpoints),
				conditionStatus(o.Status.Conditions, "Ready"), list(addrs), list(protos)}
		},
	}

	TailscaleServices = &Kind[gateway.TailscaleServices, *gateway.TailscaleServices]{
		Resource: "tailscaleservices", Singular: "tailscaleservices", ShortNames: []string{"tssvc"},
		GroupVersion: v1alpha1.SchemeGroupVersion, Namespaced: true,
		NewList: func() runtime.Object { return &gateway.TailscaleServicesList{} },
		Spec:    func(o *gateway.TailscaleServices) any { return &o.Spec },
		Status:  func(o *gateway.TailscaleServices) any { return &o.Status },
		Fields: func(o *gateway.TailscaleServices) fields.Set {
			name := ""
			if o.Spec.VIPService != nil {
				name = o.Spec.VIPService.Name
			}
			return fields.Set{"spec.vipService.name": name}
		},
		StripLive:      func(o *gateway.TailscaleServices) { livestatus.StripServices(&o.Status) },
		Validate:       validation.ValidateTailscaleServices,
		ValidateUpdate: validation.ValidateTailscaleServicesUpdate,
		Warnings:       validation.TailscaleServicesWarnings,
		Columns: []metav1.TableColumnDefinition{
			{Name: "VIP", Type: "string", Description: "The Tailscale VIP service."},
			{Name: "Strategy", Type: "string", Description: "The load balancing strategy."},
			{Name: "Backends", Type: "integer", Description: "Backends of the VIP service."},
			{Name: "Healthy", Type: "integer", Description: "Healthy backends of the VIP service."},
			{Name: "Ready", Type: "string", Description: "The Ready condition."},
			{Name: "Addresses", Type: "string", Priority: 1, Description: "Addresses of the VIP service."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "Selector of TailscaleEndpoints."},
		},
		Cells: func(o *gateway.TailscaleServices) []any {
			vip, strategy, selector := "", string(gateway.StrategyRoundRobin), ""
			if o.Spec.VIPService != nil {
				vip = o.Spec.VIPService.Name
			}
			if o.Spec.LoadBalancing != nil && o.Spec.LoadBalancing.Strategy != "" {
				strategy = string(o.Spec.LoadBalancing.Strategy)
			}
			if o.Spec.Selector != nil {
				selector = metav1.FormatLabelSelector(o.Spec.Selector)
			}
			var backends, healthy int64
			var addrs []string
			if s := o.Status.VIPServiceStatus; s != nil {
				backends, healthy, addrs = int64(s.BackendCount), int64(s.HealthyBackendCount), s.Addresses
			}
			return []any{vip, strategy, backends, healthy, conditionStatus(o.Status.Conditions, "Ready"), list(addrs), selector}
		},
	}

	TailscaleGateways = &Kind[gateway.TailscaleGateway, *gateway.TailscaleGateway]{
		Resource: "tailscalegateways", Singular: "tailscalegateway", ShortNames: []string{"tsgw"},
		GroupVersion: v1alpha1.SchemeGroupVersion, Namespaced: true,
		NewList: func() runtime.Object { return &gateway.TailscaleGatewayList{} },
		Spec:    func(o *gateway.TailscaleGateway) any { return &o.Spec },
		Status:  func(o *gateway.TailscaleGateway) any { return &o.Status },
		Fields: func(o *gateway.TailscaleGateway) fields.Set {
			return fields.Set{"spec.gatewayRef.name": o.Spec.GatewayRef.Name}
		},
		StripLive:      func(o *gateway.TailscaleGateway) { livestatus.StripGateway(&o.Status) },
		Validate:       validation.ValidateTailscaleGateway,
		ValidateUpdate: validation.ValidateTailscaleGatewayUpdate,
		Columns: []metav1.TableColumnDefinition{
			{Name: "Gateway", Type: "string", Description: "The Gateway API Gateway, namespace/name."},
			{Name: "Tailnets", Type: "integer", Description: "Tailnets connected to the gateway."},
			{Name: "Ready", Type: "string", Description: "The Ready condition."},
			{Name: "Tailnet Names", Type: "string", Priority: 1, Description: "Names of the tailnet configurations."},
		},
		Cells: func(o *gateway.TailscaleGateway) []any {
			ref := o.Spec.GatewayRef.Name
			if o.Spec.GatewayRef.Namespace != "" {
				ref = o.Spec.GatewayRef.Namespace + "/" + ref
			}
			var names []string
			for _, t := range o.Spec.Tailnets {
				names = append(names, t.Name)
			}
			return []any{ref, int64(len(o.Spec.Tailnets)), conditionStatus(o.Status.Conditions, "Ready"), list(names)}
		},
	}
)

// conditionStatus returns the status of a condition, or Unknown when it is absent.
func conditionStatus(conditions []metav1.Condition, conditionType string) string {
	if c := meta.FindStatusCondition(conditions, conditionType); c != nil {
		return string(c.Status)
	}
	return string(metav1.ConditionUnknown)
}

// list joins values for a table cell, showing <none> for an empty list.
func list(values []string) string {
	if len(values) == 0 {
		return "<none>"
	}
	return strings.Join(values, ",")
}
