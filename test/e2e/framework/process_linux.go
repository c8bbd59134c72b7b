package framework

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the kernel kill cmd when the test process dies, so no server outlives a
// crashed or killed test.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
