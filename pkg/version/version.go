// Package version reports the version of tailscale-gateway's binaries. The release build sets it
// with the linker:
//
//	go build -ldflags "-X github.com/tailscale-gateway/tailscale-gateway/pkg/version.gitVersion=$(git describe --tags --always --dirty) \
//	  -X github.com/tailscale-gateway/tailscale-gateway/pkg/version.gitCommit=$(git rev-parse HEAD) \
//	  -X github.com/tailscale-gateway/tailscale-gateway/pkg/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// `make build` does this. A plain `go build` leaves gitVersion at its default and takes the commit
// and tree state from the VCS information the Go toolchain embeds.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	apimachineryversion "k8s.io/apimachinery/pkg/version"
)

// Set with -ldflags -X; see the package comment.
var (
	gitVersion = "v0.0.0-dev"
	gitCommit  = ""
	buildDate  = "1970-01-01T00:00:00Z"
)

// Get returns the version of the running binary.
func Get() apimachineryversion.Info {
	info := apimachineryversion.Info{
		GitVersion: gitVersion,
		GitCommit:  gitCommit,
		BuildDate:  buildDate,
		GoVersion:  runtime.Version(),
		Compiler:   runtime.Compiler,
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
	}
	info.Major, info.Minor = majorMinor(gitVersion)
	if strings.HasSuffix(gitVersion, "-dirty") {
		info.GitTreeState = "dirty"
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && info.GitCommit == "":
				info.GitCommit = s.Value
			case s.Key == "vcs.modified" && info.GitTreeState == "":
				info.GitTreeState = map[string]string{"true": "dirty", "false": "clean"}[s.Value]
			}
		}
	}
	return info
}

// String is the one line --version prints for the binary name.
func String(name string) string {
	i := Get()
	commit := i.GitCommit
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s, built %s, %s %s)", name, i.GitVersion, commit, i.BuildDate, i.GoVersion, i.Platform)
}

// majorMinor returns the major and minor numbers of a version "vX.Y..." and empty strings for
// anything else (e.g. the bare commit that git describe --always prints without a tag).
func majorMinor(v string) (string, string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if !strings.HasPrefix(v, "v") || len(parts) < 2 || !isNumber(parts[0]) {
		return "", ""
	}
	minor := parts[1]
	if i := strings.IndexAny(minor, "-+"); i >= 0 {
		minor = minor[:i]
	}
	if !isNumber(minor) {
		return "", ""
	}
	return parts[0], minor
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
