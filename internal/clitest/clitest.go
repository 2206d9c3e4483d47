// Package clitest runs Custody's built binaries (custody, custodyd,
// custody-agent) in tests, as a user would from a shell: it builds them once
// per test process, runs commands and captures what they print, and starts
// custodyd on free ports, waiting for its "custody node ready" log line.
package clitest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custodyledger/custody/services/pki"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// moduleRoot is the repository root (this file is internal/clitest/clitest.go).
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Bin returns the path of a built binary: "custody", "custodyd" or
// "custody-agent". The three are built once per test process into a
// temporary folder (the Go build cache makes later builds cheap).
func Bin(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "custody-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator),
			"./cmd/custody", "./cmd/custodyd", "./cmd/custody-agent")
		cmd.Dir = moduleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// Result is what a finished command printed and how it exited.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Output is stdout and stderr together, for messages that may go to either.
func (r Result) Output() string { return r.Stdout + r.Stderr }

// Run runs a built binary with args in dir ("" for a fresh temporary
// folder) and waits for it (at most two minutes).
func Run(t testing.TB, dir, name string, args ...string) Result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bin(t, name), args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
		}
		r.Code = ee.ExitCode()
	}
	return r
}

// Server is a long-running binary (custodyd, `custody station run`,
// `custody-agent serve`) started by [Start].
type Server struct {
	Cmd *exec.Cmd

	mu    sync.Mutex
	log   bytes.Buffer // stderr and stdout, as printed
	lines chan string
	done  chan struct{}
	err   error
}

// Start starts a built binary in dir and returns at once; it is killed when
// the test ends. Its output is kept (see [Server.Log]) and printed with t.Log
// if the test fails.
func Start(t testing.TB, dir, name string, args ...string) *Server {
	t.Helper()
	cmd := exec.Command(Bin(t, name), args...)
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	s := &Server{Cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			select {
			case s.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		pw.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("%s %s printed:\n%s", name, strings.Join(args, " "), s.Log())
		}
	})
	return s
}

// Log is everything the server printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// WaitLine waits until the server prints a line matching re and returns
// the line's submatches. It fails the test if the server exits first or
// nothing matches within timeout.
func (s *Server) WaitLine(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-s.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-s.done:
			// Lines printed just before exit may still be queued.
			for {
				select {
				case l := <-s.lines:
					if m := re.FindStringSubmatch(l); m != nil {
						return m
					}
					continue
				default:
				}
				break
			}
			t.Fatalf("%s exited (%v) before printing a line matching %q:\n%s", s.Cmd.Path, s.ExitErr(), re, s.Log())
		case <-deadline:
			t.Fatalf("%s printed no line matching %q within %s:\n%s", s.Cmd.Path, re, timeout, s.Log())
		}
	}
}

// Wait waits for the server to exit (at most timeout) and returns its exit
// code; it fails the test if it is still running.
func (s *Server) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s:\n%s", s.Cmd.Path, timeout, s.Log())
	}
	return s.Cmd.ProcessState.ExitCode()
}

// ExitErr is how the process ended (nil while running or on exit 0).
func (s *Server) ExitErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	_ = s.Cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// Stop ends the process with SIGTERM and waits for it to exit.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	_ = s.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop on SIGTERM:\n%s", s.Cmd.Path, s.Log())
	}
}

// Custodyd is a running custodyd with the URLs it logged when ready.
type Custodyd struct {
	*Server
	HTTP, DPS, NATS string
	Data            string
}

var readyLine = regexp.MustCompile(`custody node ready.*http=(\S+) dps=(\S+) nats=(\S*)`)

// StartCustodyd starts custodyd on data (created if missing) with every
// listener on a free loopback port, plus extra flags, and waits until it
// logs that it is ready (at most two minutes: a first start creates the
// demo PKI).
func StartCustodyd(t testing.TB, data string, extra ...string) *Custodyd {
	t.Helper()
	args := append([]string{"--data", data, "--http", "127.0.0.1:0", "--dps", "127.0.0.1:0", "--nats", "127.0.0.1:0"}, extra...)
	s := Start(t, filepath.Dir(data), "custodyd", args...)
	m := s.WaitLine(t, readyLine, 2*time.Minute)
	return &Custodyd{Server: s, HTTP: m[1], DPS: m[2], NATS: m[3], Data: data}
}

var agentListening = regexp.MustCompile(`device factory API listening.*url=(\S+)`)

// StartAgent starts `custody-agent serve` with the in-process simulated TPM
// of seed (one per process, so one agent process per device), its state in
// dir, serving over TLS to the partners of the demo PKI in pkiDir (--pki),
// and returns its factory API's https:// URL once it listens. Call it with
// a partner's client ([Client]).
func StartAgent(t testing.TB, dir, pkiDir string, seed int) string {
	t.Helper()
	a := Start(t, dir, "custody-agent", "serve", "--tpm", fmt.Sprintf("sim:seed=%d", seed), "--state", filepath.Join(dir, "device"), "--pki", pkiDir)
	return a.WaitLine(t, agentListening, time.Minute)[1]
}

// Client is an HTTP client of custodyd's API from the PKI in pkiDir, acting
// as partner ("" for anonymous): it trusts the PKI's TLS CA and presents
// the partner's certificate.
func Client(t testing.TB, pkiDir, partner string) *http.Client {
	t.Helper()
	d, err := pki.LoadDemo(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := d.HTTPClient(partner)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

// Client is an HTTP client of this custodyd acting as partner ("" for
// anonymous), from the PKI in its data folder.
func (d *Custodyd) Client(t testing.TB, partner string) *http.Client {
	return Client(t, filepath.Join(d.Data, "pki"), partner)
}
