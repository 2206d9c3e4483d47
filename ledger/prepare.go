package ledger

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/schemas"
)

// Verification is split in two. prepare, the stateless part, runs on a pool
// of verifiers, one per core, message by message: it parses the envelope, validates the
// schema and the subject, verifies the partner's signature, computes the
// binding digest, verifies the TPM quote and builds the leaf body. Its
// results depend only on the event and on facts that never change once
// committed: a registered partner's certificate (revocation is state, and
// is checked later) and a manufactured device's IAK. The sequential part
// (rules.go, apply.go) then applies the custody rules in stream order and
// uses a prepared result only when the fact it was checked against is the
// one the sequential state holds; otherwise it checks again itself.

// prepared is the stateless verification of one message.
type prepared struct {
	msg     jetstream.Msg
	done    chan struct{} // closed when prepare has filled in the rest
	seq     uint64
	subject string
	data    []byte

	signed  *events.Signed // nil when the envelope is malformed
	openErr error

	early *RuleError // schema or subject refusal (the first checks)

	sigCert     []byte   // the certificate the signature was checked against (nil: not checked)
	sigCertHash [32]byte // its SHA-256 (how verdicts name it)
	sigOK       bool
	body        []byte // hashedrekord leaf, when sigOK

	nonce    []byte // binding digest (or the enrollment challenge)
	nonceErr *RuleError

	iak       []byte   // IAK public area the quote was checked against (nil: not checked)
	iakDigest [32]byte // its SHA-256 (how verdicts name it)
	quote     *attest.QuoteInfo
	quoteErr  *RuleError

	mfg    *Device    // tpm.manufactured: the device it creates, when its evidence holds
	mfgErr *RuleError // tpm.manufactured: why its evidence fails

	manifest []byte            // shipments: the manifest (JSON) as stored
	proofs   map[string][]byte // shipments: each device's manifest proof (JSON)

	// A batch's members, prepared as events of their own (when the batch's
	// own checks passed); for a member, batch is the batch and
	// memberProof its MemberProof (JSON) as the device index stores it.
	members     []*prepared
	batch       *prepared
	memberProof []byte
}

// prepareMembers prepares a batch's members (pr's signature checked):
// their schemas, binding digests and quotes, on every core when the batch
// is large, and each member's proof.
func (l *Ledger) prepareMembers(pr *prepared) {
	ms := pr.signed.Members
	proofs, err := pr.signed.MemberProofs()
	if err != nil {
		pr.early = reject(events.CodeManifest, "%v", err)
		return
	}
	pr.members = make([]*prepared, len(ms))
	for i, m := range ms {
		mp := &prepared{batch: pr, seq: pr.seq, signed: m}
		if l.verdictsOnly {
			pr.members[i] = mp // a Verifier: no proof to store
			continue
		}
		if mp.memberProof, err = json.Marshal(proofs[i]); err != nil {
			pr.early = reject(events.CodeManifest, "%v", err)
			return
		}
		pr.members[i] = mp
	}
	workers := min(runtime.GOMAXPROCS(0), (len(ms)+15)/16)
	if workers <= 1 {
		for _, mp := range pr.members {
			l.prepareStatement(mp, nil)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(pr.members); i += workers {
				l.prepareStatement(pr.members[i], nil)
			}
		})
	}
	wg.Wait()
}

// facts caches what prepare and the read API check against: partners'
// registry records with their parsed certificates, and devices' IAKs
// (parsed once per key). A partner's certificate and a device's IAK never
// change in the log; a partner's record changes once, when it is revoked,
// so partners are dropped after every commit that changes one
// (forgetPartners), and a record read from the store while that happened
// is not cached. The device cache is bounded.
type facts struct {
	mu         sync.RWMutex
	partners   map[string]*partnerKey
	partnerGen uint64 // bumped by forgetPartners
	iaks       map[string]*attest.AttestationKey
	// valid holds, by certificate DER, the span of time over which a
	// partner certificate verified (checkSigner) and every certificate of
	// its chain is valid: inside it, the answer at any time is the same.
	valid map[string]validSpan
}

