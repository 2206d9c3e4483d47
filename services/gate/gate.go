// Package gate is the operator's enrollment gate: the service a device talks
// to at first boot. It speaks Azure DPS's device registration protocol with
// TPM attestation (PUT /{idScope}/registrations/{id}/register, a first call
// answered 401 with a credential encrypted to the device's EK, a second
// call authorised by a SAS token keyed with the activated secret and
// answered 202 "assigning", then GET …/operations/{operationId}), in
// api-versions 2019-03-31 to 2025-07-01-preview (csr, and
// issuedCertificateChain in the answer). It adds what DPS does not check:
// the EK certificate chain through cross-signed CAs, a fresh quote by the
// IAK the ledger holds for the device, and the device's custody history in
// the ledger, against a documented Policy. Only a device whose every check
// passes gets an LDevID for a TPM-resident key certified by its IAK, an
// enrollment in DPS, and a device.enrolled entry in the ledger; every
// refusal is logged as enrollment.refused, naming the rule. The gate also
// serves the LDevID CA's CRL (superseded LDevIDs, and those of devices the
// ledger shows flagged or decommissioned) and disables the DPS enrollment
// of such devices.
//
// The messages of the device API are the package gatewire, which the
// device agent imports instead of this one.
//
// See docs/design/enrollment.md for the protocol, the policy and the threat
// model.
package gate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/pki"
)

// DeviceState is what the gate reads of the ledger.
type DeviceState interface {
	Device(id string) (*ledger.Device, error)
}

// Log is what the gate reads of the log at start-up to rebuild its
// register of issued LDevIDs from its own device.enrolled entries.
// ledger.Store satisfies it.
type Log interface {
	Head() (ledger.Head, error)
	Entry(index uint64) (*ledger.Entry, error)
	// ManifestProof reads a device's part of a station batch (the gate
	// logs its records in batches: record.go).
	ManifestProof(device string, index uint64) ([]byte, error)
}

// Registry is what the gate needs of the provisioning service:
// services/dps's ServiceClient satisfies it, against the emulator and the
// real DPS service API.
type Registry interface {
	// Enroll makes cert the device's individual enrollment certificate and
	// enables the enrollment, creating it if needed.
	Enroll(ctx context.Context, registrationID string, cert *x509.Certificate) error
	// SetEnabled enables or disables the device's enrollment.
	SetEnabled(ctx context.Context, registrationID string, enabled bool) error
}

