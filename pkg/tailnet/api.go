package tailnet

import "context"

// API is what the server needs from the Tailscale API for one tailnet. Client implements it;
// Cache.API returns one that shares the poller's client, rate limit and counters. Every error
// is an *Error with credentials scrubbed.
type API interface {
	// Devices lists the tailnet's devices with all fields.
	Devices(ctx context.Context) ([]Device, error)
	// Device gets one device by node ID (or legacy ID).
	Device(ctx context.Context, id string) (Device, error)
	// Services lists the tailnet's Tailscale Services.
	Services(ctx context.Context) ([]Service, error)
	// Service gets one Service by name ("svc:<name>").
	Service(ctx context.Context, name string) (Service, error)
	// CreateOrUpdateService creates svc or replaces it wholesale.
	CreateOrUpdateService(ctx context.Context, svc Service) error
	// DeleteService deletes a Service; deleting one that does not exist succeeds.
	DeleteService(ctx context.Context, name string) error
	// ServiceHosts lists the devices advertising a Service and their approval.
	ServiceHosts(ctx context.Context, name string) ([]ServiceHost, error)
	// ApproveServiceHost approves (or revokes approval of) a device hosting a Service.
	ApproveServiceHost(ctx context.Context, name, nodeID string, approved bool) error
	// CreateAuthKey creates an auth key, such as one for the prober's tsnet node.
	CreateAuthKey(ctx context.Context, opts AuthKeyOptions) (AuthKey, error)
	// AuthKeyInfo gets what the API says of an auth key (never the key itself); a deleted key
	// is an IsNotFound error.
	AuthKeyInfo(ctx context.Context, id string) (AuthKeyInfo, error)
	// DeleteAuthKey revokes an auth key; deleting one that does not exist succeeds. Devices
	// that joined with it stay.
	DeleteAuthKey(ctx context.Context, id string) error
	// DeleteDevice removes a device (by node ID) from the tailnet: it leaves its peers'
	// netmaps and must join again with a new key. Deleting one that does not exist succeeds.
	DeleteDevice(ctx context.Context, id string) error
}
