package pebble_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/custodyledger/custody/ledger/pebble"
)

// TestOpenInUse opens a store that is open already, in this process and in
// another: Open says the store is in use, not pebble's bare lock error
// ("resource temporarily unavailable").
func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	t.Run("this process", func(t *testing.T) {
		s, err := pebble.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s2, err := pebble.Open(dir)
		if err == nil {
			s2.Close()
			t.Fatal("opened twice")
		}
		if !errors.Is(err, pebble.ErrInUse) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("second Open: %v; want ErrInUse naming %s", err, dir)
		}
	})
	t.Run("another process", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHoldStore$")
		cmd.Env = append(os.Environ(), "CUSTODY_HOLD_STORE="+dir)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdin.Close(); _ = cmd.Wait() }()
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if line != "open\n" {
			t.Fatalf("helper: %q, %v", line, err)
		}
		s, err := pebble.Open(dir)
		if err == nil {
			s.Close()
			t.Fatal("opened a store another process has open")
		}
		if !errors.Is(err, pebble.ErrInUse) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Open: %v; want ErrInUse naming %s", err, dir)
		}
	})
}

// TestHoldStore is TestOpenInUse's other process: it opens the store in
// $CUSTODY_HOLD_STORE, prints "open" and holds it until stdin closes.
func TestHoldStore(t *testing.T) {
	dir := os.Getenv("CUSTODY_HOLD_STORE")
	if dir == "" {
		t.Skip("the helper process of TestOpenInUse")
	}
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Println("open")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
