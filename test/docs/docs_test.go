package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// helpFlags runs each of our commands with its help flag and returns the flags it lists.
func helpFlags(t *testing.T) Flags {
	t.Helper()
	dir := binaries(t)
	flags := Flags{}
	for _, name := range commands {
		// Go's flag package prints -h to stderr; pflag and cobra print --help to stdout.
		out, err := exec.Command(filepath.Join(dir, name), "-h").CombinedOutput()
		if err != nil {
			if out2, err2 := exec.Command(filepath.Join(dir, name), "--help").CombinedOutput(); err2 == nil {
				out, err = out2, nil
			}
		}
		fs := parseHelp(string(out))
		if len(fs) == 0 {
			t.Fatalf("%s -h listed no flags (%v):\n%s", name, err, out)
		}
		flags[name] = fs
	}
	return flags
}

// TestDocsStayTrue checks README.md and docs/: every relative link and anchor resolves, every
// make target exists, every flag shown for our commands is registered, every path exists.
func TestDocsStayTrue(t *testing.T) {
	root := repoRoot(t)
	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	flags := helpFlags(t)
	for _, want := range []string{"standalone", "proxy-image", "version"} {
		if !flags["tailscale-gateway-apiserver"][want] {
			t.Fatalf("tailscale-gateway-apiserver's help does not list --%s: parsing the help output failed", want)
		}
	}
	problems, err := Check(root, files, flags)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestCheckFindsBrokenDocs runs the checks on a fixture with one break of each kind, and on the
// same fixture repaired.
func TestCheckFindsBrokenDocs(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Makefile", ".PHONY: run\nrun: build\n\tgo run ./cmd/x\nVAR := 1\nbuild:\n\tgo build ./...\n")
	write("pkg/real/x.go", "package real\n")
	write("docs/guide.md", "# Guide\n\n## Set up `make run`\n\n## Set up `make run`\n\n```sh\n# Not a heading\n```\n")
	flags := Flags{"tool": {"real-flag": true, "v": true}}
	good := "# Project\n\n" +
		"[guide](docs/guide.md), [section](docs/guide.md#set-up-make-run), [again](docs/guide.md#set-up-make-run-1), [top](#project), [web](https://example.com/x).\n\n" +
		"Run `make run` and `make build`; `--real-flag` is ours; see `pkg/real/x.go` and `pkg/real`.\n\n" +
		"```sh\nmake run   # make nothing here\ngo test ./pkg/real/... ./...\nFOO=1 tool --real-flag=1 \\\n  -v 2 pkg/real\n_output/bin/tool --real-flag <placeholder>/x\n```\n"
	write("README.md", good)
	files := []string{"README.md", "docs/guide.md"}
	problems, err := Check(root, files, flags)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Fatalf("the good fixture has problems:\n%s", strings.Join(problems, "\n"))
	}

	broken := "# Project\n\n" +
		"[gone](docs/missing.md) and [bad anchor](docs/guide.md#not-a-heading) and [own](#nope) and [out](../elsewhere.md).\n\n" +
		"Run `make deploy`; `--no-such-flag` is shown; see `pkg/gone/file.go`.\n\n" +
		"```sh\nmake  release\ntool --real-flag \\\n  --removed-flag x\ngo test -run X ./pkg/gone/...\n```\n"
	write("README.md", broken)
	problems, err = Check(root, files, flags)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"README.md:3: link docs/missing.md: docs/missing.md does not exist",
		"README.md:3: link docs/guide.md#not-a-heading: docs/guide.md has no heading with anchor #not-a-heading",
		"README.md:3: link #nope: README.md has no heading with anchor #nope",
		"README.md:3: link ../elsewhere.md leaves the repository",
		"README.md:5: make deploy: no such Makefile target",
		"README.md:5: --no-such-flag: not a flag of any of our commands",
		"README.md:5: pkg/gone/file.go: no such file or directory in the repository",
		"README.md:8: make release: no such Makefile target",
		`README.md:9: tool --removed-flag: tool registers no flag "removed-flag"`,
		"README.md:11: pkg/gone: no such file or directory in the repository",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing problem %q in:\n%s", want, all)
		}
	}
	if len(problems) != 10 {
		t.Errorf("%d problems, want 10:\n%s", len(problems), all)
	}
}

func TestParseHelp(t *testing.T) {
	cobra := "Usage:\n  tool [flags]\n\nFlags:\n      --admission-control-config-file string   File with admission control configuration.\n  -h, --help   help for tool\n      --v Level   number for the log level verbosity\n"
	goflag := "Usage of tool:\n  -dir string\n    \tstate directory\n  -local-up-dir string\n    \twrite files for local-up\n"
	for _, tc := range []struct {
		out  string
		want []string
	}{
		{cobra, []string{"admission-control-config-file", "help", "v"}},
		{goflag, []string{"dir", "local-up-dir"}},
	} {
		got := parseHelp(tc.out)
		if len(got) != len(tc.want) {
			t.Errorf("parseHelp = %v, want %v", got, tc.want)
		}
		for _, f := range tc.want {
			if !got[f] {
				t.Errorf("parseHelp lacks %q: %v", f, got)
			}
		}
	}
}
