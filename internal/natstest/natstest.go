// Package natstest starts an embedded NATS server with JetStream for a
// test, reachable in process only, and connects to it.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Connect starts a JetStream-enabled NATS server with its store in a
// temporary directory and returns a connection to it; both end with the
// test.
//
// Under -short (`go test -short`, `make test-short`) the test is skipped:
// -short runs only the tests that need no server.
func Connect(t testing.TB) *nats.Conn {
	t.Helper()
	return ConnectTo(t, Server(t))
}

// Server starts a JetStream-enabled NATS server, in process only, for the
// test (skipped under -short, as Connect).
func Server(t testing.TB) *server.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an embedded NATS server; run without -short")
	}
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	return ns
}

// ConnectTo opens another in-process connection to ns, closed with the
// test.
func ConnectTo(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
