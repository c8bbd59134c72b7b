package version

import (
	"strings"
	"testing"
)

func TestMajorMinor(t *testing.T) {
	for v, want := range map[string][2]string{
		"v1.2.3":                  {"1", "2"},
		"v0.1.0-3-g69ab1e3-dirty": {"0", "1"},
		"v2.10":                   {"2", "10"},
		"69ab1e3":                 {"", ""},
		"69ab1e3-dirty":           {"", ""},
		"v1":                      {"", ""},
		"vx.y.z":                  {"", ""},
		"":                        {"", ""},
	} {
		major, minor := majorMinor(v)
		if major != want[0] || minor != want[1] {
			t.Errorf("majorMinor(%q) = %q, %q; want %q, %q", v, major, minor, want[0], want[1])
		}
	}
}

func TestGetReportsTheLinkedVersion(t *testing.T) {
	defer func(v, c, d string) { gitVersion, gitCommit, buildDate = v, c, d }(gitVersion, gitCommit, buildDate)
	gitVersion, gitCommit, buildDate = "v1.4.0-2-gabcdef0-dirty", "abcdef0123", "2026-12-07T18:00:00Z"
	i := Get()
	if i.GitVersion != gitVersion || i.GitCommit != gitCommit || i.BuildDate != buildDate ||
		i.Major != "1" || i.Minor != "4" || i.GitTreeState != "dirty" || i.GoVersion == "" || i.Platform == "" {
		t.Fatalf("Get() = %+v", i)
	}
	if s := String("tool"); !strings.HasPrefix(s, "tool v1.4.0-2-gabcdef0-dirty (commit abcdef0123, built 2026-12-07T18:00:00Z, go") {
		t.Fatalf("String = %q", s)
	}
}
