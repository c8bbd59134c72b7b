//go:build !unix

package envoygateway

import (
	"errors"
	"time"
)

// lock: the harness serialises instances with flock(2), which only Unix has.
func lock(time.Duration) (func(), error) {
	return nil, errors.New("envoygateway: the harness runs on Unix only")
}
