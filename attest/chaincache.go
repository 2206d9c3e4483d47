package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"sync/atomic"
	"time"
)

// Certificate chain verification with the CA part of the chain verified
// once (EK and IAK certificates: the gate verifies one per enrollment, the
// ledger two per birth record).
//
// Every EK certificate of a TPM vendor hangs under the same few CA
// certificates (manufacturing CA, cross-certificate, root), so building and
// verifying the whole chain for each device repeats two or three signature
// checks out of three or four. ChainCache remembers, per issuing CA
// certificate, the part of a chain above the EK certificate that
// crypto/x509 verified in full (with an EK certificate under it) against
// the gate's trust bundle. A new EK certificate is then verified by
// crypto/x509 against its issuer alone (its signature, validity, critical
// extensions, the issuer's CA constraints and the issuer's name and policy
// constraints applied to it), and the remembered CA part is re-checked for
// validity at the decision's time.
//
// That is the verification of the whole chain, check for check, because
// what crypto/x509 checks above the issuer does not depend on the EK
// certificate: each CA's signature over the one below, validity, CA
// constraints and path length (the chain below a CA has the same length
// for every EK certificate under the same issuer). The exceptions are name
// constraints and certificate policy processing, which look at the whole
// chain including the leaf: a CA part with name constraints or policy
// constraints, and an EK certificate with policy constraints, are never
// taken this way. Whenever the shortcut does not verify, the full
// verification decides (and names the error).
//
// The zero ChainCache is ready to use; a nil *ChainCache verifies in full
// every time.
type ChainCache struct {
	mu sync.Mutex
	// byIssuer: the issuing CA's subject (DER) → CA parts starting with a
	// CA certificate of that subject, leaf excluded, root last.
	byIssuer map[string][]*caChain
	// shortcuts counts verifications through a remembered CA part.
	shortcuts atomic.Int64
}

// caChain is the verified CA part of an EK certificate chain.
type caChain struct {
	certs  []*x509.Certificate // issuer first, root last
	anchor *Bundle             // the issuer alone as the trust anchor
	digest [32]byte            // SHA-256 of the certificates, to tell chains apart
}

// maxCAChains bounds the remembered CA parts (a trust bundle yields a few).
const maxCAChains = 64

// Verify verifies leaf's chain to the trust bundle b at now, as
// verify(b) does (EKCertificate.Verify or IAKCertificate.Verify, at now),
// and returns the chains found (leaf first). verify is called with the
// bundle to verify against: b, or a remembered issuer alone.
func (cc *ChainCache) Verify(leaf *x509.Certificate, b *Bundle, now time.Time, verify func(*Bundle) ([][]*x509.Certificate, error)) ([][]*x509.Certificate, error) {
	if cc == nil {
		return verify(b)
	}
	if !hasPolicyConstraints(leaf) {
		cc.mu.Lock()
		cands := cc.byIssuer[string(leaf.RawIssuer)]
		cc.mu.Unlock()
		for _, c := range cands {
			if !c.validAt(now) {
				continue
			}
			chains, err := verify(c.anchor)
			if err != nil || len(chains) != 1 || len(chains[0]) != 2 || !bytes.Equal(chains[0][1].Raw, c.certs[0].Raw) {
				continue
			}
			cc.shortcuts.Add(1)
			return [][]*x509.Certificate{append([]*x509.Certificate{leaf}, c.certs...)}, nil
		}
	}
	chains, err := verify(b)
	if err != nil {
		return nil, err
	}
	if !hasPolicyConstraints(leaf) {
		cc.remember(chains)
	}
	return chains, nil
}

// remember keeps the CA parts of chains that crypto/x509 verified.
func (cc *ChainCache) remember(chains [][]*x509.Certificate) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.byIssuer == nil {
		cc.byIssuer = map[string][]*caChain{}
	}
	n := 0
	for _, cs := range cc.byIssuer {
		n += len(cs)
	}
next:
	for _, chain := range chains {
		if len(chain) < 2 || n >= maxCAChains {
			continue
		}
		cas := chain[1:]
		for _, c := range cas {
			if hasNameConstraints(c) || hasPolicyConstraints(c) {
				continue next
			}
		}
		h := sha256.New()
		for _, c := range cas {
			h.Write(c.Raw)
		}
		var d [32]byte
		h.Sum(d[:0])
		key := string(cas[0].RawSubject)
		for _, known := range cc.byIssuer[key] {
			if known.digest == d {
				continue next
			}
		}
		pool := x509.NewCertPool()
		pool.AddCert(cas[0])
		cc.byIssuer[key] = append(cc.byIssuer[key], &caChain{
			certs: cas, anchor: &Bundle{Roots: pool, Intermediates: x509.NewCertPool()}, digest: d,
		})
		n++
	}
}

// validAt reports whether every CA certificate of the chain is valid at now,
// as crypto/x509 decides it.
func (c *caChain) validAt(now time.Time) bool {
	for _, cert := range c.certs {
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return false
		}
	}
	return true
}

// hasNameConstraints reports whether c constrains names, as crypto/x509
// applies them along a chain.
func hasNameConstraints(c *x509.Certificate) bool {
	return len(c.PermittedDNSDomains) > 0 || len(c.ExcludedDNSDomains) > 0 ||
		len(c.PermittedIPRanges) > 0 || len(c.ExcludedIPRanges) > 0 ||
		len(c.PermittedEmailAddresses) > 0 || len(c.ExcludedEmailAddresses) > 0 ||
		len(c.PermittedURIDomains) > 0 || len(c.ExcludedURIDomains) > 0
}

// hasPolicyConstraints reports whether c carries anything that makes
// certificate policy processing depend on the rest of the chain.
func hasPolicyConstraints(c *x509.Certificate) bool {
	return c.RequireExplicitPolicy > 0 || c.RequireExplicitPolicyZero ||
		c.InhibitPolicyMapping > 0 || c.InhibitPolicyMappingZero ||
		c.InhibitAnyPolicy > 0 || c.InhibitAnyPolicyZero ||
		len(c.PolicyMappings) > 0
}

// Shortcuts counts the verifications made through a remembered CA part.
func (cc *ChainCache) Shortcuts() int64 { return cc.shortcuts.Load() }

// Remembered counts the CA parts remembered under an issuer's subject
// (DER).
func (cc *ChainCache) Remembered(issuerSubject []byte) int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.byIssuer[string(issuerSubject)])
}

// RememberedIssuers counts the issuers with a remembered CA part.
func (cc *ChainCache) RememberedIssuers() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.byIssuer)
}
