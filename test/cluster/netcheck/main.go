// Command netcheck is the client and server of the cluster suite's traffic tests (test/cluster).
// The project's images are distroless (no shell, no curl), so the suite's pods run this instead;
// hack/images.sh test builds it into the image <REGISTRY>/netcheck:<TAG>.
//
//	netcheck serve [-addr :8080]        answers every HTTP request with "netcheck <hostname>\n"
//	netcheck get [-timeout 10s] URL     prints the body of a GET of URL; exits non-zero unless 200
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
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
		timeout := fs.Duration("timeout", 10*time.Second, "deadline of the whole request")
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		err = get(fs.Arg(0), *timeout, os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netcheck:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: netcheck serve [-addr :8080] | netcheck get [-timeout 10s] URL")
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
