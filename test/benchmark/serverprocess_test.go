package benchmark

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/cmd/server"
	"github.com/tailscale-gateway/tailscale-gateway/test/integration/framework"
)

// The benchmark servers run in a child process, the test binary re-executed with serverEnv set
// to the mode, so that the server's memory (its heap, its embedded etcd) is measured apart from
// the benchmark client's, which decodes every object it lists. BENCH_IN_PROCESS=1 runs them in the
// benchmark process instead, as the whole-process figures of docs/performance.md were measured.
const (
	serverEnv    = "TSGW_BENCH_SERVER"
	inProcessEnv = "BENCH_IN_PROCESS"
)

// serverStats is what a server process reports of itself.
type serverStats struct {
	// RSSMiB and PeakRSSMiB are VmRSS and VmHWM read before the collection.
	RSSMiB, PeakRSSMiB float64
	// HeapMiB is the Go heap in use after a collection (runtime.MemStats.HeapAlloc): live data.
	HeapMiB float64
	// TotalAlloc and Mallocs are cumulative (runtime.MemStats).
	TotalAlloc, Mallocs uint64
}

// readStats reads this process's RSS, then collects garbage and reads its heap.
func readStats() (serverStats, error) {
	var st serverStats
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(fields[1], 64)
		switch {
		case err != nil:
		case fields[0] == "VmRSS:":
			st.RSSMiB = kb / 1024
		case fields[0] == "VmHWM:":
			st.PeakRSSMiB = kb / 1024
		}
	}
	if st.RSSMiB == 0 {
		return st, errors.New("VmRSS not found in /proc/self/status")
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapMiB = float64(ms.HeapAlloc) / (1 << 20)
	st.TotalAlloc, st.Mallocs = ms.TotalAlloc, ms.Mallocs
	return st, nil
}

// serve is the child process: it runs the server of mode (stored or live), writes its kubeconfig
// path as the first line of fd 3, then answers commands read from stdin on fd 3, one JSON line
// each, until stdin closes:
//
//	stats          the serverStats of this process
//	heap <path>    writes a heap profile (after a collection) to path
func serve(mode string) int {
	replies := os.NewFile(3, "replies")
	dir, err := os.MkdirTemp("", "tsgw-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := framework.StartServer(dir, func(o *server.Options) { configure(o, mode == "live") })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Stop()
	enc := json.NewEncoder(replies)
	if err := enc.Encode(s.Kubeconfig); err != nil {
		return 1
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		var reply any
		switch cmd {
		case "stats":
			st, err := readStats()
			if err != nil {
				reply = map[string]string{"error": err.Error()}
			} else {
				reply = st
			}
		case "heap":
			reply = map[string]string{}
			if err := writeHeapProfile(arg); err != nil {
				reply = map[string]string{"error": err.Error()}
			}
		default:
			reply = map[string]string{"error": fmt.Sprintf("unknown command %q", cmd)}
		}
		if err := enc.Encode(reply); err != nil {
			return 1
		}
	}
	return 0
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// serverProcess is a benchmark server running in a child process.
type serverProcess struct {
	cmd     *exec.Cmd
	log     string
	mu      sync.Mutex
	in      io.WriteCloser
	replies *json.Decoder
}

// startServerProcess re-executes this test binary as the server of one mode and returns it with
// the admin client configuration once the server is ready (the child waits for /readyz).
func startServerProcess(live bool) (*serverProcess, *rest.Config, error) {
	mode := "stored"
	if live {
		mode = "live"
	}
	logFile, err := os.CreateTemp("", "tsgw-bench-server-*.log")
	if err != nil {
		return nil, nil, err
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	p := &serverProcess{log: logFile.Name(), replies: json.NewDecoder(r)}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), serverEnv+"="+mode)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.ExtraFiles = []*os.File{w}
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, nil, err
	}
	if err := p.cmd.Start(); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("starting the server process: %w", err)
	}
	w.Close() // the child holds it; a child that exits ends the parent's reads
	var kubeconfig string
	if err := p.replies.Decode(&kubeconfig); err != nil {
		p.stop()
		return nil, nil, fmt.Errorf("the %s server process did not start (log: %s): %w", mode, p.log, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		p.stop()
		return nil, nil, err
	}
	cfg.QPS, cfg.Burst = -1, 0
	return p, cfg, nil
}

// call sends a command and decodes its reply into out.
func (p *serverProcess) call(out any, command ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, strings.Join(command, " ")); err != nil {
		return fmt.Errorf("server process: %w", err)
	}
	var raw json.RawMessage
	if err := p.replies.Decode(&raw); err != nil {
		return fmt.Errorf("server process (log: %s): %w", p.log, err)
	}
	var failed struct{ Error string }
	if json.Unmarshal(raw, &failed) == nil && failed.Error != "" {
		return errors.New(failed.Error)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// stats reads the server process's memory: RSS as it is, then the heap after a collection.
func (p *serverProcess) stats() (serverStats, error) {
	var st serverStats
	err := p.call(&st, "stats")
	return st, err
}

// heapProfile writes the server process's heap profile to path.
func (p *serverProcess) heapProfile(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	return p.call(nil, "heap", abs)
}

// stop closes the child's stdin, on which it stops its server and exits, and waits for it.
func (p *serverProcess) stop() {
	p.in.Close()
	if err := p.cmd.Wait(); err == nil {
		os.Remove(p.log)
	}
}
