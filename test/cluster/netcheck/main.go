// Command netcheck is the client and server of the cluster suite's traffic tests (test/cluster).
// The project's images are distroless (no shell, no curl), so the suite's pods run this instead;
// hack/images.sh test builds it into the image <REGISTRY>/netcheck:<TAG>.
//
//	netcheck serve [-addr :8080]        answers every HTTP request with "netcheck <hostname>\n"
//	netcheck get [-timeout 10s] URL...  prints the bodies of a GET of each URL, in order; exits
//	                                    non-zero at the first that is not 200
//	netcheck load [-rate 50] [-duration 40s] URL
//	                                    opens rate new connections/s to URL's host and port for
//	                                    duration, one GET each, and prints what happened as JSON
//	                                    (churn.Paced: failures counted by kind, not an exit status)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/test/churn"
)

// Banner is the text serve answers with, followed by the host name.
const Banner = "netcheck"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		addr := fs.String("addr", ":8080", "address to listen on")
		_ = fs.Parse(os.Args[2:])
		err = serve(*addr)
	case "get":
		fs := flag.NewFlagSet("get", flag.ExitOnError)
		timeout := fs.Duration("timeout", 10*time.Second, "deadline of each whole request")
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() == 0 {
			usage()
		}
		for _, u := range fs.Args() {
			if err = get(u, *timeout, os.Stdout); err != nil {
				break
			}
		}
	case "load":
		fs := flag.NewFlagSet("load", flag.ExitOnError)
		rate := fs.Int("rate", 50, "new connections per second")
		duration := fs.Duration("duration", 40*time.Second, "how long to open new connections")
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		err = load(fs.Arg(0), *rate, *duration, os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netcheck:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: netcheck serve [-addr :8080] | netcheck get [-timeout 10s] URL... | netcheck load [-rate 50] [-duration 40s] URL")
	os.Exit(2)
}

// serve answers every request with the banner and the host name (a pod's name) until SIGTERM.
func serve(addr string) error {
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("host name: %w", err)
	}
	body := []byte(Banner + " " + host + "\n")
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(body)
		}),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// get writes the body of a GET of url to w; a status other than 200 is an error.
func get(url string, timeout time.Duration, w io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the body of %s: %w", url, err)
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// load opens rate new connections per second to rawURL's host and port for duration, one GET
// each (churn.RunPaced), and writes the result to w as JSON.
func load(rawURL string, rate int, duration time.Duration, w io.Writer) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Hostname() == "" {
		return fmt.Errorf("url %q: want http://host[:port]/", rawURL)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	var d net.Dialer
	res := churn.RunPaced(context.Background(), rate, duration, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
	return json.NewEncoder(w).Encode(res)
}
