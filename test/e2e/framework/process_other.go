//go:build !linux

package framework

import "os/exec"

// killWithParent does nothing where the kernel cannot tie a child's life to its parent's.
func killWithParent(*exec.Cmd) {}