// validSpan is a span of time, both ends included.
type validSpan struct{ from, to time.Time }

// partnerKey is a committed partner: its registry record, its certificate
// (DER and parsed) and public key.
type partnerKey struct {
	rec      *Partner
	cert     []byte
	certHash [32]byte // SHA-256 of cert (how verdicts name it)
	parsed   *x509.Certificate
	pub      crypto.PublicKey
}

// maxCachedIAKs bounds the device IAK cache (about 200 bytes each).
const maxCachedIAKs = 200_000

func newFacts() *facts {
	return &facts{partners: map[string]*partnerKey{}, iaks: map[string]*attest.AttestationKey{}, valid: map[string]validSpan{}}
}

// maxCachedCerts bounds the cache of verified partner certificates.
const maxCachedCerts = 10_000

// signerValid checks the signer's registered certificate at the event's
// time at, with checkSigner (which offline replay runs too). A certificate
// verified once is not verified again while at stays inside the span over
// which it and the consortium CA are valid: chain verification is an ECDSA
// verification of its own, and the registry's certificates do not change.
func (l *Ledger) signerValid(signer *Partner, at time.Time) *RuleError {
	f := l.facts
	key := string(signer.Certificate)
	f.mu.RLock()
	span, ok := f.valid[key]
	f.mu.RUnlock()
	if ok && !at.Before(span.from) && !at.After(span.to) {
		return nil
	}
	cert, err := x509.ParseCertificate(signer.Certificate)
	if err != nil {
		return reject(events.CodeBadCertificate, "the signer's registered certificate: %v", err)
	}
	if _, rerr := checkSigner(cert, l.consortium, at, signer.Name); rerr != nil {
		return rerr
	}
	span = validSpan{from: cert.NotBefore, to: cert.NotAfter}
	if ca := l.cfg.Consortium; ca != nil {
		if ca.NotBefore.After(span.from) {
			span.from = ca.NotBefore
		}
		if ca.NotAfter.Before(span.to) {
			span.to = ca.NotAfter
		}
	}
	f.mu.Lock()
	if len(f.valid) >= maxCachedCerts {
		clear(f.valid)
	}
	f.valid[key] = span
	f.mu.Unlock()
	return nil
}

// factSource is where facts are read: the store, or a Verifier's source.
func (l *Ledger) factSource() FactSource {
	if l.lookup != nil {
		return l.lookup
	}
	return l.cfg.Store
}

// partnerKey returns a committed partner (revoked or not), or nil for a
// name the registry does not hold.
func (l *Ledger) partnerKey(name string) *partnerKey {
	f := l.facts
	f.mu.RLock()
	k, ok := f.partners[name]
	gen := f.partnerGen
	f.mu.RUnlock()
	if ok {
		return k
	}
	p, err := l.factSource().Partner(name)
	if err != nil || p == nil {
		return nil
	}
	cert, err := x509.ParseCertificate(p.Certificate)
	if err != nil {
		return nil
	}
	k = &partnerKey{rec: p, cert: p.Certificate, certHash: sha256.Sum256(p.Certificate), parsed: cert, pub: cert.PublicKey}
	f.mu.Lock()
	if f.partnerGen == gen {
		f.partners[name] = k
	}
	f.mu.Unlock()
	return k
}

// forgetPartners drops cached partners (after a commit that changed them;
// nil: all of them).
func (l *Ledger) forgetPartners(names []string) {
	f := l.facts
	f.mu.Lock()
	if names == nil {
		clear(f.partners)
	}
	for _, n := range names {
		delete(f.partners, n)
	}
	f.partnerGen++
	f.mu.Unlock()
}

