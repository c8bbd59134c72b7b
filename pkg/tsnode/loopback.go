package tsnode

import "net/url"

// KeepOnLoopback applies, when controlURL is a loopback control server (a local test or
// development tailnet), the process-wide settings that keep tsnet's traffic on loopback: no log
// uploads, socket marks, port mapping or LAN addresses. It reports whether it did.
func KeepOnLoopback(controlURL string) bool {
	u, err := url.Parse(controlURL)
	if err != nil || !isLoopback(u.Hostname()) {
		return false
	}
	loopbackOnly()
	return true
}
