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
	// RefusalLogInterval bounds how often a refusal of a device that has not
	// proven its TPM (a failed challenge, EK identity, EK chain or
	// activation) is written to the ledger: at most once per interval per
	// device, since anybody who knows a device's EK public key can provoke
	// one. Refusals after activation are always written. Default 10 minutes.
	RefusalLogInterval time.Duration
	// PublishTimeout bounds the wait for the ledger's receipt of a decision.
	// Default 30 s.
	PublishTimeout time.Duration
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
	challenges map[string]*challenge // by registration ID
	decisions  []*gatewire.Decision
	ops        map[string]*operation // by operation ID
	opOrder    []string              // operation IDs, oldest first
	unproven   map[string]time.Time  // device → last logged refusal before activation
	ldevids    ldevids
	ekMu       sync.RWMutex
	ekCache    map[[32]byte]ekVerified // SHA-256 of an EK certificate → its verification
	caChains   caChains                // the verified CA parts of EK certificate chains
}

type challenge struct {
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
	switch {
	case !events.ValidPartnerName(cfg.Name) || !events.ValidPartnerName(cfg.Operator):
		return nil, errors.New("gate: Name and Operator must be partner names")
	case cfg.IDScope == "":
		return nil, errors.New("gate: IDScope is required")
	case cfg.Key == nil || cfg.NATS == nil || cfg.ReceiptVerifier == nil || cfg.Ledger == nil || cfg.TPMTrust == nil || cfg.LDevIDCA == nil || cfg.Registry == nil:
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p, err := events.NewPublisher(cfg.NATS, cfg.Name, cfg.ReceiptVerifier)
	if err != nil {
		return nil, err
	}
	g := &Gate{
		cfg: cfg, pub: p, challenges: map[string]*challenge{}, ops: map[string]*operation{},
		unproven: map[string]time.Time{}, ldevids: ldevids{byDevice: map[string][]*issuedLDevID{}},
	}
	if cfg.Log != nil {
		n, err := g.loadLDevIDs()
		if err != nil {
			return nil, fmt.Errorf("gate: rebuilding the LDevID register from the log: %w", err)
		}
		cfg.Logger.Info("LDevID register rebuilt from the log", "ldevids", n)
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
	return slices.Clone(g.decisions)
}

// unprovenRules are refusals decided before the device proved its TPM.
var unprovenRules = []string{events.RuleChallenge, events.RuleEKIdentity, events.RuleCustodyChain, events.RuleEKChain, events.RuleActivation}

// ErrBadRequest marks requests refused before any decision.
var ErrBadRequest = errors.New("bad registration request")

// ErrNotFound is an unknown (or expired) registration operation.
var ErrNotFound = errors.New("no such registration operation")

// Begin answers a registration without proof: it looks the device up by its
// EK, and returns a credential for the device's IAK encrypted to that EK and
// a fresh nonce. Only the TPM holding both keys can use them.
func (g *Gate) Begin(ctx context.Context, idScope string, req *gatewire.RegisterRequest) (*gatewire.Challenge, error) {
	if err := g.checkRequest(idScope, req); err != nil {
		return nil, err
	}
	dev, err := g.cfg.Ledger.Device(req.RegistrationID)
	if err != nil {
		// Unknown devices get a challenge too: do not reveal which devices
		// the ledger holds before the device proves its TPM. Its EK is
		// taken from the request and the decision fails later.
		dev = &ledger.Device{EKPublic: req.TPM.EndorsementKey}
	}
	ekPublic := dev.EKPublic
	if !bytes.Equal(ekPublic, req.TPM.EndorsementKey) {
		ekPublic = req.TPM.EndorsementKey // decided (and refused) in Finish
	}
	iakName := []byte{}
	if dev.IAKPublic != nil {
		if _, iakName, err = attest.PublicKeyFromTPMT(dev.IAKPublic); err != nil {
			return nil, err
		}
	} else {
		iakName = make([]byte, 34)
		_, _ = rand.Read(iakName)
		iakName[0], iakName[1] = 0x00, 0x0b
	}
	secret := make([]byte, 32)
	nonce := make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(nonce)
	cred, err := attest.MakeCredential(ekPublic, iakName, secret)
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
		for id, c := range g.challenges {
			if now.After(c.expires) {
				delete(g.challenges, id)
			}
		}
	}
	g.challenges[req.RegistrationID] = &challenge{secret: secret, nonce: nonce, expires: now.Add(g.cfg.ChallengeTTL)}
	g.mu.Unlock()
	return &gatewire.Challenge{AuthenticationKey: key, Nonce: nonce}, nil
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

// Finish decides an authorised registration and returns its operation,
// already decided: status "assigned" with the LDevID chain, or "failed"
// with the errorCode and errorMessage of the rule broken. The operation can
// be read again with Operation, with the same authorization, until
// OperationTTL has passed. Every decision is appended to the ledger:
// device.enrolled or enrollment.refused.
func (g *Gate) Finish(ctx context.Context, idScope, authorization string, req *gatewire.RegisterRequest) (*gatewire.Outcome, error) {
	if err := g.checkRequest(idScope, req); err != nil {
		return nil, err
	}
	if authorization == "" {
		return nil, fmt.Errorf("%w: an authorised registration needs the SAS token", ErrBadRequest)
	}
	g.mu.Lock()
	ch := g.challenges[req.RegistrationID]
	delete(g.challenges, req.RegistrationID) // one try per challenge
	g.mu.Unlock()
	now := g.cfg.Now()
	d := &gatewire.Decision{RegistrationID: req.RegistrationID, Time: now, OperationID: newOperationID()}
	res, err := g.decide(ctx, idScope, authorization, req, ch, d)
	if err != nil {
		return nil, err
	}
	if !d.Allowed {
		d.Code = events.RuleErrorCode(d.Rule)
		g.logRefused(ctx, req, d, res)
	}
	g.cfg.Logger.Info("enrollment decision", "device", d.RegistrationID, "allowed", d.Allowed, "rule", d.Rule,
		"message", d.Message, "logged", d.Logged, "log_index", d.LogIndex, "operation", d.OperationID)
	st := &gatewire.RegistrationState{
		RegistrationID: req.RegistrationID, CreatedDateTimeUTC: now.UTC(), LastUpdatedDateTimeUTC: g.cfg.Now().UTC(),
		ETag: newETag(), Decision: d,
	}
	out := &gatewire.Outcome{OperationID: d.OperationID, RegistrationState: st}
	if d.Allowed {
		out.Status, st.Status, st.Substatus = gatewire.StatusAssigned, gatewire.StatusAssigned, "initialAssignment"
		if res.reenrolled {
			st.Substatus = "reprovisionedToInitialAssignment"
		}
		st.IssuedCertificateChain = res.chain
		st.DPSEndpoint = g.cfg.DPSEndpoint
		st.IDScope = g.cfg.IDScope
	} else {
		out.Status, st.Status = gatewire.StatusFailed, gatewire.StatusFailed
		st.ErrorCode = d.Code
		st.ErrorMessage = d.Rule + ": " + d.Message
	}
	g.remember(d, out, authorization)
	return out, nil
}

// result is what decide produced besides the decision.
type result struct {
	chain      [][]byte         // allowed: LDevID, CA
	quote      *events.Evidence // the verified fresh quote, if it verified
	nonce      []byte
	known      bool // the ledger knows the device
	reenrolled bool
}

// decide runs every check in order, recording each, and stops at the first
// failure. On success it issues the LDevID, enrolls in DPS and logs
// device.enrolled. An error return is an internal failure (no decision).
func (g *Gate) decide(ctx context.Context, idScope, authorization string, req *gatewire.RegisterRequest, ch *challenge, d *gatewire.Decision) (*result, error) {
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
	if ch == nil || now.After(ch.expires) {
		return fail(events.RuleChallenge, "no live credential challenge for this registration; start again")
	}
	res.nonce = ch.nonce
	// 1. The registration ID is the device ID: SHA-256 of the EK public key.
	ekPub, _, err := attest.PublicKeyFromTPMT(req.TPM.EndorsementKey)
	if err != nil {
		return fail(events.RuleEKIdentity, "endorsement key: %v", err)
	}
	if id, _ := attest.DeviceID(ekPub); id != req.RegistrationID {
		return fail(events.RuleEKIdentity, "the registration ID is not the SHA-256 of this EK")
	}
	pass(events.RuleEKIdentity, "registration ID = SHA-256(EK)")
	// 2. The ledger knows the device and holds this EK.
	dev, err := g.cfg.Ledger.Device(req.RegistrationID)
	if errors.Is(err, ledger.ErrNotFound) {
		return fail(events.RuleCustodyChain, "the ledger has no custody record of this device")
	} else if err != nil {
		return nil, err
	}
	res.known = true
	if !bytes.Equal(dev.EKPublic, req.TPM.EndorsementKey) {
		return fail(events.RuleEKIdentity, "the EK differs from the one the TPM vendor recorded")
	}
	pass("ledger-record", "manufactured by %s", dev.Vendor)
	// 3. The EK certificate the vendor recorded chains to the trust bundle.
	manufacturer, err := g.verifyEK(dev.EKCertificate, now)
	if err != nil {
		return fail(events.RuleEKChain, "EK certificate: %v", err)
	}
	pass(events.RuleEKChain, "EK certificate chains to the TPM trust bundle (%s)", manufacturer)
	// 4. Credential activation: the SAS token is keyed with the secret that
	// only the TPM holding this EK and the recorded IAK could recover.
	if err := g.checkSAS(idScope, req.RegistrationID, authorization, ch.secret); err != nil {
		return fail(events.RuleActivation, "credential activation not proven: %v", err)
	}
	pass(events.RuleActivation, "the TPM holding the EK activated the credential for the recorded IAK")
	// 5. A fresh quote by the recorded IAK over the gate's nonce.
	if req.Payload == nil || req.Payload.Quote == nil || req.Payload.LDevID == nil {
		return fail(events.RuleQuote, "the registration carries no quote or LDevID evidence")
	}
	q, err := req.Payload.Quote.Quote()
	if err != nil {
		return fail(events.RuleQuote, "%v", err)
	}
	qi, err := attest.VerifyQuote(dev.IAKPublic, q, ch.nonce)
	if err != nil {
		return fail(events.RuleQuote, "fresh quote: %v", err)
	}
	res.quote = req.Payload.Quote
	pass(events.RuleQuote, "fresh quote by the recorded IAK over the gate's nonce")
	if dev.LastQuote != nil {
		prev := &attest.QuoteInfo{Clock: dev.LastQuote.Clock, ResetCount: dev.LastQuote.ResetCount, RestartCount: dev.LastQuote.RestartCount}
		if err := attest.CheckMonotonic(prev, qi); err != nil {
			return fail(events.RuleCounters, "TPM counters against the device's history: %v", err)
		}
	}
	pass(events.RuleCounters, "clock %d, resets %d, restarts %d: not behind the history", qi.Clock, qi.ResetCount, qi.RestartCount)
	// 6. Custody: the operator holds the device, the chain is clean.
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
	// 7. PCRs equal what the EMS recorded with the firmware, or what the
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
	// 8. The LDevID key is TPM-resident and certified by the IAK.
	ldevPub, err := attest.VerifyCertify(dev.IAKPublic, req.Payload.LDevID, ch.nonce)
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
	cert, err := g.issueLDevID(req.RegistrationID, ldevPub)
	if err != nil {
		return nil, err
	}
	if err := g.cfg.Registry.Enroll(ctx, req.RegistrationID, cert); err != nil {
		return fail(events.RuleDPS, "DPS enrollment: %v", err)
	}
	pass(events.RuleDPS, "individual enrollment created")
	idx, err := g.logEnrolled(ctx, req, cert, ch.nonce)
	if err != nil {
		// The certificate was issued but is not recorded: revoke it, and
		// disable the DPS enrollment that now names it (best effort; the
		// device enrolls again).
		g.ldevids.revoke(req.RegistrationID, cert.SerialNumber, now, x509ReasonCessation)
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
	d.LDevIDSerial = cert.SerialNumber.Text(16)
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
	u, _ := url.Parse("urn:custody:device:" + regID)
	subject, err := rawSubject(regID)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		RawSubject:  subject,
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    now.Add(g.cfg.LDevIDValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	return g.cfg.LDevIDCA.Issue(tmpl, pub)
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