// deviceIAK returns a committed device's parsed IAK, or nil.
func (l *Ledger) deviceIAK(id string) *attest.AttestationKey {
	f := l.facts
	f.mu.RLock()
	k, ok := f.iaks[id]
	f.mu.RUnlock()
	if ok {
		return k
	}
	d, err := l.factSource().Device(id)
	if err != nil || d == nil {
		return nil
	}
	k, err = attest.ParseAttestationKey(d.IAKPublic)
	if err != nil {
		return nil
	}
	f.mu.Lock()
	if len(f.iaks) >= maxCachedIAKs {
		clear(f.iaks)
	}
	f.iaks[id] = k
	f.mu.Unlock()
	return k
}

// prepare is the stateless verification of one message (see above),
// filling in pr (whose msg is set).
func (l *Ledger) prepare(pr *prepared) {
	if m := pr.msg; m != nil { // else a Verifier's: subject and data set
		pr.subject, pr.data = m.Subject(), m.Data()
		if meta, err := m.Metadata(); err == nil {
			pr.seq = meta.Sequence.Stream
		}
	}
	pr.signed, pr.openErr = events.OpenMessage(pr.data)
	var manifestErr error
	if errors.Is(pr.openErr, events.ErrManifest) && pr.signed != nil {
		// The envelope opened but its manifest does not match it: refused
		// under the shipment's digest, after the schema and subject.
		manifestErr, pr.openErr = pr.openErr, nil
	}
	if pr.openErr != nil {
		pr.signed = nil
		return
	}
	l.prepareStatement(pr, manifestErr)
	if s := pr.signed; s.Members != nil && pr.early == nil && pr.sigOK {
		l.prepareMembers(pr)
	}
}

// prepareStatement is prepare for one opened statement: a message's, or a
// batch member's (pr.batch set: no subject of its own; its signature is the
// batch's, already checked).
func (l *Ledger) prepareStatement(pr *prepared, manifestErr error) {
	s := pr.signed
	st := s.Statement
	p := &st.Predicate
	// One generic parse of the payload serves the schema and the binding
	// digest: Open's, when it made one.
	// The verifier pool's verdict, if any (verdict.go): each part is used
	// only when made against the certificate and IAK this ledger holds.
	var v *Verdict
	if l.verdicts != nil {
		v = l.verdicts.take(s.Digest, pr.seq, l.cfg.VerdictWait, l.cfg.Now())
	}
	doc, err := s.Doc, error(nil)
	if doc == nil {
		doc, err = schemas.Decode(s.Payload)
	}
	if err == nil && (v == nil || !v.Schema) {
		err = schemas.ValidateDocument(p.Kind, doc)
	}
	if err != nil {
		pr.early = reject(events.CodeSchema, "%v", err)
		return
	}
	if want := events.EventSubject(p.Partner, st.Target()); pr.batch == nil && pr.subject != want {
		pr.early = reject(events.CodeSubject, "published on %s, but the statement is by %s about %s (subject %s)", pr.subject, p.Partner, st.Target(), want)
		return
	}
	if manifestErr != nil {
		pr.early = reject(events.CodeManifest, "%v", manifestErr)
		return
	}
	var pub crypto.PublicKey
	if pr.batch != nil {
		pr.sigCert, pr.sigCertHash, pr.sigOK = pr.batch.sigCert, pr.batch.sigCertHash, pr.batch.sigOK
	} else if p.Kind == events.KindPartnerRegistered || p.Kind == events.KindPartnerRevoked {
		pr.sigCert, pr.sigCertHash, pub = l.cfg.Consortium.Raw, l.consortiumHash, l.cfg.Consortium.PublicKey
	} else if k := l.partnerKey(p.Partner); k != nil {
		pr.sigCert, pr.sigCertHash, pub = k.cert, k.certHash, k.pub
	}
	if pr.sigCert != nil && pr.batch == nil {
		pr.sigOK = (v != nil && v.SigCert == pr.sigCertHash) || s.Verify(pub) == nil
		if pr.sigOK && !l.verdictsOnly {
			pr.body, _ = HashedRekordBody(s.Digest[:], s.Signature, pr.sigCert)
		}
	}
	if p.Kind == events.KindPartnerRegistered || p.Kind == events.KindPartnerRevoked || p.Kind == events.KindEnrollmentRefused || p.Kind == events.KindBatchSigned {
		return // rare, or a batch (its members are prepared next): the sequential rules check the rest
	}
	if s.Manifest != nil {
		// A shipment carries no quote; what the verifiers can do for it is
		// build each device's path to the manifest root, once its signature
		// verified (the applier checks again what it could not know).
		if pr.sigOK {
			pr.manifest, pr.proofs, pr.nonceErr = encodeManifest(s.Manifest)
		}
		return
	}
	if p.Kind == events.KindDeviceEnrolled {
		pr.nonce = p.Enrolled.Challenge
	} else if n, err := events.BindingDigestOf(doc); err != nil {
		pr.nonceErr = reject(events.CodeMalformed, "%v", err)
	} else {
		pr.nonce = n
	}
	if p.Kind == events.KindTPMManufactured {
		if pr.mfgErr = pr.nonceErr; pr.mfgErr == nil && !l.verdictsOnly {
			// (A verdict does not carry a device's birth: the ledger
			// checks it, once per device.)
			pr.mfg, pr.mfgErr = l.checkManufactured(s, pr.nonce)
		}
		return
	}
	if pr.nonceErr != nil {
		return
	}
	if k := l.deviceIAK(st.Device()); k != nil {
		pr.iak, pr.iakDigest = k.TPMTPublic(), k.PublicDigest()
		if v != nil && v.Quote != nil && v.IAK == pr.iakDigest && bytes.Equal(v.Quote.Nonce, pr.nonce) {
			pr.quote = v.Quote
		} else {
			pr.quote, pr.quoteErr = verifyEvidence(k, p.Evidence, pr.nonce)
		}
	}
}

