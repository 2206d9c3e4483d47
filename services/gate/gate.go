// Package gate is the operator's enrollment gate: the service a device talks
// to at first boot. It speaks the shape of Azure DPS's device registration
// protocol with TPM attestation (PUT /{idScope}/registrations/{id}/register;
// a first call answered 401 with a credential encrypted to the device's EK;
// a second call authorised by a SAS token keyed with the activated secret),
// and adds what DPS does not check: the EK certificate chain through
// cross-signed CAs, a fresh quote by the IAK the ledger holds for the device,
// and the device's custody history in the ledger. Only a device whose every
// check passes gets an LDevID for a TPM-resident key certified by its IAK,
// an enrollment in DPS, and a device.enrolled entry in the ledger.
//
// See docs/design/enrollment.md for the protocol and the threat model.
package gate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
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

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/pki"
)

// DeviceState is what the gate reads of the ledger.
type DeviceState interface {
	Device(id string) (*ledger.Device, error)
}

// Registry is what the gate needs of the provisioning service: an
// enrollment for the device's LDevID certificate. services/dps's service
// client satisfies it through dps.Registry.
type Registry interface {
	Enroll(ctx context.Context, registrationID string, cert *x509.Certificate) error
}

// Policy is what a device must show to be enrolled. Every check is recorded
// in the decision, pass or fail.
type Policy struct {
	// RequiredStages must each have been recorded by a custodian.
	// Default: firmware-programmed.
	RequiredStages []string
	// QuotePCRs are the PCRs the fresh quote must cover; each must equal the
	// value recorded with firmware-programmed. Default [0].
	QuotePCRs []int
}

// Config configures a gate.
type Config struct {
	// Name is the gate's partner name; Operator the operator it enrolls for.
	Name, Operator string
	// IDScope is the operator's DPS ID scope; requests for another scope are
	// refused.
	IDScope string
	// Key signs device.enrolled events (the gate's partner key).
	Key crypto.Signer
	// NATS carries device.enrolled to the ledger.
	NATS *nats.Conn
	// Ledger answers custody-state questions.
	Ledger DeviceState
	// TPMTrust verifies EK certificate chains.
	TPMTrust *attest.Bundle
	// LDevIDCA issues LDevID certificates.
	LDevIDCA *pki.CA
	// Registry creates the DPS enrollment.
	Registry Registry
	// DPSEndpoint is the device-facing DPS URL returned to enrolled devices.
	DPSEndpoint string
	Policy      Policy
	// ChallengeTTL bounds the time between the two registration calls.
	// Default 2 minutes.
	ChallengeTTL time.Duration
	// LDevIDValidity is an LDevID's lifetime. Default 1 year.
	LDevIDValidity time.Duration
	Logger         *slog.Logger
	Now            func() time.Time
}

// Gate decides first-boot enrollments.
type Gate struct {
	cfg Config
	pub *events.Publisher

	mu         sync.Mutex
	challenges map[string]*challenge // by registration ID
	decisions  []*Decision
}

type challenge struct {
	secret  []byte
	nonce   []byte
	expires time.Time
}

// New validates cfg and returns a gate.
func New(cfg Config) (*Gate, error) {
	switch {
	case !events.ValidPartnerName(cfg.Name) || !events.ValidPartnerName(cfg.Operator):
		return nil, errors.New("gate: Name and Operator must be partner names")
	case cfg.IDScope == "":
		return nil, errors.New("gate: IDScope is required")
	case cfg.Key == nil || cfg.NATS == nil || cfg.Ledger == nil || cfg.TPMTrust == nil || cfg.LDevIDCA == nil || cfg.Registry == nil:
		return nil, errors.New("gate: Key, NATS, Ledger, TPMTrust, LDevIDCA and Registry are required")
	}
	if len(cfg.Policy.RequiredStages) == 0 {
		cfg.Policy.RequiredStages = []string{events.StageFirmwareProgrammed}
	}
	if len(cfg.Policy.QuotePCRs) == 0 {
		cfg.Policy.QuotePCRs = []int{0}
	}
	if cfg.ChallengeTTL <= 0 {
		cfg.ChallengeTTL = 2 * time.Minute
	}
	if cfg.LDevIDValidity <= 0 {
		cfg.LDevIDValidity = 365 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p, err := events.NewPublisher(cfg.NATS, cfg.Name)
	if err != nil {
		return nil, err
	}
	return &Gate{cfg: cfg, pub: p, challenges: map[string]*challenge{}}, nil
}

// Check is one policy check's outcome.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Decision is the record of one enrollment decision.
type Decision struct {
	RegistrationID string    `json:"registrationId"`
	Time           time.Time `json:"time"`
	Allowed        bool      `json:"allowed"`
	// Rule names the first check that failed (empty when allowed).
	Rule    string  `json:"rule,omitempty"`
	Message string  `json:"message,omitempty"`
	Checks  []Check `json:"checks"`
	// LogIndex is the device.enrolled entry (allowed decisions).
	LogIndex uint64 `json:"logIndex,omitempty"`
}

// Decisions returns the gate's decisions, oldest first.
func (g *Gate) Decisions() []*Decision {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.decisions)
}

