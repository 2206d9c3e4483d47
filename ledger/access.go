package ledger

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custodyledger/custody/events"
)

// Public proofs, private contents (DESIGN, "The log"). The tree, its
// checkpoints, proofs and hashedrekord leaves are public: a leaf holds only
// a digest, a signature and the partner's certificate. The envelopes, and
// which devices a partner handled, are not:
//
//   - a partner reads the envelopes of its own events;
//   - the device's current custodian, and the recipient of its pending
//     offer, read the device's whole history (an operator sees the history
//     of devices it holds or is about to receive); a gate reads as its
//     operator;
//   - any registered partner reads partner-registry entries;
//   - nobody else reads a device's history, not even which entries it has.
//
// A partner proves who it is with a short-lived token it signs with its
// consortium key: a JWT (RFC 7519, ES256) whose issuer and subject are its
// name and whose audience is TokenAudience, sent as "Authorization: Bearer"
// on HTTP and in the Authorization header of NATS requests. The ledger
// checks it against the partner's certificate in the log's registry, so a
// revoked partner's tokens stop working at once.

// TokenAudience is the audience of read tokens.
const TokenAudience = "custody-ledger"

// MaxTokenLifetime bounds a read token's validity (exp - iat).
const MaxTokenLifetime = 10 * time.Minute

// forbiddenHistory is the sentence a refused history read answers with.
const forbiddenHistory = "only the device's custodian, its pending recipient, and the partners that published its entries read its history"

// Access errors.
var (
	ErrUnauthenticated = errors.New("ledger: this read needs a partner's token")
	ErrForbidden       = errors.New("ledger: the caller has no right to read this")
)

// NewReadToken signs a read token for partner with its consortium key,
// valid for ttl (at most MaxTokenLifetime).
func NewReadToken(partner string, key crypto.Signer, ttl time.Duration) (string, error) {
	if ttl <= 0 || ttl > MaxTokenLifetime {
		ttl = MaxTokenLifetime
	}
	var alg jose.SignatureAlgorithm
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		alg = map[string]jose.SignatureAlgorithm{"P-256": jose.ES256, "P-384": jose.ES384}[pub.Curve.Params().Name]
	case *rsa.PublicKey:
		alg = jose.PS256
	}
	if alg == "" {
		return "", errors.New("ledger: read token: the key is neither ECDSA P-256/P-384 nor RSA")
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: cryptosigner.Opaque(key)}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("ledger: read token: %w", err)
	}
	now := time.Now()
	return jwt.Signed(sig).Claims(jwt.Claims{
		Issuer: partner, Subject: partner, Audience: jwt.Audience{TokenAudience},
		IssuedAt: jwt.NewNumericDate(now.Add(-5 * time.Second)), Expiry: jwt.NewNumericDate(now.Add(ttl)),
	}).Serialize()
}

// Authenticate checks a read token ("" or a bearer token) and returns the
// partner it names: registered, not revoked, its certificate valid now, the
// token signed by that certificate's key, unexpired and for this ledger.
// An empty token is the anonymous reader ("", nil).
func (l *Ledger) Authenticate(token string) (string, error) {
	token = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(token), "Bearer "))
	if token == "" {
		return "", nil
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.PS256})
	if err != nil {
		return "", fmt.Errorf("%w: malformed token: %v", ErrUnauthenticated, err)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", fmt.Errorf("%w: malformed token: %v", ErrUnauthenticated, err)
	}
	name := unverified.Subject
	k := l.partnerKey(name)
	if k == nil {
		return "", fmt.Errorf("%w: %q is not a registered partner", ErrUnauthenticated, name)
	}
	if k.rec.Revoked {
		return "", fmt.Errorf("%w: partner %q is revoked", ErrUnauthenticated, name)
	}
	now := l.cfg.Now()
	if now.Before(k.parsed.NotBefore) || now.After(k.parsed.NotAfter) {
		return "", fmt.Errorf("%w: partner %q's certificate is not valid now", ErrUnauthenticated, name)
	}
	var c jwt.Claims
	if err := tok.Claims(k.pub, &c); err != nil {
		return "", fmt.Errorf("%w: the token is not signed by partner %q's key", ErrUnauthenticated, name)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: name, Subject: name, AnyAudience: jwt.Audience{TokenAudience}, Time: now}, 30*time.Second); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if c.Expiry == nil || c.IssuedAt == nil || c.Expiry.Time().Sub(c.IssuedAt.Time()) > MaxTokenLifetime+time.Minute {
		return "", fmt.Errorf("%w: a token must carry iat and exp at most %v apart", ErrUnauthenticated, MaxTokenLifetime)
	}
	return name, nil
}

