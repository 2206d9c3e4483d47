package gate_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/node"
)

// The gate's crypto ceiling: the cryptographic operations one enrollment
// strictly needs, both registration calls, server side. Each op is the
// library call the gate (or the ledger, for the record) makes, on real
// material from the benchmark's own log, without the caches of the code
// under test (attest remembers TPM signatures that verified; the gate
// remembers EK chains; here every op is computed afresh):
//
//	make-credential  Begin: attest.MakeCredential to the device's EK, bound to
//	                 its IAK's name (ECC P-256: ephemeral key, ECDH, KDFe,
//	                 KDFa, AES-CFB, HMAC)
//	ek-cert-verify   the EK certificate's signature by its issuing CA; the CA
//	                 part of the chain is verified once per issuer
//	                 (ekchain.go), so a new device costs one verify
//	quote-verify     the fresh quote's signature by the IAK
//	certify-verify   the TPM2_Certify signature by the IAK over the LDevID
//	                 key (an IAK ECDSA verify over a TPMS_ATTEST, as the quote)
//	csr-verify       the CSR's self-signature by the LDevID key
//	ldevid-sign      the LDevID CA's signature over the LDevID's TBS
//	record-sign      the gate's DSSE signature of device.enrolled (of the
//	                 batch of records it is logged in: group commit, so
//	                 one per recordsPerLeaf decisions, as measured on the log)
//	record-verify    the ledger's check of that DSSE signature, which the
//	                 record must pass to be durable (as often)
//
// Not per decision, so not in the ceiling: the CA part of EK chains (once
// per issuer), the ledger's checkpoint signature (once per committed
// batch) and the receipt's checkpoint verification (once per checkpoint),
// TLS handshakes (kept-alive connections), the quote the ledger checks
// again (attest remembers it verified), and what the gate no longer does:
// crypto/x509's re-verification of the LDevID the gate just signed.
var ceilingOps = []string{
	"make-credential", "ek-cert-verify", "quote-verify", "certify-verify",
	"csr-verify", "ldevid-sign", "record-sign", "record-verify",
}

// ceiling holds the material of the ceiling's ops. The record's
// signature and its check are one per logged record envelope: with group
// commit, one per recordsPerLeaf decisions (measured on the log), so a set
// runs them once every recordsPerLeaf sets.
type ceiling struct {
	ops            []func() error
	recordsPerLeaf float64
}

// recordOps is how many of the last ops are the record's.
const recordOps = 2

