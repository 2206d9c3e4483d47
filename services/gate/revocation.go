package gate

import (
	"bytes"
	"crypto"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// ErrUnknownLDevID is a revocation of a serial this gate never issued (nor
// recorded): refused, since the gate's CRL and OCSP answers speak only for
// certificates it knows it issued.
var ErrUnknownLDevID = errors.New("this gate issued no LDevID with that serial")

// revocation is one line of the revocation file.
type revocation struct {
	Serial   *big.Int  `json:"serial"`
	Device   string    `json:"device"`
	NotAfter time.Time `json:"notAfter"`
	Time     time.Time `json:"time"`
	Reason   int       `json:"reason"` // RFC 5280 CRLReason
}

// revocationFile is the durable list of the revocations the log does not
// hold: LDevIDs issued but never recorded in the ledger (the ledger refused
// device.enrolled or did not answer), and the operator's revocations. One
// JSON object per line, appended and fsynced before the revocation takes
// effect; a torn last line (a crash while appending) is ignored.
type revocationFile struct {
	mu sync.Mutex
	f  *os.File
}

// openRevocations reads path into l and opens it for appending.
func openRevocations(path string, l *ldevids) (*revocationFile, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("revocation file: %w", err)
	}
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r revocation
		if err := json.Unmarshal(line, &r); err != nil || r.Serial == nil {
			if i == len(lines)-1 {
				break // the torn last line of a crash while appending
			}
			return nil, fmt.Errorf("revocation file %s: line %d is not a revocation", path, i+1)
		}
		l.apply(r)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("revocation file: %w", err)
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		if _, err := f.Write([]byte("\n")); err != nil { // end the torn line
			f.Close()
			return nil, fmt.Errorf("revocation file: %w", err)
		}
	}
	return &revocationFile{f: f}, nil
}

// append writes r durably.
func (rf *revocationFile) append(r revocation) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if _, err := rf.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("revocation file: %w", err)
	}
	if err := rf.f.Sync(); err != nil {
		return fmt.Errorf("revocation file: %w", err)
	}
	return nil
}

// revoke makes r durable (when the gate has a revocation file), then
// effective.
func (g *Gate) revoke(r revocation) error {
	if g.revocations != nil {
		if err := g.revocations.append(r); err != nil {
			return err
		}
	}
	g.ldevids.apply(r)
	return nil
}

// Revocation reasons the operator may give (RFC 5280 CRLReason names).
var revocationReasons = map[string]int{
	"unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3,
	"superseded": x509ReasonSuperseded, "cessationOfOperation": x509ReasonCessation,
}

// Revoke revokes an LDevID this gate issued, for an RFC 5280 reason name
// (unspecified, keyCompromise, affiliationChanged, superseded,
// cessationOfOperation), durably: it is in the revocation file before
// Revoke returns, and in every CRL and OCSP answer after. A serial the
// gate never issued is ErrUnknownLDevID. Revoking a revoked LDevID again
// changes nothing unless the reason is keyCompromise-like and the earlier
// one was superseded.
func (g *Gate) Revoke(serial *big.Int, reason string) error {
	code, ok := revocationReasons[reason]
	if !ok || serial == nil || serial.Sign() <= 0 {
		return fmt.Errorf("%w: a revocation needs a positive serial and a reason among unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation", ErrBadRequest)
	}
	c, ok := g.ldevids.lookup(serial)
	if !ok {
		return fmt.Errorf("serial %s: %w", serial.Text(16), ErrUnknownLDevID)
	}
	if !c.revokedAt.IsZero() && c.reason != x509ReasonSuperseded {
		return nil
	}
	if err := g.revoke(revocation{Serial: serial, Device: c.device, NotAfter: c.notAfter, Time: g.cfg.Now().UTC().Truncate(time.Second), Reason: code}); err != nil {
		return err
	}
	g.cfg.Logger.Info("LDevID revoked by the operator", "device", c.device, "serial", serial.Text(16), "reason", reason)
	return nil
}

// status is an LDevID's revocation status now: ok false if the gate never
// issued serial; revoked with the time and reason otherwise (the gate's
// own revocations, then the ledger's flags and decommissioning, as in the
// CRL).
func (g *Gate) status(serial *big.Int) (ok, revoked bool, at time.Time, reason int, err error) {
	c, ok := g.ldevids.lookup(serial)
	if !ok {
		return false, false, time.Time{}, 0, nil
	}
	if !c.revokedAt.IsZero() {
		return true, true, c.revokedAt, c.reason, nil
	}
	dev, err := g.cfg.Ledger.Device(c.device)
	if err != nil {
		return true, false, time.Time{}, 0, err
	}
	now := g.cfg.Now()
	switch {
	case dev.Decommissioned:
		return true, true, now, x509ReasonCessation, nil
	case dev.Flag != nil:
		return true, true, now, x509ReasonHold, nil
	}
	return true, false, time.Time{}, 0, nil
}

// OCSP answers a DER OCSP request (RFC 6960) for an LDevID of this gate's
// CA: good, revoked (time and reason) or unknown (a serial the gate never
// issued), signed by the LDevID CA itself, valid for CRLValidity. A request
// that does not parse gets malformedRequest; one about another issuer,
// unauthorized. Request nonces are not echoed (RFC 5019).
func (g *Gate) OCSP(der []byte) ([]byte, error) {
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	ca := g.cfg.LDevIDCA
	if !issuedBy(req, ca.Cert) {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	ok, revoked, at, reason, err := g.status(req.SerialNumber)
	if err != nil {
		return nil, err
	}
	now := g.cfg.Now()
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber, IssuerHash: req.HashAlgorithm,
		ThisUpdate: now.Add(-time.Minute).UTC().Truncate(time.Second), NextUpdate: now.Add(g.cfg.CRLValidity).UTC().Truncate(time.Second),
	}
	switch {
	case !ok:
		tmpl.Status = ocsp.Unknown
	case revoked:
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, at.UTC().Truncate(time.Second), reason
	default:
		tmpl.Status = ocsp.Good
	}
	return ocsp.CreateResponse(ca.Cert, ca.Cert, tmpl, ca.Key)
}

// issuedBy says whether an OCSP request names ca as the issuer.
func issuedBy(req *ocsp.Request, ca *x509.Certificate) bool {
	if !req.HashAlgorithm.Available() {
		return false
	}
	nameHash := hashOf(req.HashAlgorithm, ca.RawSubject)
	keyHash := hashOf(req.HashAlgorithm, subjectPublicKeyBits(ca))
	return bytes.Equal(nameHash, req.IssuerNameHash) && bytes.Equal(keyHash, req.IssuerKeyHash)
}

// subjectPublicKeyBits is the subjectPublicKey BIT STRING's bytes of a
// certificate, what an OCSP request's issuerKeyHash hashes.
func subjectPublicKeyBits(c *x509.Certificate) []byte {
	in := cryptobyte.String(c.RawSubjectPublicKeyInfo)
	var spki, alg cryptobyte.String
	var bits encasn1.BitString
	if !in.ReadASN1(&spki, cbasn1.SEQUENCE) || !spki.ReadASN1(&alg, cbasn1.SEQUENCE) || !spki.ReadASN1BitString(&bits) {
		return nil
	}
	return bits.Bytes
}

func hashOf(h crypto.Hash, b []byte) []byte {
	w := h.New()
	w.Write(b)
	return w.Sum(nil)
}
