package node_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/services/node"
)

// TestDataInUse starts a second node on a running node's data folder: it
// fails at once, naming the folder and the holder's process, and a node
// starts on the folder again once the first has stopped.
func TestDataInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0"}
	_, stop, err := node.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := node.New(context.Background(), cfg)
	var inUse *node.DataInUseError
	if !errors.As(err, &inUse) {
		if n2 != nil {
			t.Error("the second node started")
		}
		t.Fatalf("second node: %v; want a DataInUseError", err)
	}
	if inUse.Dir != dir || inUse.PID != os.Getpid() {
		t.Errorf("%+v; want dir %s, pid %d", inUse, dir, os.Getpid())
	}
	if want := "the data folder " + dir + " is in use by another node"; !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not say %q", err, want)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, stop, err = node.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestListenerInUse starts a node with each of its listeners on a port in
// use: New fails with a ListenError naming the listener and the address,
// without waiting for NATS, and leaves the data folder free.
func TestListenerInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	dir := t.TempDir()
	for _, name := range []string{"HTTP", "DPS", "NATS"} {
		t.Run(name, func(t *testing.T) {
			cfg := node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0"}
			switch name {
			case "HTTP":
				cfg.HTTPAddr = addr
			case "DPS":
				cfg.DPSAddr = addr
			case "NATS":
				cfg.NATSAddr = addr
			}
			_, err := node.New(context.Background(), cfg)
			var le *node.ListenError
			if !errors.As(err, &le) {
				t.Fatalf("New: %v; want a ListenError", err)
			}
			if le.Listener != name || le.Addr != addr || le.Reason() != "address already in use" {
				t.Errorf("%+v (reason %q); want %s on %s, address already in use", le, le.Reason(), name, addr)
			}
			if want := "node: " + name + " cannot listen on " + addr + ": address already in use"; err.Error() != want {
				t.Errorf("%q; want %q", err, want)
			}
		})
	}
	_, stop, err := node.Start(context.Background(), node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("after failed starts: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestNATSCannotStart gives the embedded NATS server a JetStream store it
// cannot use (a file where its folder goes): New returns the server's own
// reason at once instead of waiting for a server that will never be ready.
func TestNATSCannotStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nats"), []byte("not a folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := node.New(ctx, node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "node: NATS: ") || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("New: %v; want the NATS server's reason", err)
	}
	t.Log(err)
}