// newCeiling takes its material from the node's log: the last
// device.enrolled entry (the gate's DSSE envelope, the fresh quote and the
// LDevID), the device's EK and IAK and its EK certificate's issuer.
func newCeiling(nd *node.Node) (*ceiling, error) {
	st := nd.Ledger.Store()
	head := nd.Ledger.Head()
	// The last device.enrolled (alone, or a member of the gate's batch,
	// whose envelope rec is then), and how many records the gate's entries
	// carry on average (group commit: record.go).
	var signed, rec *events.Signed
	var records, leaves int
	for i := head.Size; i > 0; i-- {
		e, err := st.Entry(i - 1)
		if err != nil {
			return nil, err
		}
		p := nd.PKI.Partners[e.Partner]
		if e.Status != events.StatusAccepted || p == nil || p.Role != events.RoleGate {
			continue
		}
		logged, err := ledger.LoggedEvents(st, e)
		if err != nil {
			return nil, err
		}
		records += len(logged)
		leaves++
		for _, le := range logged {
			if signed == nil && le.Status == events.StatusAccepted && le.Signed.Statement.Predicate.Kind == events.KindDeviceEnrolled {
				signed = le.Signed
				if rec, err = events.Open(e.Envelope); err != nil {
					return nil, err
				}
			}
		}
	}
	if signed == nil {
		return nil, errors.New("ceiling: no device.enrolled in the log")
	}
	en := signed.Statement.Predicate.Enrolled
	dev, err := st.Device(en.RegistrationID)
	if err != nil {
		return nil, err
	}
	// The EK certificate's issuer, from a full verification once.
	trust, err := attest.ParseBundle(nd.PKI.EKTrustBundle())
	if err != nil {
		return nil, err
	}
	ek, err := attest.ParseEKCertificate(dev.EKCertificate)
	if err != nil {
		return nil, err
	}
	chains, err := ek.Verify(trust, time.Now())
	if err != nil {
		return nil, err
	}
	leaf, issuer := chains[0][0], chains[0][1]
	_, iakName, err := attest.PublicKeyFromTPMT(dev.IAKPublic)
	if err != nil {
		return nil, err
	}
	iakPub, _, err := attest.PublicKeyFromTPMT(dev.IAKPublic)
	if err != nil {
		return nil, err
	}
	ev := signed.Statement.Predicate.Evidence
	tsig, err := tpm2.Unmarshal[tpm2.TPMTSignature](ev.Signature)
	if err != nil {
		return nil, err
	}
	esig, err := tsig.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("ceiling: the IAK's quote is not ECDSA: %w", err)
	}
	r, s := new(big.Int).SetBytes(esig.SignatureR.Buffer), new(big.Int).SetBytes(esig.SignatureS.Buffer)
	iak, ok := iakPub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("ceiling: the IAK is a %T", iakPub)
	}
	tpmVerify := func() error {
		d := sha256.Sum256(ev.Attest)
		if !ecdsa.Verify(iak, d[:], r, s) {
			return errors.New("quote signature")
		}
		return nil
	}
	// A CSR as the device makes it: P-256, CN = registration ID.
	ldevKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: en.RegistrationID}}, ldevKey)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	ldevid, err := x509.ParseCertificate(en.LDevIDCertificate)
	if err != nil {
		return nil, err
	}
	caKey := nd.PKI.LDevIDCA.Key
	gp := nd.PKI.Partners[signed.Statement.Predicate.Partner]
	if gp == nil {
		return nil, fmt.Errorf("ceiling: no partner %s", signed.Statement.Predicate.Partner)
	}
	gateKey, gatePub := gp.Key, gp.Cert.PublicKey
	secret := make([]byte, 32)
	c := &ceiling{recordsPerLeaf: float64(records) / float64(leaves), ops: []func() error{
		func() error { // make-credential
			_, err := attest.MakeCredential(dev.EKPublic, iakName, secret)
			return err
		},
		func() error { return leaf.CheckSignatureFrom(issuer) }, // ek-cert-verify
		tpmVerify, // quote-verify
		tpmVerify, // certify-verify
		csr.CheckSignature,
		func() error { // ldevid-sign
			d := sha256.Sum256(ldevid.RawTBSCertificate)
			_, err := caKey.Sign(rand.Reader, d[:], crypto.SHA256)
			return err
		},
		func() error { // record-sign
			_, err := gateKey.Sign(rand.Reader, rec.Digest[:], crypto.SHA256)
			return err
		},
		func() error { return rec.Verify(gatePub) }, // record-verify
	}}
	if len(c.ops) != len(ceilingOps) {
		panic("ceiling: ops and names differ")
	}
	for i, op := range c.ops {
		if err := op(); err != nil {
			return nil, fmt.Errorf("ceiling: %s: %w", ceilingOps[i], err)
		}
	}
	return c, nil
}

// measure runs every op of one decision, over and over, on GOMAXPROCS
// goroutines for d, and returns the decisions' worth of crypto done, the
// wall time it took and the process's CPU meanwhile.
func (c *ceiling) measure(d time.Duration) (sets int64, wall, cpu time.Duration) {
	var total atomic.Int64
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), processCPU()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			n := int64(0)
			every := max(1, int64(c.recordsPerLeaf+0.5))
			for time.Since(start) < d {
				ops := c.ops
				if n%every != 0 {
					ops = ops[:len(ops)-recordOps]
				}
				for _, op := range ops {
					if err := op(); err != nil {
						panic(err)
					}
				}
				n++
			}
			total.Add(n)
		})
	}
	wg.Wait()
	return total.Load(), time.Since(start), processCPU() - cpu0
}
