// Command check-rbac reads rendered manifests (multi-document YAML) on stdin and fails when a
// ClusterRole grants a write verb on one of the kinds the proxy controller writes only in the
// installation's namespace (security review finding 9): Secrets, StatefulSets, Roles,
// RoleBindings, ServiceAccounts, PodDisruptionBudgets, NetworkPolicies. hack/verify-chart.sh
// runs it on the chart's default rendering.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// namespaceOnly are the resources no ClusterRole may write.
var namespaceOnly = []string{"secrets", "statefulsets", "roles", "rolebindings", "serviceaccounts", "poddisruptionbudgets", "networkpolicies"}

var writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "*"}

func main() {
	bad, err := check(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "check-rbac:", err)
		os.Exit(2)
	}
	for _, b := range bad {
		fmt.Fprintln(os.Stderr, "check-rbac:", b)
	}
	if len(bad) > 0 {
		os.Exit(1)
	}
}

// check returns a line for each ClusterRole rule of r writing a namespaceOnly resource.
func check(r io.Reader) ([]string, error) {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var bad []string
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return bad, nil
		}
		if err != nil {
			return nil, err
		}
		var role rbacv1.ClusterRole
		if err := yaml.Unmarshal(doc, &role); err != nil {
			return nil, err
		}
		if role.Kind != "ClusterRole" {
			continue
		}
		for _, rule := range role.Rules {
			for _, res := range rule.Resources {
				if res != "*" && !slices.Contains(namespaceOnly, res) {
					continue
				}
				for _, v := range rule.Verbs {
					if slices.Contains(writeVerbs, v) {
						bad = append(bad, fmt.Sprintf("ClusterRole %s grants %s on %s cluster-wide", role.Name, v, res))
					}
				}
			}
		}
	}
}
