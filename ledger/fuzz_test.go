package ledger_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/natstest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
	"github.com/custodyledger/custody/services/pki"
)

// FuzzAuthenticate feeds untrusted read tokens (the Authorization header of
// HTTP and NATS reads) to Ledger.Authenticate against a registry of
// partners with P-256, P-384 and RSA keys, one revoked and one whose
// certificate has expired. Seeds are the tokens TestReadAccess sends: each
// partner's own, with and without "Bearer ", one signed by another
// partner's key, one with its signature tampered with, a revoked
// partner's, plus tokens of the wrong algorithm. It must never panic, and:
//   - only a blank header is the anonymous reader;
//   - every refusal is ErrUnauthenticated;
//   - an accepted token names a registered, unrevoked partner with a
//     current certificate, is signed with that partner's key, and its
//     claims are what the access contract says: issuer and subject the
//     partner, audience TokenAudience, iat and exp at most
//     MaxTokenLifetime (and the minute's slack) apart, not expired;
//   - the answer does not change when asked again (the partner cache).
//
// The partner keys are derived from their names, so that the tokens the
// coordinator seeds verify in every fuzzing worker too (each builds its own
// registry).
func FuzzAuthenticate(f *testing.F) {
	ca, err := pki.NewRootCA("Test Consortium", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	ps, err := pebble.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ps.Close() })
	type partner struct {
		key          crypto.Signer
		revoked, old bool
	}
	partners := map[string]*partner{
		"acme-tpm":     {key: fixedECDSAKey(f, elliptic.P256(), "acme-tpm")},
		"nova-oem":     {key: fixedECDSAKey(f, elliptic.P384(), "nova-oem")},
		"blue-ops":     {key: fixedRSAKey(f, "blue-ops")},
		"orbit-odm":    {key: fixedECDSAKey(f, elliptic.P256(), "orbit-odm"), revoked: true},
		"delta-ems":    {key: fixedECDSAKey(f, elliptic.P256(), "delta-ems"), old: true},
		"not-a-member": {key: fixedECDSAKey(f, elliptic.P256(), "not-a-member")}, // never registered
	}
	var recs []*ledger.Partner
	for name, p := range partners {
		if name == "not-a-member" {
			continue
		}
		tmpl, err := pki.PartnerTemplate(name, events.RoleODM, time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		if p.old {
			tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-3*time.Hour), time.Now().Add(-time.Hour)
		}
		cert, err := ca.Issue(tmpl, p.key.Public())
		if err != nil {
			f.Fatal(err)
		}
		recs = append(recs, &ledger.Partner{Name: name, Role: events.RoleODM, Certificate: cert.Raw, Revoked: p.revoked})
	}
	if err := ps.Commit(&ledger.Commit{Partners: recs}); err != nil {
		f.Fatal(err)
	}
	trust, logKey := testKeys(f, ca.Cert)
	l, err := ledger.New(context.Background(), ledger.Config{Store: ps, NATS: natstest.Connect(f), LogKey: logKey, Consortium: ca.Cert, TPMTrust: trust})
	if err != nil {
		f.Fatal(err)
	}

	algs := []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.PS256}
	token := func(name string, key crypto.Signer) string {
		tok, err := ledger.NewReadToken(name, key, time.Minute)
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	// The encoder and the parser agree: every partner in good standing gets
	// in with its own token, nobody else does.
	for name, p := range partners {
		tok := token(name, p.key)
		got, err := l.Authenticate("Bearer " + tok)
		if good := !p.revoked && !p.old && name != "not-a-member"; good && (got != name || err != nil) {
			f.Fatalf("%s's own token: %q, %v", name, got, err)
		} else if !good && !errors.Is(err, ledger.ErrUnauthenticated) {
			f.Fatalf("%s's token: %q, %v; want ErrUnauthenticated", name, got, err)
		}
		f.Add("Bearer " + tok)
	}
	own := token("acme-tpm", partners["acme-tpm"].key)
	f.Add(own)
	f.Add("  Bearer " + own + "\r\n")
	f.Add(token("acme-tpm", partners["nova-oem"].key)) // forged
	f.Add(own[:len(own)-4] + "AAAA")                   // tampered
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("a shared secret of 32 bytes ...")}, (&jose.SignerOptions{}).WithType("JWT"))
	hsTok, _ := jwt.Signed(hs).Claims(jwt.Claims{Issuer: "acme-tpm", Subject: "acme-tpm", Audience: jwt.Audience{ledger.TokenAudience}}).Serialize()
	f.Add("Bearer " + hsTok)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhY21lLXRwbSJ9.")
	f.Add("")
	f.Add("Bearer ")
	f.Add("Basic YWNtZS10cG06")

	f.Fuzz(func(t *testing.T, header string) {
		name, err := l.Authenticate(header)
		again, err2 := l.Authenticate(header)
		if again != name || (err == nil) != (err2 == nil) {
			t.Fatalf("asked twice: %q, %v then %q, %v", name, err, again, err2)
		}
		if err != nil {
			if !errors.Is(err, ledger.ErrUnauthenticated) || name != "" {
				t.Fatalf("refusal %q, %v is not ErrUnauthenticated", name, err)
			}
			return
		}
		if name == "" {
			if strings.TrimSpace(header) != "" {
				t.Fatalf("%q was taken for the anonymous reader", header)
			}
			return
		}
		p := partners[name]
		if p == nil || p.revoked || p.old || name == "not-a-member" {
			t.Fatalf("accepted a token for %q, not a partner in good standing", name)
		}
		compact := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(header), "Bearer "))
		tok, err := jwt.ParseSigned(compact, algs)
		if err != nil {
			t.Fatalf("accepted a token that does not parse: %v", err)
		}
		var c jwt.Claims
		if err := tok.Claims(p.key.Public(), &c); err != nil {
			t.Fatalf("accepted a token %s's key did not sign: %v", name, err)
		}
		now := time.Now()
		if c.Issuer != name || c.Subject != name || !slices.Contains(c.Audience, ledger.TokenAudience) ||
			c.IssuedAt == nil || c.Expiry == nil || c.Expiry.Time().Sub(c.IssuedAt.Time()) > ledger.MaxTokenLifetime+time.Minute ||
			now.After(c.Expiry.Time().Add(time.Minute)) {
			t.Fatalf("accepted claims %+v for %s", c, name)
		}
	})
}