// Config configures a gate.
type Config struct {
	// Name is the gate's partner name; Operator the operator it enrolls for.
	Name, Operator string
	// IDScope is the operator's DPS ID scope; requests for another scope are
	// refused.
	IDScope string
	// Key signs device.enrolled and enrollment.refused (the gate's partner key).
	Key crypto.Signer
	// NATS carries the gate's events to the ledger.
	NATS *nats.Conn
	// ReceiptVerifier proves the ledger's receipts of the gate's events
	// (inclusion proof, checkpoint signed by the log's key):
	// ledger.NewReceiptVerifier with the log's public key and the gate's
	// registered certificate. Required.
	ReceiptVerifier events.ReceiptVerifier
	// Ledger answers custody-state questions.
	Ledger DeviceState
	// TPMTrust verifies EK certificate chains.
	TPMTrust *attest.Bundle
	// LDevIDCA issues LDevID certificates and signs the CRL.
	LDevIDCA *pki.CA
	// Registry creates the DPS enrollment.
	Registry Registry
	// Log, if set, is read once by New to rebuild the register of issued
	// LDevIDs (what the CRL is made from) from this gate's device.enrolled
	// entries, so a restart forgets no superseded LDevID. Nil: the register
	// starts empty.
	Log Log
	// DPSEndpoint is the device-facing DPS URL returned to enrolled devices.
	DPSEndpoint string
	// Policy is what a device must show; see Policy. Validated by New.
	Policy Policy
	// ChallengeTTL bounds the time between the two registration calls.
	// Default 2 minutes.
	ChallengeTTL time.Duration
	// OperationTTL is how long a registration operation can be polled after
	// it was decided. Default 10 minutes.
	OperationTTL time.Duration
	// LDevIDValidity is an LDevID's lifetime. Default 1 year.
	LDevIDValidity time.Duration
	// CRLValidity is the interval between a CRL's thisUpdate and
	// nextUpdate. Default 1 hour.
	CRLValidity time.Duration
	// RefusalLogInterval is the refusal window: refusals are recorded in
	// aggregate, at most one enrollment.refused entry (for devices the
	// ledger knows) and one log line per device per window, each carrying
	// the count of refusals since the previous record; Run writes the
	// records of windows that closed with refusals not yet recorded. The
	// window also bounds the refusal limits below. Default 10 minutes.
	RefusalLogInterval time.Duration
	// RefusalsPerDevice and RefusalsPerSource are how many refusals a
	// registration ID (an EK) and a source address may collect in one
	// window; beyond that both registration calls are answered 429 with
	// Retry-After (DPS's throttling), before any cryptography, until the
	// window ends. Defaults 10 and 100.
	RefusalsPerDevice, RefusalsPerSource int
	// RevocationFile, if set, is the file (JSON lines, fsynced) where the
	// gate keeps the revocations its log does not hold: LDevIDs issued but
	// never recorded in the ledger, and those the operator revoked
	// (Revoke). New reads it back. Empty: such revocations live in memory
	// only and a restart forgets them.
	RevocationFile string
	// PublishTimeout bounds the wait for the ledger's receipt of a decision.
	// Default 30 s.
	PublishTimeout time.Duration
	// RecordWindow is how long the gate waits for more records before it
	// logs the ones waiting as one batch (group commit, record.go). 0, the
	// default, waits for nothing: the records that arrived while the last
	// batch was being logged go together.
	RecordWindow time.Duration
	// SweepInterval is how often Run sweeps: it disables the DPS enrollment
	// of every device with an LDevID that the ledger now shows flagged or
	// decommissioned (DPS and IoT Hub do not read CRLs). Default 30 s.
	SweepInterval time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Gate decides first-boot enrollments.
type Gate struct {
	cfg Config
	pub *events.Publisher

	mu         sync.Mutex
	challenges map[string][]*challenge // by registration ID, oldest first, at most maxChallenges
	decisions  []*gatewire.Decision
	ops        map[string]*operation // by operation ID
	opOrder    []string              // operation IDs, oldest first
	limits     limiter
	records    sync.WaitGroup // refusal records being written
	recordSem  chan struct{}  // bounds the refusal records written at once
	rec        recorder       // records waiting for group commit (record.go)
	// publishFn publishes a signed event and waits for the ledger's
	// receipt: publish, or a test's fake ledger.
	publishFn    func(ctx context.Context, st *events.Statement) (uint64, error)
	revocations  *revocationFile // nil: revocations the log does not hold are kept in memory only
	ldevids      ldevids
	ekMu         sync.RWMutex
	ekCache      map[[32]byte]ekVerified // SHA-256 of an EK certificate → its verification
	caChains     caChains                // the verified CA parts of EK certificate chains
	ldevidSigner *ldevidSigner
}

// challenge is one answer of Begin: the credential's secret and the nonce,
// bound to the EK the credential was encrypted to and the IAK (its name)
// it was made for. The SAS token keyed by the secret identifies it.
type challenge struct {
	ek, iak []byte // TPMT_PUBLIC areas, as the first call sent them
	secret  []byte
	nonce   []byte
	expires time.Time
}

// Limits on what the gate keeps in memory.
const (
	maxDecisions  = 100_000
	maxOperations = 100_000
	maxBody       = 1 << 20
)

// New validates cfg and returns a gate.
func New(cfg Config) (*Gate, error) {
	return newGate(cfg, nil)
}

// newGate is New; publish, if not nil, replaces the publishing of signed
// events on NATS (a test's ledger), and then cfg.NATS may be nil.
func newGate(cfg Config, publish func(context.Context, *events.Statement) (uint64, error)) (*Gate, error) {
	switch {
	case !events.ValidPartnerName(cfg.Name) || !events.ValidPartnerName(cfg.Operator):
		return nil, errors.New("gate: Name and Operator must be partner names")
	case cfg.IDScope == "":
		return nil, errors.New("gate: IDScope is required")
	case cfg.Key == nil || cfg.NATS == nil && publish == nil || cfg.ReceiptVerifier == nil && publish == nil || cfg.Ledger == nil || cfg.TPMTrust == nil || cfg.LDevIDCA == nil || cfg.Registry == nil:
		return nil, errors.New("gate: Key, NATS, ReceiptVerifier, Ledger, TPMTrust, LDevIDCA and Registry are required")
	}
	var err error
	if cfg.Policy, err = cfg.Policy.withDefaults(); err != nil {
		return nil, err
	}
	for _, d := range []*time.Duration{&cfg.ChallengeTTL, &cfg.OperationTTL, &cfg.LDevIDValidity, &cfg.CRLValidity, &cfg.RefusalLogInterval, &cfg.PublishTimeout, &cfg.SweepInterval} {
		if *d < 0 {
			return nil, errors.New("gate: durations must not be negative")
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.ChallengeTTL, 2*time.Minute)
	def(&cfg.OperationTTL, 10*time.Minute)
	def(&cfg.LDevIDValidity, 365*24*time.Hour)
	def(&cfg.CRLValidity, time.Hour)
	def(&cfg.RefusalLogInterval, 10*time.Minute)
	def(&cfg.PublishTimeout, 30*time.Second)
	def(&cfg.SweepInterval, 30*time.Second)
	if cfg.RefusalsPerDevice < 0 || cfg.RefusalsPerSource < 0 {
		return nil, errors.New("gate: refusal limits must not be negative")
	}
	if cfg.RefusalsPerDevice == 0 {
		cfg.RefusalsPerDevice = 10
	}
	if cfg.RefusalsPerSource == 0 {
		cfg.RefusalsPerSource = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var p *events.Publisher
	if publish == nil {
		if p, err = events.NewPublisher(cfg.NATS, cfg.Name, cfg.ReceiptVerifier); err != nil {
			return nil, err
		}
	}
	g := &Gate{
		cfg: cfg, pub: p, challenges: map[string][]*challenge{}, ops: map[string]*operation{},
		ldevids:   ldevids{byDevice: map[string][]*issuedLDevID{}, bySerial: map[string]*issuedLDevID{}},
		recordSem: make(chan struct{}, maxRecordsInFlight),
	}
	if g.ldevidSigner, err = newLDevIDSigner(cfg.LDevIDCA); err != nil {
		return nil, err
	}
	g.limits = newLimiter(cfg.RefusalLogInterval, cfg.RefusalsPerDevice, cfg.RefusalsPerSource)
	g.publishFn = g.publishGrouped
	if publish != nil {
		g.publishFn = publish
	}
	if cfg.Log != nil {
		n, err := g.loadLDevIDs()
		if err != nil {
			return nil, fmt.Errorf("gate: rebuilding the LDevID register from the log: %w", err)
		}
		cfg.Logger.Info("LDevID register rebuilt from the log", "ldevids", n)
	}
	if cfg.RevocationFile != "" {
		if g.revocations, err = openRevocations(cfg.RevocationFile, &g.ldevids); err != nil {
			return nil, fmt.Errorf("gate: %w", err)
		}
	}
	return g, nil
}

// Policy returns the policy in force, defaults filled.
func (g *Gate) Policy() Policy { return g.cfg.Policy }

// Decisions returns the gate's decisions, oldest first (at most the last
// 100,000; the ledger holds all of them).
func (g *Gate) Decisions() []*gatewire.Decision {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*gatewire.Decision, len(g.decisions))
	for i, d := range g.decisions {
		c := *d // a refusal record may set Logged and LogIndex later, under g.mu
		out[i] = &c
	}
	return out
}

// ErrBadRequest marks requests refused before any decision.
var ErrBadRequest = errors.New("bad registration request")

// ErrNotFound is an unknown (or expired) registration operation.
var ErrNotFound = errors.New("no such registration operation")

// maxChallenges bounds the live challenges of one registration: a further
// Begin drops the oldest. Several may be live at once, so a stranger who
// knows a device's EK public key cannot cancel the device's challenge by
// asking for one of its own.
const maxChallenges = 4

// Begin answers a registration without proof: a credential encrypted to the
// EK the request carries and bound to the name of the attestation key it
// carries (tpm.storageRootKey: the device's IAK), and a fresh nonce. Only
// the TPM holding both keys can recover the secret. Begin consults nothing
// about the device (not the ledger): its answer is the same for every
// device, known or not. The challenge remembers the EK, the IAK, the secret
// and the nonce; Finish accepts it only for the same EK and IAK, with a SAS
// token keyed by its secret and evidence over its nonce. A device or source
// over its refusal limit gets a *ThrottledError before any cryptography.
func (g *Gate) Begin(ctx context.Context, idScope, source string, req *gatewire.RegisterRequest) (*gatewire.Challenge, error) {
	if err := g.checkRequest(idScope, req); err != nil {
		return nil, err
	}
	if err := g.limits.check(req.RegistrationID, source, g.cfg.Now()); err != nil {
		return nil, err
	}
	if len(req.TPM.StorageRootKey) == 0 {
		return nil, fmt.Errorf("%w: TPM attestation needs tpm.storageRootKey (the public area of the device's IAK)", ErrBadRequest)
	}
	ekPub, _, err := attest.PublicKeyFromTPMT(req.TPM.EndorsementKey)
	if err != nil {
		return nil, fmt.Errorf("%w: tpm.endorsementKey: %v", ErrBadRequest, err)
	}
	if id, _ := attest.DeviceID(ekPub); id != req.RegistrationID {
		return nil, fmt.Errorf("%w: the registration ID is not the SHA-256 of tpm.endorsementKey", ErrBadRequest)
	}
	_, iakName, err := attest.PublicKeyFromTPMT(req.TPM.StorageRootKey)
	if err != nil {
		return nil, fmt.Errorf("%w: tpm.storageRootKey: %v", ErrBadRequest, err)
	}
	secret := make([]byte, 32)
	nonce := make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(nonce)
	cred, err := attest.MakeCredential(req.TPM.EndorsementKey, iakName, secret)
	if err != nil {
		return nil, fmt.Errorf("%w: endorsement key: %v", ErrBadRequest, err)
	}
	key, err := jsonMarshal(cred)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	now := g.cfg.Now()
	if len(g.challenges) > maxOperations {
		for id, cs := range g.challenges {
			cs = slices.DeleteFunc(cs, func(c *challenge) bool { return now.After(c.expires) })
			if len(cs) == 0 {
				delete(g.challenges, id)
			} else {
				g.challenges[id] = cs
			}
		}
	}
	cs := slices.DeleteFunc(g.challenges[req.RegistrationID], func(c *challenge) bool { return now.After(c.expires) })
	if len(cs) >= maxChallenges {
		cs = dropFront(cs, len(cs)-maxChallenges+1)
	}
	g.challenges[req.RegistrationID] = append(cs, &challenge{
		ek: bytes.Clone(req.TPM.EndorsementKey), iak: bytes.Clone(req.TPM.StorageRootKey),
		secret: secret, nonce: nonce, expires: now.Add(g.cfg.ChallengeTTL),
	})
	g.mu.Unlock()
	return &gatewire.Challenge{AuthenticationKey: key, Nonce: nonce}, nil
}

// takeChallenge finds the live challenge of regID whose secret keys the
// SAS token, removes it (one try per challenge) and returns it. live says
// whether regID had any live challenge. Only HMACs are computed.
func (g *Gate) takeChallenge(idScope, regID, token string) (ch *challenge, live bool, sasErr error) {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := slices.DeleteFunc(g.challenges[regID], func(c *challenge) bool { return now.After(c.expires) })
	for i, c := range cs {
		if sasErr = g.checkSAS(idScope, regID, token, c.secret); sasErr == nil {
			ch = c
			cs = slices.Delete(cs, i, i+1)
			break
		}
	}
	live = len(cs) > 0 || ch != nil
	if len(cs) == 0 {
		delete(g.challenges, regID)
	} else {
		g.challenges[regID] = cs
	}
	return ch, live, sasErr
}

func (g *Gate) checkRequest(idScope string, req *gatewire.RegisterRequest) error {
	if idScope != g.cfg.IDScope {
		return fmt.Errorf("%w: ID scope %q is not served by this gate", ErrBadRequest, idScope)
	}
	if req == nil || req.TPM == nil || len(req.TPM.EndorsementKey) == 0 {
		return fmt.Errorf("%w: TPM attestation needs tpm.endorsementKey", ErrBadRequest)
	}
	if !events.ValidDeviceID(req.RegistrationID) {
		return fmt.Errorf("%w: the registration ID is the device ID (64 lowercase hex digits)", ErrBadRequest)
	}
	return nil
}

func (g *Gate) checkSAS(idScope, regID, token string, key []byte) error {
	rest, ok := strings.CutPrefix(token, "SharedAccessSignature ")
	if !ok {
		return errors.New("no SharedAccessSignature")
	}
	vals, err := url.ParseQuery(rest)
	if err != nil {
		return err
	}
	if vals.Get("sr") != idScope+"/registrations/"+regID {
		return errors.New("the token is for another registration")
	}
	se, err := strconv.ParseInt(vals.Get("se"), 10, 64)
	if err != nil || g.cfg.Now().Unix() > se {
		return errors.New("the token has expired")
	}
	want := gatewire.SASToken(idScope, regID, key, time.Unix(se, 0))
	if !hmac.Equal([]byte(token), []byte(want)) {
		return errors.New("the token is not signed with the activated credential")
	}
	return nil
}

// custodyRefusal is the one answer a caller gets for every refusal decided
// from the ledger's record of the device: the ledger does not know it, or
// it knows it and a custody rule refuses it. The rule and its sentence go
// to the decision (the operator's), never to the caller, so the answer
// says nothing about what the ledger holds. Its errorCode is
// custody-chain's.
const custodyRefusal = "no custody record allows this operator to enroll this device"

// Finish decides an authorised registration and returns its operation,
// already decided: status "assigned" with the LDevID chain, or "failed"
// with an errorCode and errorMessage. Refusals of the caller's own proof
// (challenge, ek-identity, activation, quote, ldevid, csr) name their rule;
// every refusal decided from the ledger's record answers custodyRefusal.
// The operation can be read again with Operation, with the same
// authorization, until OperationTTL has passed. Allowed decisions are
// appended to the ledger as device.enrolled; refusals are recorded in
// aggregate (see Config.RefusalLogInterval). A device or source over its
// refusal limit gets a *ThrottledError before any cryptography.
func (g *Gate) Finish(ctx context.Context, idScope, source, authorization string, req *gatewire.RegisterRequest) (*gatewire.Outcome, error) {
	if err := g.checkRequest(idScope, req); err != nil {
		return nil, err
	}
	if authorization == "" {
		return nil, fmt.Errorf("%w: an authorised registration needs the SAS token", ErrBadRequest)
	}
	now := g.cfg.Now()
	if err := g.limits.check(req.RegistrationID, source, now); err != nil {
		return nil, err
	}
	ch, live, sasErr := g.takeChallenge(idScope, req.RegistrationID, authorization)
	d := &gatewire.Decision{RegistrationID: req.RegistrationID, Time: now, OperationID: newOperationID()}
	res, err := g.decide(ctx, req, ch, live, sasErr, d)
	if err != nil {
		return nil, err
	}
	st := &gatewire.RegistrationState{
		RegistrationID: req.RegistrationID, CreatedDateTimeUTC: now.UTC(), LastUpdatedDateTimeUTC: g.cfg.Now().UTC(),
		ETag: newETag(),
	}
	out := &gatewire.Outcome{OperationID: d.OperationID, RegistrationState: st}
	if d.Allowed {
		g.cfg.Logger.Info("enrollment decision", "device", d.RegistrationID, "allowed", true,
			"log_index", d.LogIndex, "operation", d.OperationID, "ldevid_serial", d.LDevIDSerial)
		out.Status, st.Status, st.Substatus = gatewire.StatusAssigned, gatewire.StatusAssigned, "initialAssignment"
		if res.reenrolled {
			st.Substatus = "reprovisionedToInitialAssignment"
		}
		st.IssuedCertificateChain = res.chain
		st.DPSEndpoint = g.cfg.DPSEndpoint
		st.IDScope = g.cfg.IDScope
		st.Decision = d
	} else {
		d.Code = events.RuleErrorCode(d.Rule)
		rule, msg := d.Rule, d.Message
		if res.custody {
			rule, msg = events.RuleCustodyChain, custodyRefusal
		}
		out.Status, st.Status = gatewire.StatusFailed, gatewire.StatusFailed
		st.ErrorCode = events.RuleErrorCode(rule)
		st.ErrorMessage = rule + ": " + msg
		g.refused(req.RegistrationID, source, d, res)
	}
	g.remember(d, out, authorization)
	return out, nil
}

// result is what decide produced besides the decision.
type result struct {
	chain      [][]byte         // allowed: LDevID, CA
	quote      *events.Evidence // the fresh quote, verified by the recorded IAK
	nonce      []byte
	custody    bool // decided from the ledger's record: the caller gets custodyRefusal
	reenrolled bool
}

// decide runs every check in order, recording each, and stops at the first
// failure. First the caller's proof, which consults nothing about the
// device: the challenge and the EK and IAK it was made for, the activated
// secret, the quote and the LDevID certification by that IAK over its
// nonce. Then, possession proven, the ledger's record: the same EK and
// IAK, the EK chain, counters, custody, stages, PCRs. On success it issues
// the LDevID, enrolls in DPS and logs device.enrolled. An error return is
// an internal failure (no decision).
func (g *Gate) decide(ctx context.Context, req *gatewire.RegisterRequest, ch *challenge, live bool, sasErr error, d *gatewire.Decision) (*result, error) {
	res := &result{}
	fail := func(rule, format string, args ...any) (*result, error) {
		msg := fmt.Sprintf(format, args...)
		d.Checks = append(d.Checks, gatewire.Check{Name: rule, OK: false, Detail: msg})
		d.Rule, d.Message = rule, msg
		return res, nil
	}
	pass := func(rule, format string, args ...any) {
		d.Checks = append(d.Checks, gatewire.Check{Name: rule, OK: true, Detail: fmt.Sprintf(format, args...)})
	}
	pol := &g.cfg.Policy
	now := g.cfg.Now()
	// 1. A live challenge of this registration whose secret keys the SAS
	// token: only the TPM holding the EK and the IAK it was made for could
	// recover the secret.
	if ch == nil {
		if !live {
			return fail(events.RuleChallenge, "no live credential challenge for this registration; start again")
		}
		return fail(events.RuleActivation, "credential activation not proven: %v", sasErr)
	}
	res.nonce = ch.nonce
	// 2. The challenge is bound to the EK and the IAK it was made for.
	if !bytes.Equal(req.TPM.EndorsementKey, ch.ek) {
		return fail(events.RuleEKIdentity, "the EK is not the one the challenge was encrypted to")
	}
	if !bytes.Equal(req.TPM.StorageRootKey, ch.iak) {
		return fail(events.RuleActivation, "the attestation key is not the one the credential was bound to")
	}
	pass(events.RuleEKIdentity, "registration ID = SHA-256(EK), the EK the challenge was encrypted to")
	pass(events.RuleActivation, "the TPM holding the EK activated the credential for the IAK it named")
	// 3. A fresh quote by that IAK over the challenge's nonce.
	if req.Payload == nil || req.Payload.Quote == nil || req.Payload.LDevID == nil {
		return fail(events.RuleQuote, "the registration carries no quote or LDevID evidence")
	}
	q, err := req.Payload.Quote.Quote()
	if err != nil {
		return fail(events.RuleQuote, "%v", err)
	}
	qi, err := attest.VerifyQuote(ch.iak, q, ch.nonce)
	if err != nil {
		return fail(events.RuleQuote, "fresh quote: %v", err)
	}
	pass(events.RuleQuote, "fresh quote by the IAK over the gate's nonce")
	// 4. The LDevID key is TPM-resident and certified by that IAK.
	ldevPub, err := attest.VerifyCertify(ch.iak, req.Payload.LDevID, ch.nonce)
	if err != nil {
		return fail(events.RuleLDevID, "LDevID certification: %v", err)
	}
	pass(events.RuleLDevID, "LDevID key certified by the IAK (TPM2_Certify)")
	if req.CSR != "" {
		if err := checkCSR(req.CSR, req.RegistrationID, ldevPub); err != nil {
			return fail(events.RuleCSR, "%v", err)
		}
		pass(events.RuleCSR, "CSR signed by the certified LDevID key, CN = registration ID")
	}
	// From here on the device proved its TPM and every refusal is decided
	// from the ledger's record: the caller gets custodyRefusal.
	res.custody = true
	// 5. The ledger knows the device, with this EK and this IAK.
	dev, err := g.cfg.Ledger.Device(req.RegistrationID)
	if errors.Is(err, ledger.ErrNotFound) {
		return fail(events.RuleCustodyChain, "the ledger has no custody record of this device")
	} else if err != nil {
		return nil, err
	}
	if !bytes.Equal(dev.EKPublic, req.TPM.EndorsementKey) {
		return fail(events.RuleEKIdentity, "the EK differs from the one the TPM vendor recorded")
	}
	if !bytes.Equal(dev.IAKPublic, ch.iak) {
		return fail(events.RuleActivation, "the credential was activated for an IAK other than the one the TPM vendor recorded")
	}
	res.quote = req.Payload.Quote
	pass("ledger-record", "manufactured by %s; the EK and IAK it recorded", dev.Vendor)
	// 6. The EK certificate the vendor recorded chains to the trust bundle.
	manufacturer, err := g.verifyEK(dev.EKCertificate, now)
	if err != nil {
		return fail(events.RuleEKChain, "EK certificate: %v", err)
	}
	pass(events.RuleEKChain, "EK certificate chains to the TPM trust bundle (%s)", manufacturer)
	if dev.LastQuote != nil {
		prev := &attest.QuoteInfo{Clock: dev.LastQuote.Clock, ResetCount: dev.LastQuote.ResetCount, RestartCount: dev.LastQuote.RestartCount}
		if err := attest.CheckMonotonic(prev, qi); err != nil {
			return fail(events.RuleCounters, "TPM counters against the device's history: %v", err)
		}
	}
	pass(events.RuleCounters, "clock %d, resets %d, restarts %d: not behind the history", qi.Clock, qi.ResetCount, qi.RestartCount)
	// 7. Custody: the operator holds the device, the chain is clean.
	if dev.Decommissioned {
		return fail(events.RuleDecommissioned, "the device was decommissioned")
	}
	if dev.Flag != nil {
		return fail(events.RuleFlagged, "the device is flagged (%s by %s, log index %d)", dev.Flag.Reason, dev.Flag.By, dev.Flag.Index)
	}
	pass("flags", "not flagged")
	if dev.Custodian != g.cfg.Operator {
		return fail(events.RuleCustodyChain, "the last custodian is %s, not %s", dev.Custodian, g.cfg.Operator)
	}
	if dev.Pending != nil {
		return fail(events.RuleCustodyChain, "a hand-off to %s is pending", dev.Pending.To)
	}
	pass(events.RuleCustodyChain, "custodian %s after %d hand-offs", dev.Custodian, dev.Handoffs)
	for _, s := range pol.RequiredStages {
		if _, ok := dev.Stages[s]; !ok {
			return fail(events.RuleStages, "required stage %s was never recorded", s)
		}
	}
	pass(events.RuleStages, "required stages recorded: %s", strings.Join(pol.RequiredStages, ", "))
	// 8. PCRs equal what the EMS recorded with the firmware, or what the
	// operator allowed.
	var sources []string
	for _, i := range pol.QuotePCRs {
		v, quoted := qi.PCRs[i]
		got := hex.EncodeToString(v)
		ok, src := pol.pcrAccepted(i, got, dev.ExpectedPCRs)
		if !quoted || !ok {
			return fail(events.RulePCRPolicy, "PCR %d is %s, the firmware record says %s", i, short(got), short(dev.ExpectedPCRs[strconv.Itoa(i)]))
		}
		sources = append(sources, fmt.Sprintf("%d (%s)", i, src))
	}
	pass(events.RulePCRPolicy, "PCRs accepted: %s", strings.Join(sources, ", "))
	if dev.Enrolled {
		if pol.RefuseReenrollment {
			return fail(events.RuleReenrollment, "the device is already enrolled and the policy refuses re-enrollment")
		}
		res.reenrolled = true
	}
	// Every check passed: what fails now (DPS, the ledger) is named to the
	// device, which may retry.
	res.custody = false
	cert, err := g.issueLDevID(req.RegistrationID, ldevPub)
	if err != nil {
		return nil, err
	}
	d.LDevIDSerial = cert.SerialNumber.Text(16)
	if err := g.cfg.Registry.Enroll(ctx, req.RegistrationID, cert); err != nil {
		return fail(events.RuleDPS, "DPS enrollment: %v", err)
	}
	pass(events.RuleDPS, "individual enrollment created")
	idx, err := g.logEnrolled(ctx, req, cert, ch.nonce)
	if err != nil {
		// The certificate was issued but is not recorded: revoke it, and
		// disable the DPS enrollment that now names it (best effort; the
		// device enrolls again).
		// The revocation is durable (the revocation file) before the
		// refusal is answered; if even that fails, the operator is told.
		if rerr := g.revoke(revocation{Serial: cert.SerialNumber, Device: req.RegistrationID, NotAfter: cert.NotAfter,
			Time: now.UTC().Truncate(time.Second), Reason: x509ReasonCessation}); rerr != nil {
			g.cfg.Logger.Error("revoking an unrecorded LDevID", "device", req.RegistrationID, "serial", cert.SerialNumber.Text(16), "err", rerr)
		}
		if derr := g.cfg.Registry.SetEnabled(ctx, req.RegistrationID, false); derr != nil {
			g.cfg.Logger.Warn("disabling the DPS enrollment of an unrecorded LDevID", "device", req.RegistrationID, "err", derr)
		}
		return fail(events.RuleLedger, "recording device.enrolled: %v", err)
	}
	superseded := g.ldevids.add(req.RegistrationID, cert, now)
	detail := "device.enrolled logged"
	if superseded > 0 {
		detail += fmt.Sprintf("; %d earlier LDevID(s) revoked (superseded)", superseded)
	}
	pass(events.RuleLedger, "%s", detail)
	d.Allowed, d.Logged, d.LogIndex = true, true, idx
	res.chain = [][]byte{cert.Raw, g.cfg.LDevIDCA.Cert.Raw}
	return res, nil
}

// ekVerified is a cached EK chain verification.
type ekVerified struct {
	until        time.Time
	manufacturer string
}

// ekCacheTTL bounds how long an EK chain verification is reused, and
// maxEKCache how many are kept: a gate enrolling a thousand devices a
// second would otherwise keep every EK it ever saw.
const (
	ekCacheTTL = time.Hour
	maxEKCache = 64 << 10
)

// verifyEK verifies an EK certificate (DER) against the TPM trust bundle
// and returns the TPM manufacturer. A success is cached by the
// certificate's SHA-256 until the first expiry in its chain, at most an
// hour: a device enrolls again with the same EK certificate. A device's
// first enrollment verifies its certificate against its issuer, the CA part
// of the chain having been verified once for all the issuer's certificates
// (caChains).
func (g *Gate) verifyEK(der []byte, now time.Time) (string, error) {
	key := sha256.Sum256(der)
	g.ekMu.RLock()
	ev, ok := g.ekCache[key]
	g.ekMu.RUnlock()
	if ok && now.Before(ev.until) {
		return ev.manufacturer, nil
	}
	ek, err := attest.ParseEKCertificate(der)
	if err != nil {
		return "", err
	}
	chains, err := g.caChains.verify(ek, g.cfg.TPMTrust, now)
	if err != nil {
		return "", err
	}
	var until time.Time // the latest expiry among the valid chains
	for _, chain := range chains {
		end := now.Add(ekCacheTTL)
		for _, c := range chain {
			if c.NotAfter.Before(end) {
				end = c.NotAfter
			}
		}
		if end.After(until) {
			until = end
		}
	}
	g.rememberEK(key, ekVerified{until: until, manufacturer: ek.TPM.Manufacturer}, now)
	return ek.TPM.Manufacturer, nil
}

// rememberEK caches an EK chain verification. A full cache first drops
// the expired ones, then arbitrary ones down to three quarters.
func (g *Gate) rememberEK(key [32]byte, v ekVerified, now time.Time) {
	g.ekMu.Lock()
	defer g.ekMu.Unlock()
	if g.ekCache == nil {
		g.ekCache = map[[32]byte]ekVerified{}
	}
	if len(g.ekCache) >= maxEKCache {
		for k, ev := range g.ekCache {
			if !now.Before(ev.until) {
				delete(g.ekCache, k)
			}
		}
		for k := range g.ekCache {
			if len(g.ekCache) < maxEKCache*3/4 {
				break
			}
			delete(g.ekCache, k)
		}
	}
	g.ekCache[key] = v
}

// checkCSR verifies a base64 DER PKCS#10 request: its signature, its
// subject CN and that its key is want.
func checkCSR(b64, regID string, want crypto.PublicKey) error {
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("the csr is not base64: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return fmt.Errorf("the csr does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("the csr's signature does not verify: %v", err)
	}
	if csr.Subject.CommonName != regID {
		return fmt.Errorf("the csr's subject CN %q is not the registration ID", csr.Subject.CommonName)
	}
	k, ok := want.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(csr.PublicKey) {
		return errors.New("the csr's key is not the LDevID key the IAK certified")
	}
	return nil
}

func (g *Gate) issueLDevID(regID string, pub crypto.PublicKey) (*x509.Certificate, error) {
	now := g.cfg.Now()
	return g.ldevidSigner.issue(regID, pub, now.Add(-5*time.Minute), now.Add(g.cfg.LDevIDValidity))
}

// rawSubject is the DER of the subject CN=regID exactly as crypto/x509
// writes pkix.Name{CommonName: regID}: for a registration ID of letters and
// digits (a device ID is 64 hex digits) a PrintableString, built directly,
// since marshalling a pkix.Name through encoding/asn1 took an eighth of an
// LDevID's issuance; anything else through encoding/asn1.
func rawSubject(regID string) ([]byte, error) {
	alnum := regID != ""
	for _, c := range regID {
		alnum = alnum && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
	}
	if !alnum {
		return encasn1.Marshal(pkix.Name{CommonName: regID}.ToRDNSequence())
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // RDNSequence
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { // RelativeDistinguishedName
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // AttributeTypeAndValue
				b.AddASN1ObjectIdentifier(oidCommonName)
				b.AddASN1(cbasn1.PrintableString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(regID)) })
			})
		})
	})
	return b.Bytes()
}

// oidCommonName is id-at-commonName (RFC 5280).
var oidCommonName = encasn1.ObjectIdentifier{2, 5, 4, 3}

func short(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	if s == "" {
		return "(none)"
	}
	return s
}

func newETag() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newOperationID returns an operation ID shaped like DPS's
// ("4.<16 hex>.<uuid>").
func newOperationID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	u := b[8:]
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u)
	return "4." + hex.EncodeToString(b[:8]) + "." + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
