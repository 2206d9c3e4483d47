package gate

import (
	"crypto/x509"
	"time"

	"github.com/custodyledger/custody/attest"
)

// caChains verifies EK certificate chains with the CA part verified once
// per issuer (attest.ChainCache).
type caChains struct{ attest.ChainCache }

// verify verifies an EK certificate's chain to the trust bundle b at now,
// as ek.Verify(b, now) does, and returns the chains found (leaf first).
func (cc *caChains) verify(ek *attest.EKCertificate, b *attest.Bundle, now time.Time) ([][]*x509.Certificate, error) {
	return cc.Verify(ek.Cert, b, now, func(b *attest.Bundle) ([][]*x509.Certificate, error) { return ek.Verify(b, now) })
}