// fixedECDSAKey derives a P-256 or P-384 key from label: the same in every
// process. Test keys only.
func fixedECDSAKey(tb testing.TB, curve elliptic.Curve, label string) *ecdsa.PrivateKey {
	tb.Helper()
	sum := sha512.Sum512([]byte("custody fuzz key " + label))
	k, err := ecdsa.ParseRawPrivateKey(curve, sum[:(curve.Params().BitSize+7)/8])
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// fixedRSAKey derives a 2048-bit RSA key from label (Go's GenerateKey
// ignores its reader since Go 1.26). Test keys only.
func fixedRSAKey(tb testing.TB, label string) *rsa.PrivateKey {
	tb.Helper()
	sum := sha512.Sum512([]byte("custody fuzz key " + label))
	r := mrand.NewChaCha8([32]byte(sum[:32]))
	e := big.NewInt(65537)
	prime := func() *big.Int {
		b := make([]byte, 128)
		for {
			for i := 0; i < len(b); i += 8 {
				binary.BigEndian.PutUint64(b[i:], r.Uint64())
			}
			b[0] |= 0xc0 // 1024 bits, and p·q has 2048
			b[len(b)-1] |= 1
			p := new(big.Int).SetBytes(b)
			if p.ProbablyPrime(20) && new(big.Int).GCD(nil, nil, e, new(big.Int).Sub(p, big.NewInt(1))).Cmp(big.NewInt(1)) == 0 {
				return p
			}
		}
	}
	p, q := prime(), prime()
	one := big.NewInt(1)
	pm1, qm1 := new(big.Int).Sub(p, one), new(big.Int).Sub(q, one)
	lambda := new(big.Int).Div(new(big.Int).Mul(pm1, qm1), new(big.Int).GCD(nil, nil, pm1, qm1))
	k := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: int(e.Int64())},
		D:         new(big.Int).ModInverse(e, lambda),
		Primes:    []*big.Int{p, q},
	}
	k.Precompute()
	if err := k.Validate(); err != nil {
		tb.Fatal(err)
	}
	return k
}
