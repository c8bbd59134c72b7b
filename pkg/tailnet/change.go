package tailnet

import (
	"reflect"
	"slices"
	"time"
)

// Change reports what one poll (or a Remove) changed in a tailnet. Subscribers receive it
// right after the new Snapshot is published.
type Change struct {
	// Name is the TailscaleTailnet's name.
	Name string
	// Snapshot is the state after the change.
	Snapshot Snapshot
	// Online lists devices whose online state flipped.
	Online []DeviceChange
	// Added and Removed list node IDs of devices that appeared or disappeared.
	Added   []string
	Removed []string
	// DevicesChanged is true when any device was added, removed or changed in any field.
	DevicesChanged bool
	// TagsChanged is true when the tags of a device that was there before changed (what
	// tag-based discovery follows).
	TagsChanged bool
	// ServicesChanged is true when Services or their hosts changed.
	ServicesChanged bool
	// SyncChanged is true when Status.Synced or Status.Reason changed.
	SyncChanged bool
	// TailnetRemoved is true when the tailnet was removed from the Cache.
	TailnetRemoved bool
}

// DeviceChange is a device whose online state flipped.
type DeviceChange struct {
	NodeID string
	Name   string
	Online bool
	// LastSeen is when the device was last connected; zero while it is connected.
	LastSeen time.Time
}

// Empty reports whether c carries no change worth telling anyone.
func (c Change) Empty() bool {
	return !c.DevicesChanged && !c.ServicesChanged && !c.SyncChanged && !c.TailnetRemoved
}

// diff compares two snapshots of the same tailnet.
func diff(prev, next *Snapshot) Change {
	ch := Change{Name: next.Name, Snapshot: *next}
	ch.SyncChanged = prev.Status.Synced != next.Status.Synced || prev.Status.Reason != next.Status.Reason
	if prev.Generation == next.Generation {
		return ch
	}
	old := make(map[string]*Device, len(prev.Devices))
	for i := range prev.Devices {
		old[prev.Devices[i].NodeID] = &prev.Devices[i]
	}
	for i := range next.Devices {
		d := &next.Devices[i]
		p, ok := old[d.NodeID]
		if !ok {
			ch.Added = append(ch.Added, d.NodeID)
			continue
		}
		delete(old, d.NodeID)
		if p.Online != d.Online {
			ch.Online = append(ch.Online, DeviceChange{NodeID: d.NodeID, Name: d.Name, Online: d.Online, LastSeen: d.LastSeen})
		}
		if !reflect.DeepEqual(*p, *d) {
			ch.DevicesChanged = true
		}
		if !slices.Equal(p.Tags, d.Tags) {
			ch.TagsChanged = true
		}
	}
	for _, d := range prev.Devices {
		if _, gone := old[d.NodeID]; gone {
			ch.Removed = append(ch.Removed, d.NodeID)
		}
	}
	ch.DevicesChanged = ch.DevicesChanged || len(ch.Added) > 0 || len(ch.Removed) > 0
	ch.ServicesChanged = !reflect.DeepEqual(prev.Services, next.Services) ||
		!reflect.DeepEqual(prev.ServiceHosts, next.ServiceHosts)
	return ch
}