// TPMInfo is the device's TPM attestation data, as DPS names it.
type TPMInfo struct {
	EndorsementKey []byte `json:"endorsementKey"` // TPMT_PUBLIC of the EK
	StorageRootKey []byte `json:"storageRootKey,omitempty"`
}

// Evidence is what the device sends with its authorised call: a quote and
// the LDevID key's certification, both over the gate's nonce.
type Evidence struct {
	Quote  *events.Evidence        `json:"quote"`
	LDevID *attest.CertifyEvidence `json:"ldevid"`
}

// RegisterRequest is the body of PUT …/register.
type RegisterRequest struct {
	RegistrationID string    `json:"registrationId"`
	TPM            *TPMInfo  `json:"tpm"`
	Payload        *Evidence `json:"payload,omitempty"`
}

// Challenge is the 401 answer to an unauthorised registration: the
// credential (DPS's authenticationKey) and the nonce to quote.
type Challenge struct {
	AuthenticationKey []byte `json:"authenticationKey"` // JSON of attest.Credential
	Nonce             []byte `json:"nonce"`
}

// Outcome is the answer to an authorised registration, shaped like DPS's
// RegistrationOperationStatus.
type Outcome struct {
	OperationID       string            `json:"operationId"`
	Status            string            `json:"status"` // assigned | failed
	RegistrationState RegistrationState `json:"registrationState"`
}

// RegistrationState is DPS's registration state, plus the LDevID chain
// (issuedCertificateChain, as DPS's 2025-07-01-preview names it) and the
// decision record.
type RegistrationState struct {
	RegistrationID         string    `json:"registrationId"`
	Status                 string    `json:"status"`
	ErrorCode              int       `json:"errorCode,omitempty"`
	ErrorMessage           string    `json:"errorMessage,omitempty"`
	CreatedDateTimeUTC     time.Time `json:"createdDateTimeUtc"`
	LastUpdatedDateTimeUTC time.Time `json:"lastUpdatedDateTimeUtc"`
	IssuedCertificateChain [][]byte  `json:"issuedCertificateChain,omitempty"`
	DPSEndpoint            string    `json:"dpsEndpoint,omitempty"`
	IDScope                string    `json:"idScope,omitempty"`
	Decision               *Decision `json:"decision,omitempty"`
}

// ErrBadRequest marks requests refused before any decision.
var ErrBadRequest = errors.New("bad registration request")

// Begin answers a registration without proof: it looks the device up by its
// EK, and returns a credential for the device's IAK encrypted to that EK and
// a fresh nonce. Only the TPM holding both keys can use them.
func (g *Gate) Begin(ctx context.Context, idScope string, req *RegisterRequest) (*Challenge, error) {
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
	g.challenges[req.RegistrationID] = &challenge{secret: secret, nonce: nonce, expires: g.cfg.Now().Add(g.cfg.ChallengeTTL)}
	g.mu.Unlock()
	return &Challenge{AuthenticationKey: key, Nonce: nonce}, nil
}

