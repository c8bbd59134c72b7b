package livestatus

import "slices"

// FailoverTier returns the failover tier of the backend (TailscaleEndpoints or external service)
// called name, given failoverConfig's primaryEndpoints and secondaryEndpoints: TierPrimary when it
// is named primary; TierSecondary when it is named secondary, or when secondaryEndpoints is empty
// (then every backend not named primary is secondary); "" when secondaryEndpoints is set and names
// neither: such a backend is in no tier and serves no traffic under the failover strategy. The
// extension's EDS and the proxy's plan both place backends with it.
func FailoverTier(primary, secondary []string, name string) string {
	switch {
	case slices.Contains(primary, name):
		return TierPrimary
	case len(secondary) == 0 || slices.Contains(secondary, name):
		return TierSecondary
	}
	return ""
}
