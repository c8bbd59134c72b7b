// Package gvstack reaches the gVisor network stack under a tsnet node, for what tsnet does not
// offer: choosing a connection's local port (pkg/tsnode) and closing a node that holds many
// connections without hanging.
package gvstack

import (
	"errors"
	"reflect"
	"unsafe"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"tailscale.com/tsnet"
	"tailscale.com/wgengine/netstack"
)

// Of returns the gVisor stack of srv's netstack. tailscale.com v1.102.5 does not export
// it (netstack.Impl keeps it in the unexported field ipstack), so it is read by reflection;
// a version that renames the field makes this an error, not a crash, and the tests of its users fail.
func Of(srv *tsnet.Server) (*stack.Stack, error) {
	ns, _ := srv.Sys().Netstack.GetOK()
	impl, ok := ns.(*netstack.Impl)
	if !ok || impl == nil {
		return nil, errors.New("the node has no userspace network stack")
	}
	f := reflect.ValueOf(impl).Elem().FieldByName("ipstack")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*stack.Stack]() {
		return nil, errors.New("tailscale.com's netstack.Impl has no ipstack field of type *stack.Stack")
	}
	st := *(**stack.Stack)(unsafe.Pointer(f.UnsafeAddr()))
	if st == nil {
		return nil, errors.New("the node's network stack is not created yet")
	}
	return st, nil
}

// Close closes srv without hanging on its open connections. tsnet's Server.Close stops the
// netstack's outbound packet loop before it closes the gVisor stack, whose Close then resets
// every connection left: past 512 resets (the outbound queue's size) the writer blocks for
// ever. Aborting the endpoints first, while the loop still drains the queue, leaves the stack
// nothing to reset.
func Close(srv *tsnet.Server) error {
	if st, err := Of(srv); err == nil {
		for _, ep := range st.RegisteredEndpoints() {
			ep.Abort()
		}
	}
	return srv.Close()
}
