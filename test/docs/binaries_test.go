package docs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testVersion is linked into the binaries the tests build, as make build links git describe.
const testVersion = "v9.8.7-docs-test"

// commands are the binaries whose flags the documentation may show.
var commands = []string{"tailscale-gateway-apiserver", "tailscale-gateway-proxy", "tailnet-sim", "xds-watch"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the commands once per test run, with the version flags make build passes.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tsgw-docs-bin-")
		if buildErr != nil {
			return
		}
		pkgs := make([]string, len(commands))
		for i, c := range commands {
			pkgs[i] = "./cmd/" + c
		}
		ldflags := "-X github.com/tailscale-gateway/tailscale-gateway/pkg/version.gitVersion=" + testVersion +
			" -X github.com/tailscale-gateway/tailscale-gateway/pkg/version.gitCommit=0123abcd"
		cmd := exec.Command("go", append([]string{"build", "-ldflags", ldflags, "-o", binDir + "/"}, pkgs...)...)
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// TestVersionFlag checks that --version prints the version linked in with -ldflags -X.
func TestVersionFlag(t *testing.T) {
	dir := binaries(t)
	for _, name := range []string{"tailscale-gateway-apiserver", "tailscale-gateway-proxy"} {
		out, err := exec.Command(filepath.Join(dir, name), "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", name, err, out)
		}
		want := name + " " + testVersion + " (commit 0123abcd, built "
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("%s --version = %q, want it to start with %q", name, out, want)
		}
	}
}
