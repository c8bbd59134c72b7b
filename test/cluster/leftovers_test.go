package cluster_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// leftovers lists what of the cluster is still on the machine after hack/cluster-down.sh: mounts
// under its state directory or of its network namespace, its interfaces, routes to its link-local
// /30, its cgroups, its network namespace and owner file. Only names of the cluster are looked at,
// so other work on the machine (other tests' namespaces and mounts) cannot make it fail.
func leftovers() ([]string, error) {
	state := filepath.Join(root, "_output", "cluster") + "/"
	var left []string
	mounts, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer mounts.Close()
	sc := bufio.NewScanner(mounts)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (strings.HasPrefix(fields[4], state) || fields[4] == "/run/netns/tsgw-node") {
			left = append(left, "mount "+fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, iface := range ifaces {
		if strings.HasPrefix(iface.Name, "tsgw") {
			left = append(left, "interface "+iface.Name)
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), "169.254.77.") {
				left = append(left, fmt.Sprintf("address %s on %s", a, iface.Name))
			}
		}
	}
	cgroups, err := filepath.Glob("/sys/fs/cgroup/*/tsgw-node")
	if err != nil {
		return nil, err
	}
	for _, c := range cgroups {
		left = append(left, "cgroup "+c)
	}
	for _, path := range []string{"/run/netns/tsgw-node", "/run/tsgw-node.owner"} {
		if _, err := os.Lstat(path); err == nil {
			left = append(left, path)
		}
	}
	return left, nil
}
