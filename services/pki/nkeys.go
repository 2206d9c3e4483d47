package pki

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"

	"github.com/custodyledger/custody/events"
)

// DirNATS holds the NATS NKEY seed of every NATS user of a deployment
// (DirNATS/<user>.nk, one seed per file, mode 0600). NATS users are the
// partners, the consortium, and the ledger itself. The seeds authenticate
// connections; what a user may publish and read is set by the server's
// permissions (services/node).
const DirNATS = "nats"

// NKeyPath is the seed file of a NATS user.
func (d *Demo) NKeyPath(user string) string {
	return filepath.Join(d.Dir, DirNATS, user+".nk")
}

// NKey returns a NATS user's NKEY, creating its seed on first use.
func (d *Demo) NKey(user string) (nkeys.KeyPair, error) {
	if !events.ValidPartnerName(user) {
		return nil, fmt.Errorf("pki: invalid NATS user name %q", user)
	}
	path := d.NKeyPath(user)
	seed, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	seed, err = kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(seed); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return kp, f.Close()
}
