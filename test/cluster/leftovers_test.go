package cluster_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// leftovers lists what of the cluster is still on the machine after hack/cluster-down.sh: mounts
// under its state directory or of its network namespace, its interfaces, routes to its link-local
// /30, its cgroups, its network namespace and owner file, and kube-router's ipsets and chains in the
// host's network namespace (it must only ever make them in the node's). Only names of the cluster are looked at,
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
	enforcer, err := enforcerLeftovers()
	return append(left, enforcer...), err
}

// kubeRouterPrefixes begin the names of the ipsets and iptables chains kube-router's network
// policy controller makes.
var kubeRouterPrefixes = []string{"KUBE-SRC-", "KUBE-DST-", "KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-"}

// enforcerLeftovers lists kube-router's ipsets and filter chains in this process's (the host's)
// network namespace.
func enforcerLeftovers() ([]string, error) {
	var left []string
	for _, list := range []struct {
		what string
		argv []string
	}{{"ipset", []string{"ipset", "list", "-n"}}, {"iptables chain", []string{"iptables-save", "-t", "filter"}}} {
		if _, err := exec.LookPath(list.argv[0]); err != nil {
			continue // never installed: nothing of the enforcer can be there
		}
		out, err := exec.Command(list.argv[0], list.argv[1:]...).Output()
		if err != nil {
			return left, fmt.Errorf("%s: %w", strings.Join(list.argv, " "), err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			name := strings.TrimPrefix(line, ":")
			for _, prefix := range kubeRouterPrefixes {
				if strings.HasPrefix(name, prefix) {
					left = append(left, list.what+" "+strings.Fields(name)[0])
				}
			}
		}
	}
	return left, nil
}
