package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/custodyledger/custody/events"
)

// Caller is who made a request, as proven: a registered, unrevoked
// partner by its mTLS client certificate (the partner's consortium
// certificate, the one in the registry) or, as the documented alternative
// for clients that cannot do mTLS, by a short-lived read token it signed
// (NewReadToken). The zero Caller is anonymous.
type Caller struct {
	Name string // the partner; "" for anonymous
	Role string // its registered role
	// Operator is, for a gate, the operator it enrolls for.
	Operator string
	// Via is how the caller proved itself: "mtls" or "token".
	Via string
}

// Anonymous reports whether the caller proved no identity.
func (c Caller) Anonymous() bool { return c.Name == "" }

// Party is who the caller acts for in custody: a gate acts for its
// operator, anyone else for itself.
func (c Caller) Party() string {
	if c.Role == events.RoleGate && c.Operator != "" {
		return c.Operator
	}
	return c.Name
}

type callerKey struct{}

// WithCaller returns ctx carrying the proven caller of a request.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller WithCaller put in ctx, and whether there
// was one.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// identityCacheTTL bounds how long a verified certificate chain is reused
// before it is verified again. The registry checks (registered, same
// certificate, not revoked) are made on every request.
const identityCacheTTL = 5 * time.Minute

type certIdentity struct {
	id      events.PartnerIdentity
	checked time.Time
}

// identities caches verified client-certificate chains by certificate hash.
type identities struct {
	mu sync.Mutex
	m  map[[32]byte]certIdentity
}

// IdentifyCertificate returns the partner an mTLS client certificate
// proves: it is a partner certificate (events.VerifyPartner: chains to the
// consortium CA, valid now, carries a role) and it is exactly the
// certificate the registry holds for that partner, which is not revoked.
// Any failure wraps ErrUnauthenticated and names the rule broken.
func (l *Ledger) IdentifyCertificate(cert *x509.Certificate) (Caller, error) {
	now := l.cfg.Now()
	h := sha256.Sum256(cert.Raw)
	l.ids.mu.Lock()
	ci, ok := l.ids.m[h]
	l.ids.mu.Unlock()
	if !ok || now.Sub(ci.checked) > identityCacheTTL || now.After(cert.NotAfter) {
		id, err := events.VerifyPartner(cert, l.consortium, now)
		if err != nil {
			return Caller{}, fmt.Errorf("%w: the client certificate is not a consortium partner's: %v", ErrUnauthenticated, err)
		}
		ci = certIdentity{id: id, checked: now}
		l.ids.mu.Lock()
		if l.ids.m == nil || len(l.ids.m) > 4096 {
			l.ids.m = map[[32]byte]certIdentity{}
		}
		l.ids.m[h] = ci
		l.ids.mu.Unlock()
	}
	k := l.partnerKey(ci.id.Name)
	switch {
	case k == nil:
		return Caller{}, fmt.Errorf("%w: %q is not a registered partner", ErrUnauthenticated, ci.id.Name)
	case k.rec.Revoked:
		return Caller{}, fmt.Errorf("%w: partner %q is revoked", ErrUnauthenticated, ci.id.Name)
	case !bytes.Equal(k.cert, cert.Raw):
		return Caller{}, fmt.Errorf("%w: the client certificate is not the one registered for %q", ErrUnauthenticated, ci.id.Name)
	}
	return Caller{Name: k.rec.Name, Role: k.rec.Role, Operator: k.rec.Operator, Via: "mtls"}, nil
}

// Identify returns the proven caller of r: its mTLS client certificate if
// it presented one, else its bearer read token (sent only over TLS), else
// anonymous. A credential that does not prove a registered, unrevoked
// partner is an error wrapping ErrUnauthenticated: a caller that presents
// a bad credential is refused, never served as anonymous. Other
// Authorization schemes (the DPS API's SharedAccessSignature) are not read
// tokens and leave the caller anonymous.
func (l *Ledger) Identify(r *http.Request) (Caller, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return l.IdentifyCertificate(r.TLS.PeerCertificates[0])
	}
	auth := strings.TrimSpace(r.Header.Get("Authorization"))
	if !strings.HasPrefix(auth, "Bearer ") {
		return Caller{}, nil
	}
	name, err := l.Authenticate(auth)
	if err != nil {
		return Caller{}, err
	}
	k := l.partnerKey(name)
	if k == nil {
		return Caller{}, errors.Join(ErrUnauthenticated, fmt.Errorf("%q is not a registered partner", name))
	}
	return Caller{Name: name, Role: k.rec.Role, Operator: k.rec.Operator, Via: "token"}, nil
}

// caller is the proven caller of a request to the ledger's own handlers:
// the one the serving stack put in its context, else identified here.
func (l *Ledger) caller(r *http.Request) (Caller, error) {
	if c, ok := CallerFrom(r.Context()); ok {
		return c, nil
	}
	return l.Identify(r)
}
