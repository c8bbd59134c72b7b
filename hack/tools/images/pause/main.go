// Command pause is the cluster's pod sandbox process: it holds the pod's namespaces, reaps the
// zombies it inherits as PID 1 of a shared PID namespace, and exits on SIGINT or SIGTERM.
// hack/cluster-up.sh builds it into the image the kubelet and containerd use as the sandbox image,
// so no pause image is ever pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
