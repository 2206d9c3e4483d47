package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// What stops a node from starting, said so that a command can name its own
// flag: another node on the same data folder, a listener that cannot open.

// lockFile is the data folder's lock: held with flock(2) by the node using
// the folder, and holding that node's process ID as text.
const lockFile = "LOCK"

// DataInUseError is a data folder another node holds, in this process or
// another: two nodes on one folder would fight over its NATS store and
// ledger.
type DataInUseError struct {
	Dir string // the data folder
	PID int    // the holder's process ID; 0 if it could not be read
}

func (e *DataInUseError) Error() string {
	s := "node: the data folder " + e.Dir + " is in use by another node"
	if e.PID != 0 {
		s += " (pid " + strconv.Itoa(e.PID) + ")"
	}
	return s
}

// lockData creates dir if missing and takes its lock, writing this
// process's ID into the lock file. It fails with a *DataInUseError while
// another node holds it. Closing the returned file releases the lock, as
// does the process's end, however it ends.
func lockData(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: data folder: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("node: data folder lock: %w", err)
	}
	// flock, not fcntl: a second lock from this process conflicts too.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			e := &DataInUseError{Dir: dir}
			if b, err := os.ReadFile(path); err == nil {
				e.PID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
			return nil, e
		}
		return nil, fmt.Errorf("node: locking the data folder %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: data folder lock: %w", err)
	}
	return f, nil
}

// ListenError is a listener the node could not open.
type ListenError struct {
	// Listener is "HTTP", "DPS" or "NATS", after the Config field of its
	// address (HTTPAddr, DPSAddr, NATSAddr).
	Listener string
	Addr     string
	Err      error
}

func (e *ListenError) Error() string {
	return "node: " + e.Listener + " cannot listen on " + e.Addr + ": " + e.Reason()
}

func (e *ListenError) Unwrap() error { return e.Err }

// Reason is why, without the address: "address already in use".
func (e *ListenError) Reason() string {
	var se *os.SyscallError
	if errors.As(e.Err, &se) {
		return se.Err.Error()
	}
	var oe *net.OpError
	if errors.As(e.Err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return e.Err.Error()
}

// listen opens the TCP listener of a node's listener named name (see
// ListenError.Listener).
func listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &ListenError{Listener: name, Addr: addr, Err: err}
	}
	return ln, nil
}