func (g *Gate) checkRequest(idScope string, req *RegisterRequest) error {
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

// SASToken signs a DPS SAS token for registration regID in idScope with key
// (the activated secret), as a device does after activating its credential.
func SASToken(idScope, regID string, key []byte, expiry time.Time) string {
	sr := url.QueryEscape(idScope + "/registrations/" + regID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=registration"
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
	want := SASToken(idScope, regID, key, time.Unix(se, 0))
	if !hmac.Equal([]byte(token), []byte(want)) {
		return errors.New("the token is not signed with the activated credential")
	}
	return nil
}

// Finish decides an authorised registration. The returned outcome is
// "assigned" with the LDevID chain, or "failed" naming the rule broken.
func (g *Gate) Finish(ctx context.Context, idScope, authorization string, req *RegisterRequest) (*Outcome, error) {
	if err := g.checkRequest(idScope, req); err != nil {
		return nil, err
	}
	g.mu.Lock()
	ch := g.challenges[req.RegistrationID]
	delete(g.challenges, req.RegistrationID) // one try per challenge
	g.mu.Unlock()
	now := g.cfg.Now()
	d := &Decision{RegistrationID: req.RegistrationID, Time: now}
	chain, err := g.decide(ctx, idScope, authorization, req, ch, d)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.decisions = append(g.decisions, d)
	g.mu.Unlock()
	g.cfg.Logger.Info("enrollment decision", "device", d.RegistrationID, "allowed", d.Allowed, "rule", d.Rule, "message", d.Message)
	out := &Outcome{
		OperationID: newOperationID(),
		RegistrationState: RegistrationState{
			RegistrationID: req.RegistrationID, CreatedDateTimeUTC: now, LastUpdatedDateTimeUTC: g.cfg.Now(),
			Decision: d,
		},
	}
	if d.Allowed {
		out.Status, out.RegistrationState.Status = "assigned", "assigned"
		out.RegistrationState.IssuedCertificateChain = chain
		out.RegistrationState.DPSEndpoint = g.cfg.DPSEndpoint
		out.RegistrationState.IDScope = g.cfg.IDScope
	} else {
		out.Status, out.RegistrationState.Status = "failed", "failed"
		out.RegistrationState.ErrorCode = 401100 + slices.IndexFunc(d.Checks, func(c Check) bool { return !c.OK })
		out.RegistrationState.ErrorMessage = d.Rule + ": " + d.Message
	}
	return out, nil
}

// decide runs every check in order, recording each, and stops at the first
// failure. On success it issues the LDevID, enrolls in DPS and logs
// device.enrolled.
func (g *Gate) decide(ctx context.Context, idScope, authorization string, req *RegisterRequest, ch *challenge, d *Decision) ([][]byte, error) {
	fail := func(rule, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		d.Checks = append(d.Checks, Check{Name: rule, OK: false, Detail: msg})
		d.Rule, d.Message = rule, msg
	}
	pass := func(rule, format string, args ...any) {
		d.Checks = append(d.Checks, Check{Name: rule, OK: true, Detail: fmt.Sprintf(format, args...)})
	}
	now := g.cfg.Now()
	if ch == nil || now.After(ch.expires) {
		fail("challenge", "no live credential challenge for this registration; start again")
		return nil, nil
	}
	// 1. The registration ID is the device ID: SHA-256 of the EK public key.
	ekPub, _, err := attest.PublicKeyFromTPMT(req.TPM.EndorsementKey)
	if err != nil {
		fail("ek-identity", "endorsement key: %v", err)
		return nil, nil
	}
	if id, _ := attest.DeviceID(ekPub); id != req.RegistrationID {
		fail("ek-identity", "the registration ID is not the SHA-256 of this EK")
		return nil, nil
	}
	pass("ek-identity", "registration ID = SHA-256(EK)")
	// 2. The ledger knows the device and holds this EK.
	dev, err := g.cfg.Ledger.Device(req.RegistrationID)
	if errors.Is(err, ledger.ErrNotFound) {
		fail("custody-chain", "the ledger has no custody record of this device")
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if !bytes.Equal(dev.EKPublic, req.TPM.EndorsementKey) {
		fail("ek-identity", "the EK differs from the one the TPM vendor recorded")
		return nil, nil
	}
	pass("ledger-record", "manufactured by %s", dev.Vendor)
	// 3. The EK certificate the vendor recorded chains to the trust bundle.
	ek, err := attest.ParseEKCertificate(dev.EKCertificate)
	if err == nil {
		_, err = ek.Verify(g.cfg.TPMTrust, now)
	}
	if err != nil {
		fail("ek-chain", "EK certificate: %v", err)
		return nil, nil
	}
	pass("ek-chain", "EK certificate chains to the TPM trust bundle (%s)", ek.TPM.Manufacturer)
	// 4. Credential activation: the SAS token is keyed with the secret that
	// only the TPM holding this EK and the recorded IAK could recover.
	if err := g.checkSAS(idScope, req.RegistrationID, authorization, ch.secret); err != nil {
		fail("activation", "credential activation not proven: %v", err)
		return nil, nil
	}
	pass("activation", "the TPM holding the EK activated the credential for the recorded IAK")
	// 5. A fresh quote by the recorded IAK over the gate's nonce.
	if req.Payload == nil || req.Payload.Quote == nil || req.Payload.LDevID == nil {
		fail("quote", "the registration carries no quote or LDevID evidence")
		return nil, nil
	}
	q, err := req.Payload.Quote.Quote()
	if err != nil {
		fail("quote", "%v", err)
		return nil, nil
	}
	qi, err := attest.VerifyQuote(dev.IAKPublic, q, ch.nonce)
	if err != nil {
		fail("quote", "fresh quote: %v", err)
		return nil, nil
	}
	pass("quote", "fresh quote by the recorded IAK over the gate's nonce")
	if dev.LastQuote != nil {
		prev := &attest.QuoteInfo{Clock: dev.LastQuote.Clock, ResetCount: dev.LastQuote.ResetCount, RestartCount: dev.LastQuote.RestartCount}
		if err := attest.CheckMonotonic(prev, qi); err != nil {
			fail("counters", "TPM counters against the device's history: %v", err)
			return nil, nil
		}
	}
	pass("counters", "clock %d, resets %d, restarts %d: not behind the history", qi.Clock, qi.ResetCount, qi.RestartCount)
	// 6. Custody: the operator holds the device, the chain is clean.
	if dev.Decommissioned {
		fail("decommissioned", "the device was decommissioned")
		return nil, nil
	}
	if dev.Flag != nil {
		fail("flagged", "the device is flagged (%s, log index %d)", dev.Flag.Reason, dev.Flag.Index)
		return nil, nil
	}
	pass("flags", "not flagged")
	if dev.Custodian != g.cfg.Operator {
		fail("custody-chain", "the last custodian is %s, not %s", dev.Custodian, g.cfg.Operator)
		return nil, nil
	}
	if dev.Pending != nil {
		fail("custody-chain", "a hand-off to %s is pending", dev.Pending.To)
		return nil, nil
	}
	pass("custody-chain", "custodian %s after %d hand-offs", dev.Custodian, dev.Handoffs)
	for _, s := range g.cfg.Policy.RequiredStages {
		if _, ok := dev.Stages[s]; !ok {
			fail("stages", "required stage %s was never recorded", s)
			return nil, nil
		}
	}
	pass("stages", "required stages recorded: %s", strings.Join(g.cfg.Policy.RequiredStages, ", "))
	// 7. PCRs equal what the EMS recorded with the firmware.
	for _, i := range g.cfg.Policy.QuotePCRs {
		want, ok := dev.ExpectedPCRs[strconv.Itoa(i)]
		got := hex.EncodeToString(qi.PCRs[i])
		if !ok || want != got {
			fail("pcr-policy", "PCR %d is %s, the firmware record says %s", i, short(got), short(want))
			return nil, nil
		}
	}
	pass("pcr-policy", "PCRs %v equal the recorded firmware measurements", g.cfg.Policy.QuotePCRs)
	// 8. The LDevID key is TPM-resident and certified by the IAK.
	ldevPub, err := attest.VerifyCertify(dev.IAKPublic, req.Payload.LDevID, ch.nonce)
	if err != nil {
		fail("ldevid", "LDevID certification: %v", err)
		return nil, nil
	}
	pass("ldevid", "LDevID key certified by the IAK (TPM2_Certify)")
	cert, err := g.issueLDevID(req.RegistrationID, ldevPub)
	if err != nil {
		return nil, err
	}
	if err := g.cfg.Registry.Enroll(ctx, req.RegistrationID, cert); err != nil {
		fail("dps", "DPS enrollment: %v", err)
		return nil, nil
	}
	pass("dps", "individual enrollment created")
	idx, err := g.logEnrolled(ctx, req, cert, ch.nonce)
	if err != nil {
		fail("ledger", "recording device.enrolled: %v", err)
		return nil, nil
	}
	d.Allowed, d.LogIndex = true, idx
	return [][]byte{cert.Raw, g.cfg.LDevIDCA.Cert.Raw}, nil
}

func (g *Gate) issueLDevID(regID string, pub crypto.PublicKey) (*x509.Certificate, error) {
	now := g.cfg.Now()
	u, _ := url.Parse("urn:custody:device:" + regID)
	tmpl := &x509.Certificate{
		Subject:     pkixName(regID),
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    now.Add(g.cfg.LDevIDValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	return g.cfg.LDevIDCA.Issue(tmpl, pub)
}

// logEnrolled publishes device.enrolled with the fresh quote as evidence
// (its qualifyingData is the gate's nonce, recorded as the challenge).
func (g *Gate) logEnrolled(ctx context.Context, req *RegisterRequest, cert *x509.Certificate, nonce []byte) (uint64, error) {
	st := events.NewStatement(events.KindDeviceEnrolled, g.cfg.Name, req.RegistrationID, g.cfg.Now(), newEventID())
	st.Predicate.Enrolled = &events.Enrolled{
		Operator: g.cfg.Operator, RegistrationID: req.RegistrationID, IDScope: g.cfg.IDScope,
		Challenge: nonce, LDevIDCertificate: cert.Raw,
	}
	st.Predicate.Evidence = req.Payload.Quote
	env, err := events.Sign(ctx, st, g.cfg.Key, g.cfg.Name)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := g.pub.Publish(ctx, env)
	if err != nil {
		return 0, err
	}
	if r.Status != events.StatusAccepted {
		return 0, fmt.Errorf("the ledger refused it: %s: %s", r.Code, r.Reason)
	}
	return r.LogIndex, nil
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	if s == "" {
		return "(none)"
	}
	return s
}

func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newOperationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "4." + hex.EncodeToString(b[:8]) + "." + hex.EncodeToString(b[8:])
}
