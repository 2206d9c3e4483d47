package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/custodyledger/custody/events"
)

// Names of the demo PKI's authorities.
const (
	DemoWebTrustRootName = "Custody Demo WebTrust Root"
	DemoVendorRootName   = "Acme TPM Root CA"
	DemoVendorMfgCAName  = "Acme TPM Manufacturing CA 001"
	DemoConsortiumName   = "Custody Consortium CA"
	DemoLDevIDCAName     = "Blue Operator LDevID CA"
	DemoTLSCAName        = "Custody Demo TLS CA"
)

// Validity periods of the demo PKI.
const (
	rootValidity    = 20 * 365 * 24 * time.Hour
	caValidity      = 10 * 365 * 24 * time.Hour
	partnerValidity = 2 * 365 * 24 * time.Hour
	tlsValidity     = 2 * 365 * 24 * time.Hour
)

// Files of the demo PKI, relative to its directory (see the package doc).
const (
	FileWebTrustRoot    = "roots/webtrust-root.pem"
	FileWebTrustRootKey = "roots/webtrust-root.key"
	FileVendorRoot      = "vendor/root-ca.pem"
	FileVendorRootKey   = "vendor/root-ca.key"
	FileVendorCross     = "vendor/root-ca-cross.pem"
	FileVendorMfgCA     = "vendor/mfg-ca.pem"
	FileVendorMfgCAKey  = "vendor/mfg-ca.key"
	FileConsortiumCA    = "consortium/ca.pem"
	FileConsortiumCAKey = "consortium/ca.key"
	FileLDevIDCA        = "operator/ldevid-ca.pem"
	FileLDevIDCAKey     = "operator/ldevid-ca.key"
	DirPartners         = "partners"
	FileLogKey          = "log/log.key"
	FileLogPub          = "log/log.pub"
	FileTLSCA           = "tls/ca.pem"
	FileTLSCAKey        = "tls/ca.key"
	FileTLSServer       = "tls/server.pem"
	FileTLSServerKey    = "tls/server.key"
	FileEKTrustBundle   = "ek-trust-bundle.pem"
	FileReadme          = "README.txt"
)

// PartnerSpec names a partner to create and its role.
type PartnerSpec struct {
	Name, Role string
}

// DefaultPartners returns the demo's partners: one per role, plus a second
// operator (grey-operator) used to show a double hand-off.
func DefaultPartners() []PartnerSpec {
	return []PartnerSpec{
		{"acme-tpm", events.RoleTPMVendor},
		{"orbit-odm", events.RoleODM},
		{"nova-oem", events.RoleOEM},
		{"delta-ems", events.RoleEMS},
		{"blue-operator", events.RoleOperator},
		{"grey-operator", events.RoleOperator},
		{"blue-gate", events.RoleGate},
	}
}

// Partner is a partner's identity with its signing key.
type Partner struct {
	Name, Role string
	Cert       *x509.Certificate
	Key        crypto.Signer
}

// Demo is the demo PKI: every authority, partner and key a local Custody
// deployment needs.
type Demo struct {
	Dir          string
	WebTrustRoot *CA               // "Custody Demo WebTrust Root" (GlobalSign-style)
	VendorRoot   *CA               // "Acme TPM Root CA"
	VendorCross  *x509.Certificate // VendorRoot cross-certified by WebTrustRoot
	VendorMfgCA  *CA               // "Acme TPM Manufacturing CA 001", issued by VendorRoot; issues EK and IAK certificates
	ConsortiumCA *CA               // "Custody Consortium CA"; issues partner certificates
	LDevIDCA     *CA               // "Blue Operator LDevID CA", the operator's device-identity CA
	Partners     map[string]*Partner
	LogKey       *ecdsa.PrivateKey // the ledger's checkpoint signing key (P-256)
	TLS          *tls.Certificate  // server certificate for localhost, 127.0.0.1, ::1 (Leaf set)
	TLSCA        *x509.Certificate // "Custody Demo TLS CA", issuer of TLS

	tlsCAKey crypto.Signer
}

