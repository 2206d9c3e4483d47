package attest

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

// OIDLDevIDEvidence is the extension, requested in an LDevID CSR, that
// carries the TPM2_Certify evidence of the CSR's key (TCG's TCG-CSR-LDEVID
// carries the same three structures). It sits under Custody's UUID arc
// (43780695-41d0-4eb6-af9a-637ea9d99b61, written as the Microsoft
// GUID-derived arc 1.2.840.113556.1.8000.2554 so that crypto/x509 can read
// it; see services/pki's doc) with sub-arc 2.
var OIDLDevIDEvidence = asn1.ObjectIdentifier{1, 2, 840, 113556, 1, 8000, 2554, 17272, 1685, 16848, 20150, 44954, 6520489, 14261089, 2}

// certifyEvidenceASN1 is the extension value:
//
//	LDevIDEvidence ::= SEQUENCE {
//	    public    OCTET STRING,  -- TPMT_PUBLIC of the key
//	    attest    OCTET STRING,  -- TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY)
//	    signature OCTET STRING } -- TPMT_SIGNATURE by the IAK
type certifyEvidenceASN1 struct {
	Public, Attest, Signature []byte
}

// LDevIDCSR makes a PKCS#10 certificate request for the TPM's current LDevID
// key (NewLDevID), signed by that key inside the TPM, carrying ev (the IAK's
// certification of the key) in OIDLDevIDEvidence.
func (t *TPM) LDevIDCSR(subject pkix.Name, ev *CertifyEvidence) ([]byte, error) {
	if ev == nil {
		return nil, errors.New("attest: LDevID CSR needs the key's certify evidence")
	}
	signer, err := t.LDevIDSigner()
	if err != nil {
		return nil, err
	}
	pub, _, err := PublicKeyFromTPMT(ev.Public)
	if err != nil {
		return nil, err
	}
	if !SamePublicKey(pub, signer.Public()) {
		return nil, fmt.Errorf("attest: the evidence is for another key than the current LDevID")
	}
	return CreateLDevIDCSR(signer, subject, ev)
}

// CreateLDevIDCSR makes the CSR with any signer of the certified key.
func CreateLDevIDCSR(signer crypto.Signer, subject pkix.Name, ev *CertifyEvidence) ([]byte, error) {
	val, err := asn1.Marshal(certifyEvidenceASN1{Public: ev.Public, Attest: ev.Attest, Signature: ev.Signature})
	if err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject:         subject,
		ExtraExtensions: []pkix.Extension{{Id: OIDLDevIDEvidence, Value: val}},
	}
	return x509.CreateCertificateRequest(rand.Reader, tmpl, signer)
}

// LDevIDCSR is a parsed, UNVERIFIED LDevID certificate request: nothing in
// it is trusted until Verify succeeds.
type LDevIDCSR struct {
	CSR      *x509.CertificateRequest
	Evidence *CertifyEvidence
}

// ParseLDevIDCSR parses a CSR made by CreateLDevIDCSR.
func ParseLDevIDCSR(der []byte) (*LDevIDCSR, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: LDevID CSR: %v", ErrMalformed, err)
	}
	var found *certifyEvidenceASN1
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(OIDLDevIDEvidence) {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%w: LDevID CSR: two evidence extensions", ErrMalformed)
		}
		var v certifyEvidenceASN1
		rest, err := asn1.Unmarshal(ext.Value, &v)
		if err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("%w: LDevID CSR: evidence extension", ErrMalformed)
		}
		found = &v
	}
	if found == nil {
		return nil, fmt.Errorf("%w: LDevID CSR: no TPM2_Certify evidence (extension %s)", ErrMalformed, OIDLDevIDEvidence)
	}
	return &LDevIDCSR{CSR: csr, Evidence: &CertifyEvidence{Public: found.Public, Attest: found.Attest, Signature: found.Signature}}, nil
}

// Verify checks the request: its self-signature (proof of possession),
// the IAK's certification of the key over nonce (VerifyCertify: the key is
// TPM-resident, fixed, unrestricted signing), and that the certified key is
// the CSR's key. It returns the key, which is then trusted to live in the
// TPM that holds the IAK.
func (c *LDevIDCSR) Verify(iakPublic []byte, nonce []byte) (crypto.PublicKey, error) {
	if err := c.CSR.CheckSignature(); err != nil {
		return nil, fmt.Errorf("attest: LDevID CSR signature: %w", err)
	}
	pub, err := VerifyCertify(iakPublic, c.Evidence, nonce)
	if err != nil {
		return nil, err
	}
	if !SamePublicKey(pub, c.CSR.PublicKey) {
		return nil, fmt.Errorf("%w: the CSR's key is not the key the IAK certified", ErrNameMismatch)
	}
	return pub, nil
}

// SamePublicKey reports whether a and b are the same public key.
func SamePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ae, ok := a.(equaler)
	return ok && ae.Equal(b)
}
