package vipservice

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Annotations on Tailscale Services.
const (
	// OwnerAnnotation is the Tailscale Kubernetes operator's ownership annotation: JSON
	// {"ownerRefs":[{"operatorID":…,"resource":{"kind":…,"name":…,"uid":…}}]}. A Service is
	// changed or deleted only by the installations named in it.
	OwnerAnnotation = "tailscale.com/owner-references"
	// HeartbeatAnnotation records, per owner reference of this project ("<operatorID>/<uid>"),
	// when its installation last confirmed it (RFC 3339). It is written only on Services shared
	// by several references; a reference whose heartbeat is older than the consumer TTL belongs
	// to an installation that is gone and is removed by any other. References without a
	// heartbeat (e.g. the Tailscale operator's) never expire.
	HeartbeatAnnotation = "gateway.tailscale.com/owner-heartbeats"
	// LegacyHeartbeatAnnotation is HeartbeatAnnotation's key in earlier versions: read (the later
	// heartbeat of a reference wins), so that installations of both versions sharing a Service
	// keep each other's references alive, and dropped when this version writes the Service.
	LegacyHeartbeatAnnotation = "tailscale-gateway.com/owner-heartbeats"
)

// ownerAnnotationValue is the content of OwnerAnnotation, as the Tailscale operator writes it.
type ownerAnnotationValue struct {
	OwnerRefs []OwnerRef `json:"ownerRefs,omitempty"`
}

// OwnerRef identifies one installation (operator) and, optionally, its object managing a Service.
type OwnerRef struct {
	OperatorID string    `json:"operatorID,omitempty"`
	Resource   *Resource `json:"resource,omitempty"`
}

// Resource is the object behind an OwnerRef; informational apart from UID.
type Resource struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// key identifies a reference in the heartbeat annotation.
func (r OwnerRef) key() string {
	if r.Resource == nil {
		return r.OperatorID
	}
	return r.OperatorID + "/" + r.Resource.UID
}

// same reports whether r and o name the same installation and object.
func (r OwnerRef) same(o OwnerRef) bool {
	if r.OperatorID != o.OperatorID {
		return false
	}
	if r.Resource == nil || o.Resource == nil {
		return r.Resource == nil && o.Resource == nil
	}
	return r.Resource.UID == o.Resource.UID
}

// owners is the parsed ownership of a Service.
type owners struct {
	// present reports whether the Service carries the owner annotation at all.
	present    bool
	refs       []OwnerRef
	heartbeats map[string]time.Time
}

// parseOwners reads the ownership annotations of a Service's annotations.
func parseOwners(annotations map[string]string) (owners, error) {
	var o owners
	raw, ok := annotations[OwnerAnnotation]
	if !ok || raw == "" {
		return o, nil
	}
	var v ownerAnnotationValue
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return o, fmt.Errorf("parsing annotation %s: %w", OwnerAnnotation, err)
	}
	o.present, o.refs = len(v.OwnerRefs) > 0, v.OwnerRefs
	for _, key := range []string{HeartbeatAnnotation, LegacyHeartbeatAnnotation} {
		var m map[string]string
		if hb := annotations[key]; hb == "" || json.Unmarshal([]byte(hb), &m) != nil {
			continue
		}
		if o.heartbeats == nil {
			o.heartbeats = make(map[string]time.Time, len(m))
		}
		for k, s := range m {
			if t, err := time.Parse(time.RFC3339, s); err == nil && t.After(o.heartbeats[k]) {
				o.heartbeats[k] = t
			}
		}
	}
	return o, nil
}

// OwnerRefs returns the owner references of a Tailscale Service's annotations (the first is the
// owner), nil when it has none.
func OwnerRefs(annotations map[string]string) ([]OwnerRef, error) {
	o, err := parseOwners(annotations)
	return o.refs, err
}

// index returns the position of ref among the owners, or -1.
func (o owners) index(ref OwnerRef) int {
	return slices.IndexFunc(o.refs, ref.same)
}

// owner is the operator ID of the first reference: the installation that created the Service
// (or the oldest one left), whose spec the Service follows.
func (o owners) owner() string {
	if len(o.refs) == 0 {
		return ""
	}
	return o.refs[0].OperatorID
}

// consumers are the operator IDs of the other references, in order, without duplicates.
func (o owners) consumers() []string {
	var out []string
	for _, r := range o.refs[min(1, len(o.refs)):] {
		if r.OperatorID != o.owner() && !slices.Contains(out, r.OperatorID) {
			out = append(out, r.OperatorID)
		}
	}
	return out
}

// with returns a copy with ref added at the end (if absent).
func (o owners) with(ref OwnerRef) owners {
	out := o.clone()
	if out.index(ref) < 0 {
		out.refs = append(out.refs, ref)
	}
	out.present = true
	return out
}

// without returns a copy with ref and its heartbeat removed.
func (o owners) without(ref OwnerRef) owners {
	out := o.clone()
	if i := out.index(ref); i >= 0 {
		out.refs = slices.Delete(out.refs, i, i+1)
	}
	delete(out.heartbeats, ref.key())
	return out
}

// expired returns a copy without the references whose heartbeat is older than ttl at now,
// except keep, and reports which were dropped.
func (o owners) expired(keep OwnerRef, ttl time.Duration, now time.Time) (owners, []OwnerRef) {
	if ttl <= 0 {
		return o, nil
	}
	out := o.clone()
	var dropped []OwnerRef
	out.refs = slices.DeleteFunc(out.refs, func(r OwnerRef) bool {
		hb, ok := out.heartbeats[r.key()]
		if r.same(keep) || !ok || now.Sub(hb) <= ttl {
			return false
		}
		dropped = append(dropped, r)
		delete(out.heartbeats, r.key())
		return true
	})
	return out, dropped
}

func (o owners) clone() owners {
	return owners{present: o.present, refs: slices.Clone(o.refs), heartbeats: maps.Clone(o.heartbeats)}
}

// annotations returns base with the ownership annotations of o set (or removed when empty).
// The heartbeat of ref is renewed to now when the Service is shared and it is missing or older
// than renew; otherwise existing heartbeats are kept as they are, so that an unchanged Service
// costs no write.
func (o owners) annotations(base map[string]string, ref OwnerRef, now time.Time, renew time.Duration) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	delete(out, OwnerAnnotation)
	delete(out, HeartbeatAnnotation)
	delete(out, LegacyHeartbeatAnnotation)
	if len(o.refs) == 0 {
		return out
	}
	b, _ := json.Marshal(ownerAnnotationValue{OwnerRefs: o.refs})
	out[OwnerAnnotation] = string(b)

	hb := map[string]string{}
	for _, r := range o.refs {
		if t, ok := o.heartbeats[r.key()]; ok {
			hb[r.key()] = t.UTC().Format(time.RFC3339)
		}
	}
	if len(o.refs) > 1 && o.index(ref) >= 0 {
		if t, ok := o.heartbeats[ref.key()]; !ok || now.Sub(t) > renew {
			hb[ref.key()] = now.UTC().Truncate(time.Second).Format(time.RFC3339)
		}
	}
	if len(hb) > 0 {
		b, _ := json.Marshal(hb)
		out[HeartbeatAnnotation] = string(b)
	}
	return out
}
