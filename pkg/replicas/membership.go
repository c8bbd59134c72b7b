package replicas

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// GroupLabel labels the member Leases of one installation; its value is the group.
const GroupLabel = "gateway.tailscale.com/replica-group"

// MembershipOptions configure a Membership.
type MembershipOptions struct {
	// Leases is the client of the Leases' namespace.
	Leases coordinationclient.LeaseInterface
	// Group names the installation: replicas with the same group share work.
	Group string
	// Identity is this replica's name among the members (its Lease's holder).
	Identity string
	// LeaseDuration is how long a member stays live without renewing.
	LeaseDuration time.Duration
	// RenewPeriod is the interval between renewals of the own Lease and reads of the others.
	RenewPeriod time.Duration
	// OnChange is called (on the Run goroutine) whenever the set of live members changes.
	OnChange func(members []string)
}

// Membership keeps this replica's Lease renewed and tracks the live members of its group.
type Membership struct {
	opts MembershipOptions
	now  func() time.Time

	mu       sync.RWMutex
	members  []string
	observed map[string]observation // by Lease name
}

// staleLeases is how many lease durations a member Lease may go unrenewed, by the observer's
// clock, before a member deletes it: the Lease of a replica that died without leaving (SIGKILL,
// a lost node) would otherwise stay forever.
const staleLeases = 10

// observation is when a Lease's renewal was last seen change, by this replica's clock.
type observation struct {
	version         string // resourceVersion and renewTime
	resourceVersion string
	at              time.Time
	holder          string
	duration        time.Duration
}

// NewMembership returns a Membership whose only member, until Run reads the Leases, is this
// replica.
func NewMembership(opts MembershipOptions) *Membership {
	return &Membership{opts: opts, now: time.Now, members: []string{opts.Identity}, observed: map[string]observation{}}
}

// Members returns the live members, sorted; this replica is always among them.
func (m *Membership) Members() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.members
}

// Owns reports whether this replica owns key among the live members.
func (m *Membership) Owns(key string) bool {
	return Owner(m.Members(), key) == m.opts.Identity
}

// Identity is this replica's member name.
func (m *Membership) Identity() string { return m.opts.Identity }

// leaseName is the name of a member's Lease.
func (m *Membership) leaseName() string { return m.opts.Group + "-" + m.opts.Identity }

// Run renews this replica's Lease and refreshes the members every RenewPeriod until ctx is done,
// then deletes the Lease so that the others take over its share at once. A replica that cannot
// reach the API keeps its last view (duplicate work rather than none); the others drop it when
// its Lease expires.
func (m *Membership) Run(ctx context.Context) {
	ticker := time.NewTicker(m.opts.RenewPeriod)
	defer ticker.Stop()
	for {
		if err := m.renew(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Renewing the replica Lease", "lease", m.leaseName())
		}
		if err := m.refresh(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Listing replica Leases", "group", m.opts.Group)
		}
		select {
		case <-ctx.Done():
			m.leave()
			return
		case <-ticker.C:
		}
	}
}

func (m *Membership) renew(ctx context.Context) error {
	now := metav1.NewMicroTime(m.now())
	lease, err := m.opts.Leases.Get(ctx, m.leaseName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = m.opts.Leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: m.leaseName(), Labels: map[string]string{GroupLabel: m.opts.Group}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(m.opts.Identity),
				LeaseDurationSeconds: ptr.To(int32(m.opts.LeaseDuration.Seconds())),
				AcquireTime:          &now,
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating Lease %s: %w", m.leaseName(), err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Lease %s: %w", m.leaseName(), err)
	}
	lease.Spec.HolderIdentity = ptr.To(m.opts.Identity)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(m.opts.LeaseDuration.Seconds()))
	lease.Spec.RenewTime = &now
	if _, err := m.opts.Leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renewing Lease %s: %w", m.leaseName(), err)
	}
	return nil
}

// refresh lists the group's Leases and recomputes the live members. A Lease is live while this
// replica has seen it change within its duration (as leader election judges a Lease: by the
// observer's clock, not by the renewTime another clock wrote).
func (m *Membership) refresh(ctx context.Context) error {
	list, err := m.opts.Leases.List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{GroupLabel: m.opts.Group}).String()})
	if err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	seen := map[string]bool{}
	for _, l := range list.Items {
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.LeaseDurationSeconds == nil {
			continue
		}
		seen[l.Name] = true
		version := l.ResourceVersion
		if l.Spec.RenewTime != nil {
			version += "/" + l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
		}
		o, ok := m.observed[l.Name]
		if !ok || o.version != version {
			m.observed[l.Name] = observation{version: version, resourceVersion: l.ResourceVersion, at: now,
				holder: *l.Spec.HolderIdentity, duration: time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second}
		}
	}
	for name := range m.observed {
		if !seen[name] {
			delete(m.observed, name)
		}
	}
	members := []string{m.opts.Identity}
	stale := map[string]string{} // Lease name → resourceVersion
	for name, o := range m.observed {
		if o.holder != m.opts.Identity && now.Sub(o.at) < o.duration && !slices.Contains(members, o.holder) {
			members = append(members, o.holder)
		}
		if o.holder != m.opts.Identity && now.Sub(o.at) >= staleLeases*o.duration {
			stale[name] = o.resourceVersion
		}
	}
	slices.Sort(members)
	changed := !slices.Equal(members, m.members)
	m.members = members
	m.mu.Unlock()
	m.deleteStale(ctx, stale)
	if changed {
		klog.InfoS("Replica members changed", "group", m.opts.Group, "members", members)
		if m.opts.OnChange != nil {
			m.opts.OnChange(members)
		}
	}
	return nil
}

// deleteStale deletes the Leases of members gone for staleLeases durations, each only if it is
// still the version that went unrenewed (a member that comes back keeps its Lease). Every live
// member may try; the first wins and the rest see NotFound or Conflict.
func (m *Membership) deleteStale(ctx context.Context, stale map[string]string) {
	for name, rv := range stale {
		err := m.opts.Leases.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		switch {
		case err == nil:
			klog.InfoS("Deleted the Lease of a replica gone for good", "lease", name, "after", staleLeases, "lease durations")
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			klog.ErrorS(err, "Deleting a stale replica Lease", "lease", name)
		}
	}
}

// leave deletes this replica's Lease, bounded in time: the server is stopping.
func (m *Membership) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.opts.Leases.Delete(ctx, m.leaseName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		klog.ErrorS(err, "Deleting the replica Lease", "lease", m.leaseName())
	}
}
