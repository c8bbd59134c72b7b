package tenancy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// DefaultProxyTag is the bound on a tailnet's proxy tags when its spec.proxyTags is unset: the
// Tailscale Kubernetes operator's default tag for the proxies it creates.
const DefaultProxyTag = "tag:k8s"

// ProxyTags are the tags t's proxies may carry (spec.proxyTags, or DefaultProxyTag).
func ProxyTags(t *v1alpha1.TailscaleTailnet) []string {
	if len(t.Spec.ProxyTags) == 0 {
		return []string{DefaultProxyTag}
	}
	return t.Spec.ProxyTags
}

// TagsOutside returns those of tags that t's proxies may not carry, in order.
func TagsOutside(t *v1alpha1.TailscaleTailnet, tags []string) []string {
	bound := ProxyTags(t)
	var out []string
	for _, tag := range tags {
		if !slices.Contains(bound, tag) {
			out = append(out, tag)
		}
	}
	return out
}

// ProxyTagsFor returns the tags a proxy of t asking for requested carries: requested (sorted,
// each once) when t permits all of them, the first of t's proxy tags when requested is empty,
// or an error naming the tags t does not permit.
func ProxyTagsFor(t *v1alpha1.TailscaleTailnet, requested []string) ([]string, error) {
	if len(requested) == 0 {
		return []string{ProxyTags(t)[0]}, nil
	}
	if out := TagsOutside(t, requested); len(out) > 0 {
		return nil, fmt.Errorf("tags [%s] are not among the proxy tags [%s] of TailscaleTailnet %s",
			strings.Join(out, ", "), strings.Join(ProxyTags(t), ", "), t.Name)
	}
	tags := slices.Clone(requested)
	slices.Sort(tags)
	return slices.Compact(tags), nil
}
