package tailnet

import (
	"context"
	"errors"
	"sync"
)

// apiHandle is a tailnet's API as the Cache hands it out: it builds the client on first use,
// rebuilds it after the API refuses the credentials, and counts calls.
type apiHandle struct {
	t *tailnetState

	mu      sync.Mutex
	api     API
	gen     uint64         // increases with every client built
	retired TransportStats // counters of clients already dropped
}

var _ API = (*apiHandle)(nil)

// get returns the current client and its generation, building it if needed.
func (h *apiHandle) get(ctx context.Context) (API, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.api != nil {
		return h.api, h.gen, nil
	}
	api, err := h.t.cache.newAPI(ctx, h.t.config())
	if err != nil {
		e := &Error{Op: "build client", Reason: ReasonCredentialsUnavailable, Message: newRedactor().redact(err.Error())}
		if errors.Is(err, ErrCredentialsNotFound) {
			e.cause = ErrCredentialsNotFound
		}
		return nil, 0, e
	}
	h.api = api
	h.gen++
	return api, h.gen, nil
}

// reset drops the client so the next call builds one with fresh credentials.
func (h *apiHandle) reset() { h.dropIf(0) }

// dropIf drops the client if it is of generation gen (or any client when gen is 0).
func (h *apiHandle) dropIf(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.api == nil || (gen != 0 && h.gen != gen) {
		return
	}
	if s, ok := h.api.(transportStatser); ok {
		h.retired = h.retired.add(s.Stats())
	}
	h.api = nil
}

func (h *apiHandle) httpStats() TransportStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.retired
	if st, ok := h.api.(transportStatser); ok {
		s = s.add(st.Stats())
	}
	return s
}

// call counts a call and runs fn with the client, dropping the client on 401/403.
func call[T any](ctx context.Context, h *apiHandle, fn func(API) (T, error)) (T, error) {
	h.t.count.apiCalls.Add(1)
	api, gen, err := h.get(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := fn(api)
	if err != nil && ReasonOf(err) == ReasonUnauthorized {
		h.dropIf(gen)
	}
	return v, err
}

// Devices implements API.
func (h *apiHandle) Devices(ctx context.Context) ([]Device, error) {
	return call(ctx, h, func(a API) ([]Device, error) { return a.Devices(ctx) })
}

// Device implements API.
func (h *apiHandle) Device(ctx context.Context, id string) (Device, error) {
	return call(ctx, h, func(a API) (Device, error) { return a.Device(ctx, id) })
}

// Services implements API.
func (h *apiHandle) Services(ctx context.Context) ([]Service, error) {
	return call(ctx, h, func(a API) ([]Service, error) { return a.Services(ctx) })
}

// Service implements API.
func (h *apiHandle) Service(ctx context.Context, name string) (Service, error) {
	return call(ctx, h, func(a API) (Service, error) { return a.Service(ctx, name) })
}

// CreateOrUpdateService implements API.
func (h *apiHandle) CreateOrUpdateService(ctx context.Context, svc Service) error {
	_, err := call(ctx, h, func(a API) (struct{}, error) { return struct{}{}, a.CreateOrUpdateService(ctx, svc) })
	return err
}

// DeleteService implements API.
func (h *apiHandle) DeleteService(ctx context.Context, name string) error {
	_, err := call(ctx, h, func(a API) (struct{}, error) { return struct{}{}, a.DeleteService(ctx, name) })
	return err
}

// ServiceHosts implements API.
func (h *apiHandle) ServiceHosts(ctx context.Context, name string) ([]ServiceHost, error) {
	return call(ctx, h, func(a API) ([]ServiceHost, error) { return a.ServiceHosts(ctx, name) })
}

// ApproveServiceHost implements API.
func (h *apiHandle) ApproveServiceHost(ctx context.Context, name, nodeID string, approved bool) error {
	_, err := call(ctx, h, func(a API) (struct{}, error) {
		return struct{}{}, a.ApproveServiceHost(ctx, name, nodeID, approved)
	})
	return err
}

// CreateAuthKey implements API.
func (h *apiHandle) CreateAuthKey(ctx context.Context, opts AuthKeyOptions) (AuthKey, error) {
	return call(ctx, h, func(a API) (AuthKey, error) { return a.CreateAuthKey(ctx, opts) })
}

// AuthKeyInfo implements API.
func (h *apiHandle) AuthKeyInfo(ctx context.Context, id string) (AuthKeyInfo, error) {
	return call(ctx, h, func(a API) (AuthKeyInfo, error) { return a.AuthKeyInfo(ctx, id) })
}

// DeleteAuthKey implements API.
func (h *apiHandle) DeleteAuthKey(ctx context.Context, id string) error {
	_, err := call(ctx, h, func(a API) (struct{}, error) { return struct{}{}, a.DeleteAuthKey(ctx, id) })
	return err
}

// DeleteDevice implements API.
func (h *apiHandle) DeleteDevice(ctx context.Context, id string) error {
	_, err := call(ctx, h, func(a API) (struct{}, error) { return struct{}{}, a.DeleteDevice(ctx, id) })
	return err
}