// TLSAuthority returns the demo TLS CA with its key, to issue further server
// certificates.
func (d *Demo) TLSAuthority() *CA { return &CA{Cert: d.TLSCA, Key: d.tlsCAKey} }

// InitDemo creates a demo PKI with partners in dir (DefaultPartners when
// partners is empty) and writes it in the documented layout. dir may be missing
// or empty. If dir already holds a complete demo PKI, InitDemo loads it
// instead (it never overwrites) and fails if a requested partner is missing
// from it; any other non-empty dir is refused.
func InitDemo(dir string, partners []PartnerSpec) (*Demo, error) {
	if dir == "" {
		return nil, errors.New("pki: demo PKI needs a directory")
	}
	if len(partners) == 0 {
		partners = DefaultPartners()
	}
	if err := checkPartnerSpecs(partners); err != nil {
		return nil, err
	}
	empty, err := dirEmpty(dir)
	if err != nil {
		return nil, err
	}
	if !empty {
		d, lerr := LoadDemo(dir)
		if lerr != nil {
			return nil, fmt.Errorf("pki: %s is not empty and is not a complete demo PKI (refusing to overwrite): %w", dir, lerr)
		}
		var missing []string
		for _, p := range partners {
			got, ok := d.Partners[p.Name]
			if !ok || got.Role != p.Role {
				missing = append(missing, p.Name+"("+p.Role+")")
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("pki: the demo PKI in %s lacks partners %s; initialise a new directory", dir, strings.Join(missing, ", "))
		}
		return d, nil
	}
	d, err := newDemo(dir, partners)
	if err != nil {
		return nil, err
	}
	if err := d.write(); err != nil {
		cleanDir(dir)
		return nil, err
	}
	return d, nil
}

func checkPartnerSpecs(partners []PartnerSpec) error {
	seen := map[string]bool{}
	for _, p := range partners {
		if !events.ValidPartnerName(p.Name) {
			return fmt.Errorf("pki: %w: %q", events.ErrBadPartnerName, p.Name)
		}
		if !events.KnownRole(p.Role) {
			return fmt.Errorf("pki: partner %q: %w: %q", p.Name, events.ErrBadRole, p.Role)
		}
		if seen[p.Name] {
			return fmt.Errorf("pki: partner %q listed twice", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

func newDemo(dir string, partners []PartnerSpec) (*Demo, error) {
	d := &Demo{Dir: dir, Partners: map[string]*Partner{}}
	var err error
	if d.WebTrustRoot, err = NewRootCA(DemoWebTrustRootName, rootValidity); err != nil {
		return nil, err
	}
	if d.VendorRoot, err = NewRootCA(DemoVendorRootName, rootValidity); err != nil {
		return nil, err
	}
	if d.VendorCross, err = d.WebTrustRoot.CrossCertify(d.VendorRoot.Cert); err != nil {
		return nil, err
	}
	if d.VendorMfgCA, err = d.VendorRoot.NewSubCA(DemoVendorMfgCAName, caValidity); err != nil {
		return nil, err
	}
	if d.ConsortiumCA, err = NewRootCA(DemoConsortiumName, caValidity); err != nil {
		return nil, err
	}
	if d.LDevIDCA, err = NewRootCA(DemoLDevIDCAName, caValidity); err != nil {
		return nil, err
	}
	for _, p := range partners {
		pp, err := d.ConsortiumCA.NewPartner(p.Name, p.Role, partnerValidity)
		if err != nil {
			return nil, err
		}
		d.Partners[p.Name] = pp
	}
	if d.LogKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("pki: generating log key: %w", err)
	}
	tlsCA, err := NewRootCA(DemoTLSCAName, caValidity)
	if err != nil {
		return nil, err
	}
	d.TLSCA = tlsCA.Cert
	if d.TLS, err = tlsCA.IssueTLSServer(tlsValidity, "localhost", "127.0.0.1", "::1"); err != nil {
		return nil, err
	}
	d.tlsCAKey = tlsCA.Key
	return d, nil
}

// NewPartner generates an ECDSA P-256 key for partner name with role and
// issues its certificate with ca (the consortium CA).
func (ca *CA) NewPartner(name, role string, validity time.Duration) (*Partner, error) {
	tmpl, err := PartnerTemplate(name, role, validity)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating key for partner %q: %w", name, err)
	}
	cert, err := ca.Issue(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	return &Partner{Name: name, Role: role, Cert: cert, Key: key}, nil
}

// EKTrustBundle returns the PEM bundle EK certificate chains are verified
// against: the WebTrust root, the vendor root's cross-certificate and the
// manufacturing CA. The vendor's self-signed root is deliberately absent, so
// EK chains must verify through the cross-certificate.
func (d *Demo) EKTrustBundle() []byte {
	return EncodeCertsPEM(d.WebTrustRoot.Cert, d.VendorCross, d.VendorMfgCA.Cert)
}

// ConsortiumPool returns a pool holding the consortium CA, for events.VerifyPartner.
func (d *Demo) ConsortiumPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(d.ConsortiumCA.Cert)
	return p
}

// PartnerNames returns the partners' names, sorted.
func (d *Demo) PartnerNames() []string {
	names := make([]string, 0, len(d.Partners))
	for n := range d.Partners {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (d *Demo) path(rel string) string { return filepath.Join(d.Dir, filepath.FromSlash(rel)) }

func (d *Demo) write() error {
	for _, sub := range []string{"roots", "vendor", "consortium", "operator", DirPartners, "log", "tls"} {
		if err := os.MkdirAll(d.path(sub), 0o755); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
	}
	type certFile struct {
		rel   string
		certs []*x509.Certificate
	}
	type keyFile struct {
		rel string
		key crypto.Signer
	}
	certs := []certFile{
		{FileWebTrustRoot, []*x509.Certificate{d.WebTrustRoot.Cert}},
		{FileVendorRoot, []*x509.Certificate{d.VendorRoot.Cert}},
		{FileVendorCross, []*x509.Certificate{d.VendorCross}},
		{FileVendorMfgCA, []*x509.Certificate{d.VendorMfgCA.Cert}},
		{FileConsortiumCA, []*x509.Certificate{d.ConsortiumCA.Cert}},
		{FileLDevIDCA, []*x509.Certificate{d.LDevIDCA.Cert}},
		{FileTLSCA, []*x509.Certificate{d.TLSCA}},
		{FileTLSServer, []*x509.Certificate{d.TLS.Leaf}},
	}
	keys := []keyFile{
		{FileWebTrustRootKey, d.WebTrustRoot.Key},
		{FileVendorRootKey, d.VendorRoot.Key},
		{FileVendorMfgCAKey, d.VendorMfgCA.Key},
		{FileConsortiumCAKey, d.ConsortiumCA.Key},
		{FileLDevIDCAKey, d.LDevIDCA.Key},
		{FileLogKey, d.LogKey},
		{FileTLSCAKey, d.tlsCAKey},
		{FileTLSServerKey, d.TLS.PrivateKey.(crypto.Signer)},
	}
	for _, name := range d.PartnerNames() {
		p := d.Partners[name]
		certs = append(certs, certFile{DirPartners + "/" + name + ".crt", []*x509.Certificate{p.Cert}})
		keys = append(keys, keyFile{DirPartners + "/" + name + ".key", p.Key})
	}
	for _, c := range certs {
		if err := WriteCertPEM(d.path(c.rel), c.certs...); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if err := WriteKeyPEM(d.path(k.rel), k.key); err != nil {
			return err
		}
	}
	if err := WritePublicKeyPEM(d.path(FileLogPub), d.LogKey.Public()); err != nil {
		return err
	}
	if err := writeFileAtomic(d.path(FileEKTrustBundle), d.EKTrustBundle(), 0o644); err != nil {
		return err
	}
	// The README goes last: its presence marks a completely written PKI.
	return writeFileAtomic(d.path(FileReadme), []byte(demoReadme), 0o644)
}

// LoadDemo loads the demo PKI in dir and checks that it is complete and
// consistent: every file present, every key matching its certificate, the
// issuing relations as InitDemo made them, and every partner certificate
// verifying against the consortium CA now.
func LoadDemo(dir string) (*Demo, error) {
	d := &Demo{Dir: dir, Partners: map[string]*Partner{}}
	if _, err := os.Stat(d.path(FileReadme)); err != nil {
		return nil, fmt.Errorf("pki: %s is not a complete demo PKI: %w", dir, err)
	}
	var err error
	if d.WebTrustRoot, err = d.loadCA(FileWebTrustRoot, FileWebTrustRootKey); err != nil {
		return nil, err
	}
	if d.VendorRoot, err = d.loadCA(FileVendorRoot, FileVendorRootKey); err != nil {
		return nil, err
	}
	if d.VendorCross, err = d.loadCert(FileVendorCross); err != nil {
		return nil, err
	}
	if d.VendorMfgCA, err = d.loadCA(FileVendorMfgCA, FileVendorMfgCAKey); err != nil {
		return nil, err
	}
	if d.ConsortiumCA, err = d.loadCA(FileConsortiumCA, FileConsortiumCAKey); err != nil {
		return nil, err
	}
	if d.LDevIDCA, err = d.loadCA(FileLDevIDCA, FileLDevIDCAKey); err != nil {
		return nil, err
	}
	tlsCA, err := d.loadCA(FileTLSCA, FileTLSCAKey)
	if err != nil {
		return nil, err
	}
	d.TLSCA, d.tlsCAKey = tlsCA.Cert, tlsCA.Key

	// Issuing relations.
	if err := d.VendorCross.CheckSignatureFrom(d.WebTrustRoot.Cert); err != nil {
		return nil, fmt.Errorf("pki: %s is not signed by the WebTrust root: %w", FileVendorCross, err)
	}
	if !publicKeysEqual(d.VendorCross.PublicKey, d.VendorRoot.Cert.PublicKey) ||
		string(d.VendorCross.RawSubject) != string(d.VendorRoot.Cert.RawSubject) {
		return nil, fmt.Errorf("pki: %s does not cross-certify the vendor root", FileVendorCross)
	}
	if err := d.VendorMfgCA.Cert.CheckSignatureFrom(d.VendorRoot.Cert); err != nil {
		return nil, fmt.Errorf("pki: %s is not issued by the vendor root: %w", FileVendorMfgCA, err)
	}

	// Log key.
	logKey, err := ReadKeyPEM(d.path(FileLogKey))
	if err != nil {
		return nil, err
	}
	ek, ok := logKey.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("pki: %s is not an ECDSA P-256 key", FileLogKey)
	}
	d.LogKey = ek
	logPub, err := ReadPublicKeyPEM(d.path(FileLogPub))
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(logPub, ek.Public()) {
		return nil, fmt.Errorf("pki: %s does not match %s", FileLogPub, FileLogKey)
	}

	// TLS server certificate.
	serverCerts, err := ReadCertsPEM(d.path(FileTLSServer))
	if err != nil {
		return nil, err
	}
	serverKey, err := ReadKeyPEM(d.path(FileTLSServerKey))
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(serverCerts[0].PublicKey, serverKey.Public()) {
		return nil, fmt.Errorf("pki: %s does not match %s", FileTLSServerKey, FileTLSServer)
	}
	if err := serverCerts[0].CheckSignatureFrom(d.TLSCA); err != nil {
		return nil, fmt.Errorf("pki: %s is not issued by the TLS CA: %w", FileTLSServer, err)
	}
	chain := make([][]byte, len(serverCerts))
	for i, c := range serverCerts {
		chain[i] = c.Raw
	}
	d.TLS = &tls.Certificate{Certificate: chain, PrivateKey: serverKey, Leaf: serverCerts[0]}

	// Partners.
	entries, err := os.ReadDir(d.path(DirPartners))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	pool := d.ConsortiumPool()
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".crt")
		if !ok || e.IsDir() {
			continue
		}
		rel := DirPartners + "/" + name
		ca, err := d.loadCA(rel+".crt", rel+".key")
		if err != nil {
			return nil, err
		}
		id, err := events.VerifyPartner(ca.Cert, pool, time.Now())
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", rel+".crt", err)
		}
		if id.Name != name {
			return nil, fmt.Errorf("pki: %s holds the certificate of %q", rel+".crt", id.Name)
		}
		d.Partners[name] = &Partner{Name: id.Name, Role: id.Role, Cert: ca.Cert, Key: ca.Key}
	}
	if len(d.Partners) == 0 {
		return nil, fmt.Errorf("pki: no partner certificates in %s", d.path(DirPartners))
	}
	if _, err := os.Stat(d.path(FileEKTrustBundle)); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return d, nil
}

// loadCA reads a certificate (the first in its file) and its key, and checks
// that they match.
func (d *Demo) loadCA(certRel, keyRel string) (*CA, error) {
	cert, err := d.loadCert(certRel)
	if err != nil {
		return nil, err
	}
	key, err := ReadKeyPEM(d.path(keyRel))
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: %s does not match %s", keyRel, certRel)
	}
	return &CA{Cert: cert, Key: key}, nil
}

