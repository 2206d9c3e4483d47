package events

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Outbox keeps a partner's events on disk from before they are published
// until the ledger answers them, so an event survives a crash of the
// partner's station, a lost JetStream ack, or a broker that had not yet
// fsynced it. One file per event, named by its digest; the file is written
// and fsynced before the first publish and removed when the answer (receipt
// or rejection) arrives. A restarted station re-sends every file: the
// digest is the Nats-Msg-Id and the ledger's dedup key, so nothing is
// logged twice.
type Outbox struct {
	dir string
}

// OpenOutbox opens (creating) an outbox directory.
func OpenOutbox(dir string) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return &Outbox{dir: dir}, nil
}

func (o *Outbox) path(digestHex string) string { return filepath.Join(o.dir, digestHex+".json") }

// Put stores an envelope durably under its digest.
func (o *Outbox) Put(digestHex string, envelope []byte) error {
	if _, err := hex.DecodeString(digestHex); err != nil || len(digestHex) != 64 {
		return errors.New("outbox: bad digest")
	}
	tmp, err := os.CreateTemp(o.dir, ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(envelope); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), o.path(digestHex)); err != nil {
		return err
	}
	return syncDir(o.dir)
}

// Has reports whether the event with this digest is waiting in the outbox.
func (o *Outbox) Has(digestHex string) bool {
	_, err := os.Stat(o.path(digestHex))
	return err == nil
}

// Done forgets an answered event.
func (o *Outbox) Done(digestHex string) error {
	err := os.Remove(o.path(digestHex))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Unconfirmed lists the envelopes not answered yet, by digest.
func (o *Outbox) Unconfirmed() (map[string][]byte, error) {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(o.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}

// Digests lists the unconfirmed events' digests, sorted.
func (o *Outbox) Digests() ([]string, error) {
	m, err := o.Unconfirmed()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
