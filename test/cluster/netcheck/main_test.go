package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("netcheck pod-1\n"))
	}))
	defer srv.Close()

	var out bytes.Buffer
	if err := get(srv.URL+"/", 5*time.Second, &out); err != nil || out.String() != "netcheck pod-1\n" {
		t.Errorf("get: %q, %v", out.String(), err)
	}
	if err := get(srv.URL+"/fail", 5*time.Second, &bytes.Buffer{}); err == nil {
		t.Error("get of a 503: no error")
	}
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := get("http://"+addr+"/", 5*time.Second, &bytes.Buffer{}); err == nil {
		t.Error("get of a closed port: no error")
	}
}
