package node

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func (n *Node) startNATS() error {
	opts := &server.Options{
		ServerName: "custody",
		JetStream:  true,
		StoreDir:   filepath.Join(n.cfg.DataDir, "nats"),
		DontListen: n.cfg.NATSAddr == "",
		NoSigs:     true,
		NoLog:      true,
	}
	if n.cfg.NATSAddr != "" {
		host, port, err := net.SplitHostPort(n.cfg.NATSAddr)
		if err != nil {
			return fmt.Errorf("node: NATS address: %w", err)
		}
		opts.Host = host
		if _, err := fmt.Sscan(port, &opts.Port); err != nil {
			return fmt.Errorf("node: NATS port: %w", err)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("node: NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return errors.New("node: NATS did not become ready")
	}
	n.NATS = ns
	return nil
}

func (n *Node) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(n.NATS), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	n.conns = append(n.conns, nc)
	return nc, nil
}

