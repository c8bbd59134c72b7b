package framework

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is a child process whose output goes to a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
}

// startProcess runs bin with args, writing its output to logPath. The child is killed if the test
// process dies first.
func startProcess(name, logPath, bin string, args ...string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	return p, nil
}

// exitError returns an error describing the exit when the process has exited, else nil.
func (p *process) exitError() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.name, p.err, p.logPath, p.logTail())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for the exit, killing the process after timeout.
func (p *process) stop(timeout time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within %s and was killed", p.name, timeout)
	}
}

// logTail returns the last lines of the process's log.
func (p *process) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Process is a child process of a test harness outside this package (test/envoygateway) whose
// output goes to a log file; it is killed if the test process dies first.
type Process struct{ p *process }

// StartProcess runs bin with args, writing its output to logPath.
func StartProcess(name, logPath, bin string, args ...string) (*Process, error) {
	p, err := startProcess(name, logPath, bin, args...)
	if err != nil {
		return nil, err
	}
	return &Process{p: p}, nil
}

// Exited returns an error describing the exit, with the end of the log, when the process has
// exited, else nil.
func (p *Process) Exited() error { return p.p.exitError() }

// Stop sends SIGTERM and waits for the exit, killing the process after timeout.
func (p *Process) Stop(timeout time.Duration) error { return p.p.stop(timeout) }

// LogTail returns the last lines of the process's log.
func (p *Process) LogTail() string { return p.p.logTail() }
