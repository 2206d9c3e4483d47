package gate

import (
	"crypto/x509"
	"math/big"
	"sort"
	"sync"
	"time"

	"github.com/custodyledger/custody/ledger"
)

// CRL reason codes (RFC 5280 §5.3.1) the gate uses.
const (
	x509ReasonSuperseded  = 4 // the device enrolled again: a newer LDevID replaces this one
	x509ReasonCessation   = 5 // decommissioned, or issued but never recorded
	x509ReasonCertificate = 6 // certificateHold: the device is flagged (lifted when cleared)
)

// issuedLDevID is one LDevID the gate issued.
type issuedLDevID struct {
	serial    *big.Int
	notAfter  time.Time
	revokedAt time.Time // zero while valid
	reason    int
}

// ldevids is the gate's register of issued LDevIDs. Revocation has two
// sources: what the gate itself decided (superseded on re-enrollment,
// never-recorded certificates) is kept here; what the ledger says of the
// device (flagged: certificateHold; decommissioned: cessationOfOperation)
// is read from the ledger each time a CRL is made, so a flag, a clear or a
// decommissioning takes effect in the next CRL without the gate having to
// watch the log.
type ldevids struct {
	mu       sync.Mutex
	byDevice map[string][]*issuedLDevID
	number   int64 // last CRL number
}

// add registers a newly issued LDevID and revokes (superseded) the
// device's earlier ones. It returns how many it revoked.
func (l *ldevids) add(device string, cert *x509.Certificate, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.byDevice[device] {
		if c.revokedAt.IsZero() {
			c.revokedAt, c.reason = now, x509ReasonSuperseded
			n++
		}
	}
	l.byDevice[device] = append(l.byDevice[device], &issuedLDevID{serial: cert.SerialNumber, notAfter: cert.NotAfter})
	return n
}

// revoke registers cert as issued and revoked at once.
func (l *ldevids) revoke(device string, serial *big.Int, now time.Time, reason int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byDevice[device] = append(l.byDevice[device], &issuedLDevID{serial: serial, notAfter: now.Add(100 * 365 * 24 * time.Hour), revokedAt: now, reason: reason})
}

// Revoked is one entry of the gate's CRL.
type Revoked struct {
	Device string
	Serial *big.Int
	Time   time.Time
	Reason int // RFC 5280 CRLReason
}

// RevokedLDevIDs lists the LDevIDs that are revoked now: superseded and
// unrecorded ones, and every unexpired LDevID of a device the ledger shows
// flagged (certificateHold) or decommissioned (cessationOfOperation).
// Expired certificates are left out. Sorted by device, then serial.
func (g *Gate) RevokedLDevIDs() ([]Revoked, error) {
	now := g.cfg.Now()
	l := &g.ldevids
	l.mu.Lock()
	type item struct {
		device string
		c      issuedLDevID
	}
	var items []item
	for dev, certs := range l.byDevice {
		for _, c := range certs {
			if now.After(c.notAfter) {
				continue
			}
			items = append(items, item{dev, *c})
		}
	}
	l.mu.Unlock()
	states := map[string]*ledger.Device{}
	var out []Revoked
	for _, it := range items {
		if !it.c.revokedAt.IsZero() {
			out = append(out, Revoked{Device: it.device, Serial: it.c.serial, Time: it.c.revokedAt, Reason: it.c.reason})
			continue
		}
		st, ok := states[it.device]
		if !ok {
			var err error
			st, err = g.cfg.Ledger.Device(it.device)
			if err != nil {
				return nil, err
			}
			states[it.device] = st
		}
		switch {
		case st.Decommissioned:
			out = append(out, Revoked{Device: it.device, Serial: it.c.serial, Time: now, Reason: x509ReasonCessation})
		case st.Flag != nil:
			out = append(out, Revoked{Device: it.device, Serial: it.c.serial, Time: now, Reason: x509ReasonCertificate})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Device != out[j].Device {
			return out[i].Device < out[j].Device
		}
		return out[i].Serial.Cmp(out[j].Serial) < 0
	})
	return out, nil
}

// CRL returns a fresh DER CRL of the LDevID CA listing RevokedLDevIDs,
// valid for CRLValidity. CRL numbers increase with every call.
func (g *Gate) CRL() ([]byte, error) {
	revoked, err := g.RevokedLDevIDs()
	if err != nil {
		return nil, err
	}
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, r := range revoked {
		entries[i] = x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.Time, ReasonCode: r.Reason}
	}
	l := &g.ldevids
	l.mu.Lock()
	n := max(l.number+1, g.cfg.Now().UnixMilli())
	l.number = n
	l.mu.Unlock()
	return g.cfg.LDevIDCA.CRL(entries, big.NewInt(n), g.cfg.CRLValidity)
}
