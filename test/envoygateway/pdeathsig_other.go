//go:build unix && !linux

package envoygateway

import "os/exec"

func setPdeathsig(*exec.Cmd) {}
