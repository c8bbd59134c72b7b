package framework

import "path/filepath"

// startControllerManager runs the kube-controller-manager controllers the suite relies on:
// clusterrole-aggregation, which folds ClusterRoles labelled aggregate-to-admin/edit/view into
// admin, edit and view, and namespace, which deletes the content of deleted namespaces (through
// the aggregated API too) before it removes them, and garbage-collector-controller, which deletes
// objects (of the aggregated API too) whose ownerReferences name owners that are gone.
func startControllerManager(bin, dir, kubeconfig string) (*process, error) {
	return startProcess("kube-controller-manager", filepath.Join(dir, "kube-controller-manager.log"), bin,
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--controllers=clusterrole-aggregation,namespace,garbage-collector-controller",
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--v=1",
	)
}
