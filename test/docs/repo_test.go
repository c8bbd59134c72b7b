package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyRepo runs hack/verify-repo.sh on this repository (it must pass) and on small git
// repositories that each break one rule (it must fail, naming the file).
func TestVerifyRepo(t *testing.T) {
	root := repoRoot(t)
	script := filepath.Join(root, "hack", "verify-repo.sh")
	if out, err := runVerifyRepo(script, root); err != nil {
		t.Fatalf("verify-repo.sh fails on the repository: %v\n%s", err, out)
	}

	big := make([]byte, 1024*1024+1)
	cases := []struct {
		name  string
		files map[string][]byte
		fails bool
		want  string
	}{
		{"clean", map[string][]byte{"a.go": []byte("package a\n"), "README.md": []byte("# a\n")}, false, ""},
		{"elf", map[string][]byte{"tool": append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 64)...)}, true, "tracked executable (ELF): tool"},
		{"large blob", map[string][]byte{"dump.bin": big}, true, "over 1 MiB that is not Go source or test data: dump.bin"},
		{"large Go source", map[string][]byte{"big.go": big}, false, ""},
		{"large test data", map[string][]byte{"pkg/x/testdata/corpus": big}, false, ""},
		{"shared reference", map[string][]byte{"doc.md": []byte("see ../" + "shared/spec/\n")}, true, "doc.md:1:"},
		{"machine path", map[string][]byte{"x_test.go": []byte("// from /" + "work/shared/spec\n")}, true, "x_test.go:1:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			git(t, dir, "init", "-q")
			for name, data := range tc.files {
				p := filepath.Join(dir, filepath.FromSlash(name))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			git(t, dir, "add", "-A")
			out, err := runVerifyRepo(script, dir)
			if tc.fails != (err != nil) {
				t.Fatalf("fails = %v, want %v:\n%s", err != nil, tc.fails, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output does not contain %q:\n%s", tc.want, out)
			}
		})
	}
}

func runVerifyRepo(script, dir string) (string, error) {
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "REPO="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// repoRoot is the repository's top directory: two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}
