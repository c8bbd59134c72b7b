package health

import (
	"net"
	"testing"
)

func TestIsTailnetAddress(t *testing.T) {
	for addr, want := range map[string]bool{
		"100.64.0.10:8080":             true,
		"100.64.0.0":                   true,
		"100.127.255.255:1":            true,
		"100.63.255.255:1":             false,
		"100.128.0.0:1":                false,
		"10.0.0.1:80":                  false,
		"127.0.0.1:80":                 false,
		"[fd7a:115c:a1e0::10]:443":     true,
		"[fd7a:115c:a1e0:ffff::1]:443": true,
		"[fd7a:115c:a1e1::1]:443":      false,
		"[::ffff:100.64.0.1]:80":       true,
		"[fd7a:115c:a1e0::1%eth0]:80":  true,
		"api.company.ts.net:443":       false,
		"":                             false,
	} {
		if got := IsTailnetAddress(addr); got != want {
			t.Errorf("IsTailnetAddress(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestTailnetDialerFor(t *testing.T) {
	tailnet, direct := &recordingDialer{}, &recordingDialer{}
	pick := TailnetDialerFor(tailnet, direct)
	if pick("100.100.1.1:80") != tailnet || pick("[fd7a:115c:a1e0::1]:80") != tailnet {
		t.Error("tailnet addresses not sent to the tailnet dialer")
	}
	if pick("192.0.2.1:80") != direct || pick("example.com:80") != direct {
		t.Error("other addresses not sent to the direct dialer")
	}
	if _, ok := TailnetDialerFor(tailnet, nil)("192.0.2.1:80").(*net.Dialer); !ok {
		t.Error("nil direct dialer: want a *net.Dialer")
	}
}
