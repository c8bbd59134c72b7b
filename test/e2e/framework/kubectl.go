package framework

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubectlTimeout bounds one kubectl command.
const kubectlTimeout = 2 * time.Minute

// Kubectl runs kubectl (from PATH) with kubeconfig and returns its combined output.
func (e *Environment) Kubectl(kubeconfig string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	cmd, err := e.KubectlCommand(ctx, kubeconfig, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// KubectlCommand returns a kubectl command with kubeconfig that the caller runs; ctx bounds it.
func (e *Environment) KubectlCommand(ctx context.Context, kubeconfig string, args ...string) (*exec.Cmd, error) {
	path, err := exec.LookPath("kubectl")
	if err != nil {
		return nil, errors.New("kubectl is not on PATH")
	}
	cmd := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	// A private discovery cache: discovery must come from this cluster, never from a stale run.
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(e.Dir, "kubectl-cache", filepath.Base(kubeconfig)))
	return cmd, nil
}

// TokenKubeconfig writes a kubeconfig named name for kube-apiserver with a bearer token (no
// credentials when token is empty) and returns its path.
func (e *Environment) TokenKubeconfig(name, token string) (string, error) {
	path := filepath.Join(e.Dir, name+".kubeconfig")
	return path, writeKubeconfig(path, e.KubeURL, e.clusterCA.CertFile, &clientcmdapi.AuthInfo{Token: token})
}