// signatureOK reports whether the envelope's signature verifies with cert,
// using the prepared check when it was made against the same certificate.
func (pr *prepared) signatureOK(cert []byte) (bool, error) {
	if pr.sigCert != nil && bytes.Equal(pr.sigCert, cert) {
		return pr.sigOK, nil
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		return false, err
	}
	pr.sigCert, pr.sigCertHash, pr.sigOK, pr.body = cert, sha256.Sum256(cert), pr.signed.Verify(c.PublicKey) == nil, nil
	return pr.sigOK, nil
}

// leaf returns the hashedrekord body for an event whose signature verified
// with cert.
func (pr *prepared) leaf(cert []byte) ([]byte, error) {
	if pr.body != nil && bytes.Equal(pr.sigCert, cert) {
		return pr.body, nil
	}
	return HashedRekordBody(pr.signed.Digest[:], pr.signed.Signature, cert)
}

// evidence returns the verified quote of the event against the device's
// IAK, using the prepared check when it was made against the same IAK.
// Counters are the sequential part's to compare.
func (pr *prepared) evidence(iakPublic []byte) (*attest.QuoteInfo, *RuleError) {
	if pr.iak != nil && bytes.Equal(pr.iak, iakPublic) {
		return pr.quote, pr.quoteErr
	}
	k, err := attest.ParseAttestationKey(iakPublic)
	if err != nil {
		return nil, reject(events.CodeEvidence, "the device's IAK: %v", err)
	}
	return verifyEvidence(k, pr.signed.Statement.Predicate.Evidence, pr.nonce)
}

// encodeManifest returns a shipment's manifest and every device's manifest
// proof, JSON-encoded as the store keeps them.
func encodeManifest(m *events.Manifest) ([]byte, map[string][]byte, *RuleError) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, nil, reject(events.CodeManifest, "%v", err)
	}
	_, proofs, err := m.Proofs()
	if err != nil {
		return nil, nil, reject(events.CodeManifest, "%v", err)
	}
	out := make(map[string][]byte, len(proofs))
	for dev, p := range proofs {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, nil, reject(events.CodeManifest, "%v", err)
		}
		out[dev] = b
	}
	return raw, out, nil
}
