package gate

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"sort"
	"sync"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// CRL reason codes (RFC 5280 §5.3.1) the gate uses.
const (
	x509ReasonSuperseded = 4 // the device enrolled again: a newer LDevID replaces this one
	x509ReasonCessation  = 5 // decommissioned, or issued but never recorded
	x509ReasonHold       = 6 // certificateHold: the device is flagged (lifted when cleared)
)

// issuedLDevID is one LDevID the gate issued.
type issuedLDevID struct {
	device    string
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
	bySerial map[string]*issuedLDevID // by serial (hex)
	number   int64                    // last CRL number
	disabled map[string]bool          // devices whose DPS enrollment the sweep disabled
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
	if c := l.bySerial[cert.SerialNumber.Text(16)]; c != nil {
		// Revoked already (the revocation file was read first, or the
		// operator revoked it): keep that revocation.
		c.notAfter = cert.NotAfter
		return n
	}
	c := &issuedLDevID{device: device, serial: cert.SerialNumber, notAfter: cert.NotAfter}
	l.byDevice[device] = append(l.byDevice[device], c)
	l.bySerial[cert.SerialNumber.Text(16)] = c
	delete(l.disabled, device) // Enroll enabled the DPS enrollment again
	return n
}

// apply registers a revocation: of a known LDevID (the earlier revocation
// wins unless this one is earlier), or of one issued and revoked at once.
func (l *ldevids) apply(r revocation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	serial := r.Serial.Text(16)
	if c := l.bySerial[serial]; c != nil {
		if c.revokedAt.IsZero() || r.Time.Before(c.revokedAt) || c.reason == x509ReasonSuperseded {
			c.revokedAt, c.reason = r.Time, r.Reason
		}
		return
	}
	c := &issuedLDevID{device: r.Device, serial: r.Serial, notAfter: r.NotAfter, revokedAt: r.Time, reason: r.Reason}
	l.byDevice[r.Device] = append(l.byDevice[r.Device], c)
	l.bySerial[serial] = c
}

// lookup returns a copy of the register's entry for serial.
func (l *ldevids) lookup(serial *big.Int) (issuedLDevID, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.bySerial[serial.Text(16)]
	if c == nil {
		return issuedLDevID{}, false
	}
	return *c, true
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
			out = append(out, Revoked{Device: it.device, Serial: it.c.serial, Time: now, Reason: x509ReasonHold})
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

// Sweep disables, in DPS, the enrollment of every device that holds an
// unexpired LDevID and that the ledger now shows flagged or decommissioned:
// the CRL revokes the LDevID, but DPS and IoT Hub do not read CRLs. A
// device whose flag is later cleared stays disabled in DPS until it
// enrolls at the gate again, passing every check. It returns how many
// enrollments it disabled.
func (g *Gate) Sweep(ctx context.Context) (int, error) {
	revoked, err := g.RevokedLDevIDs()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range revoked {
		if r.Reason != x509ReasonHold && r.Reason != x509ReasonCessation {
			continue
		}
		l := &g.ldevids
		l.mu.Lock()
		done := l.disabled[r.Device]
		l.mu.Unlock()
		if done {
			continue
		}
		if err := g.cfg.Registry.SetEnabled(ctx, r.Device, false); err != nil {
			return n, fmt.Errorf("gate: disabling the DPS enrollment of %s: %w", r.Device, err)
		}
		l.mu.Lock()
		if l.disabled == nil {
			l.disabled = map[string]bool{}
		}
		l.disabled[r.Device] = true
		l.mu.Unlock()
		n++
		g.cfg.Logger.Info("DPS enrollment disabled", "device", r.Device, "crl_reason", r.Reason)
	}
	return n, nil
}

// Run sweeps every SweepInterval until ctx ends, and writes the aggregate
// refusal records that are due.
func (g *Gate) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.flushRefusals()
			if _, err := g.Sweep(ctx); err != nil && ctx.Err() == nil {
				g.cfg.Logger.Warn("sweep", "err", err)
			}
		}
	}
}

// loadLDevIDs reads every device.enrolled entry this gate logged, oldest
// first, into the register: each LDevID supersedes the device's earlier
// ones as of its entry's integration time. It reads the whole log once
// (O(log size) at start-up; an index by kind would make it O(enrollments)).
func (g *Gate) loadLDevIDs() (int, error) {
	head, err := g.cfg.Log.Head()
	if err != nil {
		return 0, err
	}
	n := 0
	for i := uint64(0); i < head.Size; i++ {
		e, err := g.cfg.Log.Entry(i)
		if err != nil {
			return n, fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Partner != g.cfg.Name || e.Status != events.StatusAccepted || (e.Kind != events.KindDeviceEnrolled && e.Kind != events.KindBatchSigned) {
			continue
		}
		logged, err := ledger.LoggedEvents(g.cfg.Log, e)
		if err != nil {
			return n, fmt.Errorf("entry %d: %w", i, err)
		}
		for _, le := range logged {
			s := le.Signed
			if s.Statement.Predicate.Kind != events.KindDeviceEnrolled || le.Status != events.StatusAccepted {
				continue
			}
			cert, err := x509.ParseCertificate(s.Statement.Predicate.Enrolled.LDevIDCertificate)
			if err != nil {
				return n, fmt.Errorf("entry %d: LDevID certificate: %w", i, err)
			}
			g.ldevids.add(s.Statement.Device(), cert, time.Unix(e.IntegratedTime, 0))
			n++
		}
	}
	return n, nil
}
