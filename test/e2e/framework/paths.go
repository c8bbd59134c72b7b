package framework

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

const modulePath = "github.com/tailscale-gateway/tailscale-gateway"

// RepoRoot returns the root of the repository: the nearest parent of the working directory whose
// go.mod declares the project's module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the working directory: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of " + modulePath + " above the working directory")
		}
		dir = parent
	}
}

// ToolPath returns the path of a binary that hack/build-tools.sh builds into _output/bin, or an
// error that says how to build it.
func ToolPath(root, name string) (string, error) {
	path := filepath.Join(root, "_output", "bin", name)
	if info, err := os.Stat(path); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s is missing: build it with `make tools` (hack/build-tools.sh); `make test` does so itself", path)
	}
	return path, nil
}
