//go:build unix

package envoygateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockPath serialises Envoy Gateway instances of every test process on the machine.
var lockPath = filepath.Join(os.TempDir(), "tailscale-gateway-envoy-gateway.lock")

// lock takes the machine-wide lock of the harness, waiting at most timeout.
func lock(timeout time.Duration) (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("envoygateway: opening %s: %w", lockPath, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("envoygateway: locking %s: %w", lockPath, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("envoygateway: another test held %s (one Envoy Gateway at a time: its ports are fixed) for longer than %s", lockPath, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
