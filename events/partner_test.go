package events

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testCA is a minimal self-signed root that issues test certificates; the
// consortium CA tooling itself lives in services/pki, above this package.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	return &testCA{cert: issueCert(t, tmpl, tmpl, key, key), key: key}
}

func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	return issueCert(t, tmpl, ca.cert, key, ca.key)
}

func issueCert(t *testing.T, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestVerifyPartner(t *testing.T) {
	consortium := newTestCA(t, "Test Consortium CA")
	roots := x509.NewCertPool()
	roots.AddCert(consortium.cert)
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ext := func(role string) pkix.Extension {
		e, err := RoleExtension(role)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	issue := func(ca *testCA, cn string, exts ...pkix.Extension) *x509.Certificate {
		return ca.issue(t, &x509.Certificate{
			Subject:         pkix.Name{CommonName: cn},
			NotBefore:       now.Add(-time.Minute),
			NotAfter:        now.Add(time.Hour),
			KeyUsage:        x509.KeyUsageDigitalSignature,
			ExtraExtensions: exts,
		}, key)
	}

	good := issue(consortium, "nova-oem", ext(RoleOEM))
	id, err := VerifyPartner(good, roots, now)
	if err != nil {
		t.Fatal(err)
	}
	if id != (PartnerIdentity{Name: "nova-oem", Role: RoleOEM}) {
		t.Fatalf("identity %+v", id)
	}
	if role, err := ParseRole(good); err != nil || role != RoleOEM {
		t.Fatalf("ParseRole = %q, %v", role, err)
	}
	for _, e := range good.Extensions {
		if e.Id.Equal(OIDPartnerRole) && e.Critical {
			t.Error("role extension is critical")
		}
	}

	utf8 := func(s string) []byte {
		v, err := asn1.MarshalWithParams(s, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	notUTF8, _ := asn1.Marshal(42)
	unknownRole := pkix.Extension{Id: OIDPartnerRole, Value: utf8("janitor")}
	badRole := pkix.Extension{Id: OIDPartnerRole, Value: notUTF8}
	rogue := newTestCA(t, "Test Consortium CA") // same name, other key

	cases := []struct {
		name string
		cert *x509.Certificate
		at   time.Time
		want error
	}{
		{"wrong CA", issue(rogue, "orbit-odm", ext(RoleODM)), now, ErrPartnerUntrusted},
		{"missing role", issue(consortium, "orbit-odm"), now, ErrNoRole},
		{"unknown role", issue(consortium, "orbit-odm", unknownRole), now, ErrBadRole},
		{"role not UTF8String", issue(consortium, "orbit-odm", badRole), now, ErrBadRole},
		{"bad name", issue(consortium, "Orbit_ODM", ext(RoleODM)), now, ErrBadPartnerName},
		{"empty name", issue(consortium, "", ext(RoleODM)), now, ErrBadPartnerName},
		{"leading hyphen", issue(consortium, "-odm", ext(RoleODM)), now, ErrBadPartnerName},
		{"expired", good, good.NotAfter.Add(time.Second), ErrPartnerExpired},
		{"not yet valid", good, good.NotBefore.Add(-time.Second), ErrPartnerExpired},
		{"CA certificate", consortium.cert, now, ErrNotPartnerCert},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := VerifyPartner(c.cert, roots, c.at)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
}

// TestValidPartnerName: one rule for certificates, statements and NATS
// subjects (there were two, and a name starting with '-' passed one).
func TestValidPartnerName(t *testing.T) {
	long := strings.Repeat("a", 65)
	for name, want := range map[string]bool{
		"nova-oem": true, "0": true, long[:64]: true,
		"": false, long: false, "-oem": false, "Nova": false, "a.b": false, "a_b": false, "a*": false,
	} {
		if ValidPartnerName(name) != want {
			t.Errorf("ValidPartnerName(%q) = %v, want %v", name, !want, want)
		}
	}
	for _, r := range Roles {
		if !KnownRole(r) {
			t.Errorf("KnownRole(%q) = false", r)
		}
	}
	if KnownRole("janitor") || KnownRole("") {
		t.Error("KnownRole accepted an unknown role")
	}
}

func FuzzParseRoleValue(f *testing.F) {
	for _, r := range Roles {
		v, _ := asn1.MarshalWithParams(r, "utf8")
		f.Add(v)
	}
	f.Add([]byte{0x0c, 0x00})
	f.Add([]byte{0x13, 0x02, 'o', 'k'})
	f.Fuzz(func(t *testing.T, b []byte) {
		role, err := parseRoleValue(b)
		if err != nil {
			return
		}
		// Round trip: what parses re-encodes to the same bytes.
		again, err := asn1.MarshalWithParams(role, "utf8")
		if err != nil {
			t.Fatalf("re-encoding %q: %v", role, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("role %q: %x re-encodes to %x", role, b, again)
		}
	})
}

// TestCustodyArc: the partner-role extension is <custody arc>.1.
func TestCustodyArc(t *testing.T) {
	if want := append(append(asn1.ObjectIdentifier{}, OIDCustodyArc...), 1); !OIDPartnerRole.Equal(want) {
		t.Fatalf("OIDPartnerRole = %v, want %v", OIDPartnerRole, want)
	}
}