func (d *Demo) loadCert(rel string) (*x509.Certificate, error) {
	certs, err := ReadCertsPEM(d.path(rel))
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ae, ok := a.(equaler)
	return ok && ae.Equal(b)
}

// dirEmpty reports whether dir is missing or empty (creating it if missing).
func dirEmpty(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("pki: %w", err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("pki: %w", err)
	}
	return len(entries) == 0, nil
}

// cleanDir removes what a failed InitDemo wrote into a directory that was
// empty before.
func cleanDir(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

const demoReadme = `Custody demo PKI (written by "custody pki init"; loaded by custodyd).
For demonstrations and tests only: every private key is on disk, unencrypted.

roots/webtrust-root.pem|.key   "Custody Demo WebTrust Root", self-signed (GlobalSign-style)
vendor/root-ca.pem|.key        "Acme TPM Root CA", the TPM vendor's on-prem root, self-signed
vendor/root-ca-cross.pem       "Acme TPM Root CA" cross-certified by the WebTrust root
vendor/mfg-ca.pem|.key         "Acme TPM Manufacturing CA 001", issued by the vendor root;
                               issues EK and IAK certificates
consortium/ca.pem|.key         "Custody Consortium CA"; issues partner certificates
operator/ldevid-ca.pem|.key    "Blue Operator LDevID CA"; the enrollment gate issues LDevIDs with it
partners/<name>.crt|.key       partner certificates (CN=<name>, role extension) and keys
log/log.key                    the ledger's checkpoint signing key (ECDSA P-256, PKCS#8)
log/log.pub                    its public key (PKIX)
tls/ca.pem|.key                "Custody Demo TLS CA"
tls/server.pem|.key            TLS server certificate for localhost, 127.0.0.1 and ::1
ek-trust-bundle.pem            EK trust anchors: WebTrust root, vendor cross-certificate,
                               manufacturing CA (not the vendor root: EK chains verify
                               through the cross-certificate)

Keys are PKCS#8 PEM, mode 0600. The partner-role extension is OID
1.2.840.113556.1.8000.2554.17272.1685.16848.20150.44954.6520489.14261089.1 (UTF8String).
`
