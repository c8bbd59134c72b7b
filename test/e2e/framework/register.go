package framework

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// register points the APIService at the in-process server and waits until it is Available.
//
// The Deployment of artifacts/deploy cannot run here (no kubelet), so the Service it selects is
// replaced by one of type ExternalName pointing at localhost: with --enable-aggregator-routing=false
// kube-apiserver resolves an ExternalName Service to https://<externalName>:<APIService port>,
// whereas endpoints may not hold loopback addresses. The APIService port is therefore the server's
// port. The caBundle is set the way README.md documents for installs without cert-manager.
func (e *Environment) register() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	services := e.Kube.CoreV1().Services(Namespace)
	if err := services.Delete(ctx, ServiceName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Service %s: %w", ServiceName, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: ServiceName, Namespace: Namespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"},
	}
	if _, err := services.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the ExternalName Service %s: %w", ServiceName, err)
	}
	port, err := e.Gateway.Port()
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{
		"caBundle": e.servingCA.CertPEM,
		"service":  map[string]any{"port": port},
	}})
	if err != nil {
		return err
	}
	if _, err := e.Aggregator.ApiregistrationV1().APIServices().Patch(ctx, APIServiceName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching APIService %s: %w", APIServiceName, err)
	}
	if err := e.WaitForAPIService(ctx, apiregistrationv1.ConditionTrue); err != nil {
		return err
	}
	// kubectl cached discovery while installing, before the group was served: drop it.
	return os.RemoveAll(filepath.Join(e.Dir, "kubectl-cache"))
}

// WaitForAPIService waits until the APIService's Available condition has status.
func (e *Environment) WaitForAPIService(ctx context.Context, status apiregistrationv1.ConditionStatus) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, startTimeout, true, func(ctx context.Context) (bool, error) {
		as, err := e.Aggregator.ApiregistrationV1().APIServices().Get(ctx, APIServiceName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range as.Status.Conditions {
			if c.Type == apiregistrationv1.Available {
				last = fmt.Sprintf("%s: %s", c.Reason, c.Message)
				return c.Status == status, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for APIService %s to be Available=%s (last: %s): %w", APIServiceName, status, last, err)
	}
	return nil
}

// waitForAggregatedRoles waits until kube-controller-manager has folded the rules of
// artifacts/deploy/aggregated-roles.yaml into the built-in admin, edit and view ClusterRoles.
func (e *Environment) waitForAggregatedRoles() error {
	var missing []string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, startTimeout, true, func(ctx context.Context) (bool, error) {
		missing = nil
		for _, name := range []string{"admin", "edit", "view"} {
			role, err := e.Kube.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.APIGroups, v1alpha1.GroupName) }) {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("ClusterRoles %s lack %s rules: %w", strings.Join(missing, ", "), v1alpha1.GroupName, err)
	}
	return nil
}