// readerParty is who a reader acts for in custody: a gate reads as its
// operator.
func (l *Ledger) readerParty(reader string) string {
	if k := l.partnerKey(reader); k != nil && k.rec.Role == events.RoleGate && k.rec.Operator != "" {
		return k.rec.Operator
	}
	return reader
}

// holdsHistory reports whether reader may read dev's whole history: it is
// the custodian, or the recipient of the pending offer.
func (l *Ledger) holdsHistory(reader string, dev *Device) bool {
	party := l.readerParty(reader)
	return party != "" && (dev.Custodian == party || (dev.Pending != nil && dev.Pending.To == party))
}

// canReadEntry reports whether reader may read entry e (its envelope).
func (l *Ledger) canReadEntry(reader string, e *Entry) bool {
	if reader == "" {
		return false
	}
	if e.Partner == reader {
		return true
	}
	if e.Kind == events.KindPartnerRegistered || e.Kind == events.KindPartnerRevoked {
		return true
	}
	dev, err := l.cfg.Store.Device(e.Target)
	return err == nil && dev != nil && l.holdsHistory(reader, dev)
}

// ProvenanceFor is Provenance as reader may see it: the whole history for
// the device's custodian or its pending recipient; only its own entries
// (device state withheld) for a partner that handled the device before;
// ErrForbidden for anyone else, and ErrUnauthenticated for the anonymous
// reader. Proofs are built only for the entries the reader gets.
func (l *Ledger) ProvenanceFor(device, reader string) (*Provenance, error) {
	return l.ProvenancePageFor(device, reader, Page{})
}

// ProvenancePageFor is ProvenanceFor limited to a page of the history.
func (l *Ledger) ProvenancePageFor(device, reader string, page Page) (*Provenance, error) {
	if reader == "" {
		return nil, ErrUnauthenticated
	}
	holds := false
	p, err := l.provenance(device, func(dev *Device) func(*Entry) bool {
		if holds = l.holdsHistory(reader, dev); holds {
			return nil
		}
		return func(e *Entry) bool { return e.Partner == reader }
	}, page)
	if err != nil {
		return nil, err
	}
	if holds {
		return p, nil
	}
	if len(p.Entries) == 0 {
		return nil, ErrForbidden
	}
	p.Device = nil
	return p, nil
}

// entryFor is a proven entry as reader may see it: without its envelope
// unless reader may read it.
func (l *Ledger) entryFor(i, size uint64, reader string) (*ProvenEntry, error) {
	e, err := l.cfg.Store.Entry(i)
	if err != nil {
		return nil, err
	}
	hashes, err := inclusionProof(l.cfg.Store, i, size)
	if err != nil {
		return nil, err
	}
	pe := provenEntry(i, e, hashes)
	if !l.canReadEntry(reader, e) {
		pe.Envelope = nil
	}
	return &pe, nil
}

// PendingOffersFor lists the devices offered to to, for to itself (or its
// gate) only.
func (l *Ledger) PendingOffersFor(to, reader string) ([]string, error) {
	if reader == "" {
		return nil, ErrUnauthenticated
	}
	if reader != to && l.readerParty(reader) != to {
		return nil, ErrForbidden
	}
	return l.cfg.Store.PendingOffers(to)
}
