// Package station is a partner's custody station: the service a TPM vendor,
// ODM, OEM, EMS or operator runs on its factory floor. A station gets a fresh
// quote from the device through the agent's factory API for every event,
// builds the in-toto statement, validates it against its schema, signs it
// (DSSE, the partner's ECDSA P-256 key), publishes it on JetStream and waits
// for the ledger's receipt. An event is done when its receipt arrives.
//
// The TPM vendor's station also manufactures: it binds the IAK to the EK by
// credential activation, issues the EK certificate (written to the TPM's NV)
// and the IAK certificate from its manufacturing CA, and records
// tpm.manufactured.
package station

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/schemas"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/pki"
)

// DeviceState is what a station reads of the ledger: a device's custody
// state, and the devices offered to a partner.
type DeviceState interface {
	Device(id string) (*ledger.Device, error)
	PendingOffers(to string) ([]string, error)
}

// Pending is an offer waiting for this station's partner to accept it.
type Pending struct {
	Device string `json:"device"`
	From   string `json:"from"`
	Offer  string `json:"offer"`
	Index  uint64 `json:"logIndex"`
	// Shipment is the shipment ID when the offer is a shipment's (accept
	// it with accept-shipment and its offer digest).
	Shipment string `json:"shipment,omitempty"`
}

// PendingOffers lists the offers made to this station's partner.
func (s *Station) PendingOffers() ([]Pending, error) {
	ids, err := s.cfg.Ledger.PendingOffers(s.cfg.Name)
	if err != nil {
		return nil, err
	}
	out := []Pending{}
	for _, id := range ids {
		d, err := s.cfg.Ledger.Device(id)
		if err != nil {
			return nil, err
		}
		if d.Pending != nil && d.Pending.To == s.cfg.Name {
			out = append(out, Pending{Device: id, From: d.Pending.From, Offer: d.Pending.Digest, Index: d.Pending.Index, Shipment: d.Pending.Shipment})
		}
	}
	return out, nil
}

// Config configures a station.
type Config struct {
	// Name and Role are the partner's registered identity.
	Name, Role string
	// Key is the partner's signing key (ECDSA P-256), certified by the
	// consortium CA.
	Key crypto.Signer
	// NATS carries events to the ledger and receipts back (through an
	// events.Publisher). Required unless Transport is set.
	NATS *nats.Conn
	// ReceiptVerifier proves the ledger's receipts before an event counts as
	// logged (inclusion proof, checkpoint signed by the log's key):
	// ledger.NewReceiptVerifier with the log's public key and this partner's
	// registered certificate. Required with NATS.
	ReceiptVerifier events.ReceiptVerifier
	// Transport replaces the NATS publisher (tests: a station's rules with
	// state in memory). Default: an events.Publisher on NATS, keeping
	// OutboxDir and checking receipts with ReceiptVerifier.
	Transport Transport
	// Ledger answers custody-state questions (pending offers).
	Ledger DeviceState
	// ManufacturingCA issues EK and IAK certificates (TPM vendors only).
	ManufacturingCA *pki.CA
	// TPMInfo is written into EK certificates (TPM vendors only).
	TPMInfo attest.TPMInfo
	// QuotePCRs are the PCRs quoted with every event. Default [0].
	QuotePCRs []int
	// OutboxDir keeps events on disk until the ledger answers them ("" for
	// none: an event in flight is lost if the station crashes).
	OutboxDir string
	// ReceiptTimeout bounds the wait for the ledger's answer. Default 30s.
	ReceiptTimeout time.Duration
	// HTTPClient reaches device agents (default: a 2-minute timeout and
	// no client certificate). Agents served by `custody-agent serve`
	// answer only partners' certificates: give a client that presents the
	// partner's (pki.Demo.HTTPClient) and trusts the agents' TLS CA. Its
	// TLS configuration is kept; redirects are never followed, and its
	// dialer connects only inside DeviceNetworks.
	HTTPClient *http.Client
	// DeviceNetworks are the networks device agents may be reached on
	// (default DefaultDeviceNetworks: loopback only). An agent address
	// outside them is refused before anything is contacted.
	DeviceNetworks []netip.Prefix
	Logger         *slog.Logger
	Now            func() time.Time
}

// Transport carries a station's signed events to the ledger and brings its
// answers back; *events.Publisher is the real one.
type Transport interface {
	// Publish sends a signed envelope (a parcel, for a shipment) and waits
	// for the ledger's receipt.
	Publish(ctx context.Context, envelope []byte) (*events.Receipt, error)
	// Resend re-sends the outbox's unanswered events named by digests.
	Resend(ctx context.Context, digests ...string) (map[string]*events.Receipt, error)
}

// Station is one partner's station.
type Station struct {
	cfg    Config
	pub    Transport
	outbox *events.Outbox
}

// New validates cfg and returns a station.
func New(cfg Config) (*Station, error) {
	if !events.ValidPartnerName(cfg.Name) {
		return nil, fmt.Errorf("station: invalid partner name %q", cfg.Name)
	}
	if cfg.Key == nil || (cfg.NATS == nil && cfg.Transport == nil) || cfg.Ledger == nil {
		return nil, errors.New("station: Key, NATS (or a Transport) and Ledger are required")
	}
	if cfg.Transport == nil && cfg.ReceiptVerifier == nil {
		return nil, errors.New("station: a ReceiptVerifier is required with NATS: receipts are checked against the log's key")
	}
	if cfg.Role == events.RoleTPMVendor && cfg.ManufacturingCA == nil {
		return nil, errors.New("station: a TPM vendor station needs its manufacturing CA")
	}
	if len(cfg.QuotePCRs) == 0 {
		cfg.QuotePCRs = []int{0}
	}
	if cfg.ReceiptTimeout <= 0 {
		cfg.ReceiptTimeout = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 2 * time.Minute}
	}
	if len(cfg.DeviceNetworks) == 0 {
		cfg.DeviceNetworks = DefaultDeviceNetworks
	}
	// A device agent's address comes from the caller: a redirect would let
	// it send the station elsewhere, so none is followed, and nothing
	// outside the device networks is dialled.
	cfg.HTTPClient = agentClient(cfg.HTTPClient, cfg.DeviceNetworks)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Station{cfg: cfg, pub: cfg.Transport}
	if cfg.Transport != nil {
		return s, nil
	}
	p, err := events.NewPublisher(cfg.NATS, cfg.Name, cfg.ReceiptVerifier)
	if err != nil {
		return nil, err
	}
	s.pub = p
	if cfg.OutboxDir != "" {
		if s.outbox, err = events.OpenOutbox(cfg.OutboxDir); err != nil {
			return nil, err
		}
		p.WithOutbox(s.outbox)
	}
	return s, nil
}

// Recover re-sends every event the outbox held when it started (a station
// that crashed or was stopped before the ledger answered) until each one is
// answered or ctx ends. It keeps trying while NATS or the ledger is away,
// waiting 1 s, then up to 30 s, between rounds and logging each failed one.
// Callers run it beside serving, never before: a pending event must not
// stop a station from starting. An outbox file that is not a signed
// envelope of this partner can never be sent: it is logged and left in
// place. Recover returns nil once nothing it can send is left, ctx.Err()
// if ctx ended first.
func (s *Station) Recover(ctx context.Context) error {
	if s.outbox == nil {
		return nil
	}
	left, err := s.outbox.Digests()
	if err != nil {
		return fmt.Errorf("station %s: outbox: %w", s.cfg.Name, err)
	}
	if len(left) > 0 {
		s.cfg.Logger.Info("re-sending events the ledger had not answered", "count", len(left))
	}
	backoff := time.Second
	for len(left) > 0 {
		rs, err := s.pub.Resend(ctx, left...)
		for d, r := range rs {
			s.cfg.Logger.Info("recovered event answered", "digest", d, "status", r.Status, "code", r.Code)
		}
		if err == nil {
			break
		}
		var retry []string
		for _, d := range left {
			if _, answered := rs[d]; answered || !s.outbox.Has(d) {
				continue
			}
			retry = append(retry, d)
		}
		if bad := badOutboxEntries(err); len(bad) > 0 {
			s.cfg.Logger.Error("outbox entries that cannot be sent are left in place", "dir", s.cfg.OutboxDir, "digests", slices.Collect(maps.Keys(bad)))
			retry = slices.DeleteFunc(retry, func(d string) bool { return bad[d] })
		}
		if len(retry) == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.cfg.Logger.Warn("re-sending pending events failed; trying again", "pending", len(retry), "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		left = retry
	}
	return nil
}

// badOutboxEntries are the digests of the entries Resend could not send.
func badOutboxEntries(err error) map[string]bool {
	bad := map[string]bool{}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if be := (*events.BadOutboxEntryError)(nil); errors.As(e, &be) {
			bad[be.Digest] = true
		}
	}
	return bad
}

// Unconfirmed lists the digests of events published and not yet answered.
func (s *Station) Unconfirmed() ([]string, error) {
	if s.outbox == nil {
		return nil, nil
	}
	return s.outbox.Digests()
}

// device is a client for the agent at agentURL (checked by AgentURL).
func (s *Station) device(agentURL string) (*device.Client, error) {
	base, err := AgentURL(agentURL)
	if err != nil {
		return nil, fmt.Errorf("station: agent %w", err)
	}
	u, _ := url.Parse(base)
	if err := checkAgentHost(s.cfg.DeviceNetworks, u.Hostname()); err != nil {
		return nil, fmt.Errorf("station: agent: %w", err)
	}
	return device.NewClient(base, s.cfg.HTTPClient), nil
}

// Name is the partner's name.
func (s *Station) Name() string { return s.cfg.Name }

// RejectedError is the ledger's refusal of an event, with the rule it broke.
type RejectedError struct{ Receipt *events.Receipt }

func (e *RejectedError) Error() string {
	what := "rejected the event"
	if e.Receipt.Status == events.StatusEvidence {
		what = "logged the event as evidence against its publisher"
	}
	return fmt.Sprintf("the ledger %s: %s: %s", what, e.Receipt.Code, e.Receipt.Reason)
}

// Result is a logged event, or (Existing) the pending offer an offer
// repeated.
type Result struct {
	Device  string          `json:"device"`
	Receipt *events.Receipt `json:"receipt"`
	// Existing is set, and Receipt nil, when Offer found the same offer
	// (this partner to the same recipient) pending: a retry is that offer,
	// and nothing new was signed or published.
	Existing *ledger.Offer `json:"existing,omitempty"`
}

// publish quotes st on the device, signs and publishes it, and waits for the
// receipt. A refusal, or an event logged only as evidence, is a
// *RejectedError carrying the receipt.
func (s *Station) publish(ctx context.Context, dev *device.Client, st *events.Statement) (*Result, error) {
	if err := s.quote(ctx, dev, st); err != nil {
		return nil, err
	}
	return s.sign(ctx, st)
}

func (s *Station) sign(ctx context.Context, st *events.Statement) (*Result, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := schemas.Validate(payload); err != nil {
		return nil, fmt.Errorf("station: %w", err)
	}
	env, err := events.Sign(ctx, st, s.cfg.Key, s.cfg.Name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptTimeout)
	defer cancel()
	r, err := s.pub.Publish(ctx, env)
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("event answered", "kind", st.Predicate.Kind, "target", st.Target(), "status", r.Status, "code", r.Code, "index", r.LogIndex)
	res := &Result{Device: st.Device(), Receipt: r}
	if r.Status != events.StatusAccepted {
		return res, &RejectedError{Receipt: r}
	}
	return res, nil
}

func (s *Station) deviceID(ctx context.Context, dev *device.Client) (string, error) {
	id, err := dev.Identity(ctx)
	if err != nil {
		return "", fmt.Errorf("station: device identity: %w", err)
	}
	return id.DeviceID, nil
}

// Manufacture is the TPM vendor's birth record for the TPM behind agentURL:
// it proves the IAK co-resident with the EK (MakeCredential here,
// ActivateCredential in the TPM), issues the EK certificate into the TPM's
// NV and the IAK certificate, and records tpm.manufactured.
func (s *Station) Manufacture(ctx context.Context, agentURL string) (*Result, error) {
	if s.cfg.Role != events.RoleTPMVendor {
		return nil, fmt.Errorf("station: only a TPM vendor manufactures; %s is %s", s.cfg.Name, s.cfg.Role)
	}
	dev, err := s.device(agentURL)
	if err != nil {
		return nil, err
	}
	id, err := dev.Identity(ctx)
	if err != nil {
		return nil, fmt.Errorf("station: device identity: %w", err)
	}
	ekPub, _, err := attest.PublicKeyFromTPMT(id.EKPublic)
	if err != nil {
		return nil, fmt.Errorf("station: EK public area: %w", err)
	}
	if did, err := attest.DeviceID(ekPub); err != nil || did != id.DeviceID {
		return nil, fmt.Errorf("station: the device reports ID %s but its EK hashes to %s", id.DeviceID, did)
	}
	iakPub, iakName, err := attest.PublicKeyFromTPMT(id.IAKPublic)
	if err != nil {
		return nil, fmt.Errorf("station: IAK public area: %w", err)
	}
	// Credential activation: only the TPM holding this EK can recover a
	// secret bound to this IAK's name.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	cred, err := attest.MakeCredential(id.EKPublic, iakName, secret)
	if err != nil {
		return nil, err
	}
	got, err := dev.ActivateCredential(ctx, cred)
	if err != nil {
		return nil, fmt.Errorf("station: credential activation: %w", err)
	}
	if subtle.ConstantTimeCompare(got, secret) != 1 {
		return nil, errors.New("station: credential activation returned the wrong secret: the IAK is not in the TPM that holds this EK")
	}
	now := s.cfg.Now()
	ca := s.cfg.ManufacturingCA
	tmpl, err := attest.EKCertificateTemplate(ekPub, s.cfg.TPMInfo, now.Add(-time.Hour), now.AddDate(20, 0, 0))
	if err != nil {
		return nil, err
	}
	ekCert, err := ca.Issue(tmpl, ekPub)
	if err != nil {
		return nil, fmt.Errorf("station: issuing the EK certificate: %w", err)
	}
	if err := dev.PutEKCertificate(ctx, ekCert.Raw); err != nil {
		return nil, fmt.Errorf("station: writing the EK certificate to NV: %w", err)
	}
	itmpl, err := attest.IAKCertificateTemplate(iakPub, id.DeviceID, ekCert, now.Add(-time.Hour), now.AddDate(20, 0, 0))
	if err != nil {
		return nil, err
	}
	iakCert, err := ca.Issue(itmpl, iakPub)
	if err != nil {
		return nil, fmt.Errorf("station: issuing the IAK certificate: %w", err)
	}
	st := events.NewStatement(events.KindTPMManufactured, s.cfg.Name, id.DeviceID, now, events.NewEventID())
	st.Predicate.Manufactured = &events.Manufactured{
		EKCertificate: ekCert.Raw, EKPublic: id.EKPublic, IAKPublic: id.IAKPublic, IAKCertificate: iakCert.Raw,
		TPM: s.cfg.TPMInfo,
	}
	return s.publish(ctx, dev, st)
}

// RecordStage records a manufacturing stage (assembly, test-passed) on the
// device behind agentURL.
func (s *Station) RecordStage(ctx context.Context, agentURL, stage, note string) (*Result, error) {
	if stage == events.StageFirmwareProgrammed {
		return nil, errors.New("station: firmware is recorded by ProgramFirmware, which programs it")
	}
	dev, err := s.device(agentURL)
	if err != nil {
		return nil, err
	}
	st, err := s.quotedStage(ctx, dev, stage, note)
	if err != nil {
		return nil, err
	}
	return s.sign(ctx, st)
}

// ProgramFirmware flashes image into the device behind agentURL (the device
// measures it into its firmware PCR) and records firmware-programmed with
// the image digest and the PCR values the gate will expect at first boot.
func (s *Station) ProgramFirmware(ctx context.Context, agentURL string, image []byte) (*Result, error) {
	if len(image) == 0 {
		return nil, errors.New("station: empty firmware image")
	}
	dev, err := s.device(agentURL)
	if err != nil {
		return nil, err
	}
	st, err := s.programmed(ctx, dev, image)
	if err != nil {
		return nil, err
	}
	return s.publish(ctx, dev, st)
}

// programmed flashes image into dev and returns its firmware-programmed
// statement, with the image digest and the PCR values the gate will expect
// at first boot, not yet quoted.
func (s *Station) programmed(ctx context.Context, dev *device.Client, image []byte) (*events.Statement, error) {
	id, err := s.deviceID(ctx, dev)
	if err != nil {
		return nil, err
	}
	digest, err := dev.ProgramFirmware(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("station: programming firmware: %w", err)
	}
	st := events.NewStatement(events.KindStageRecorded, s.cfg.Name, id, s.cfg.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageFirmwareProgrammed, FirmwareDigest: digest, PCRs: map[string]string{}}
	nonce, err := events.StatementBindingDigest(st)
	if err != nil {
		return nil, err
	}
	// The PCR values are part of the statement, so the quote (over the
	// statement's binding digest) must be taken after they are known: read
	// them through a first quote, then quote the final statement.
	probe, err := dev.Quote(ctx, nonce, s.cfg.QuotePCRs)
	if err != nil {
		return nil, err
	}
	for i, v := range probe.PCRs {
		st.Predicate.Stage.PCRs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return st, nil
}

// PendingOfferError is Offer's refusal of an offer of a device that has an
// offer from this partner to another recipient pending: the ledger would
// log a second offer as equivocation evidence (a double hand-off) and flag
// the device. It is returned before the device is quoted or anything is
// signed.
type PendingOfferError struct {
	Device  string
	Pending ledger.Offer
}

func (e *PendingOfferError) Error() string {
	return fmt.Sprintf("station: device %s already has an offer pending from %s to %s (log index %d); "+
		"another offer would be logged by the ledger as equivocation evidence and flag the device, so it was not signed. "+
		"Wait for %s to accept, or withdraw the pending offer first (withdraw in the station API, custody station call withdraw); "+
		"to make a double offer on purpose, ask for it explicitly "+
		"(\"equivocate\": true in the station API, --equivocate in custody station call offer)",
		e.Device, e.Pending.From, e.Pending.To, e.Pending.Index, e.Pending.To)
}

// Offer offers the device behind agentURL to partner to. It is
// idempotent: while the device has this partner's offer to the same
// recipient pending (a factory system retrying after a timeout), it
// answers success with that offer (Result.Existing) and signs nothing. While
// the device has this partner's offer to another recipient pending (a
// mistyped offer), it refuses with a *PendingOfferError before signing
// anything: the ledger would log the offer as equivocation and flag the
// device. The checks read the ledger's state; a retry racing the first
// offer is answered by the ledger as already-exists (a harmless repeat).
func (s *Station) Offer(ctx context.Context, agentURL, to string) (*Result, error) {
	return s.offer(ctx, agentURL, to, false)
}

// Equivocate offers the device behind agentURL to partner to even while it
// has an offer from this partner pending, which the ledger logs as
// equivocation evidence and which flags the device. It exists to test the
// ledger and the gate (the demo's double-sold device, the simulator's
// double hand-off); without a pending offer it is Offer.
func (s *Station) Equivocate(ctx context.Context, agentURL, to string) (*Result, error) {
	return s.offer(ctx, agentURL, to, true)
}

func (s *Station) offer(ctx context.Context, agentURL, to string, equivocate bool) (*Result, error) {
	dev, err := s.device(agentURL)
	if err != nil {
		return nil, err
	}
	id, err := s.deviceID(ctx, dev)
	if err != nil {
		return nil, err
	}
	if !equivocate {
		existing, err := s.ownPendingOffer(id, to)
		if err != nil {
			return nil, err
		}
		if existing != nil {
			s.cfg.Logger.Info("offer already pending; answered with it", "device", id, "to", to, "offer", existing.Digest, "index", existing.Index)
			return &Result{Device: id, Existing: existing}, nil
		}
	}
	st := events.NewStatement(events.KindHandoffOffered, s.cfg.Name, id, s.cfg.Now(), events.NewEventID())
	st.Predicate.Handoff = &events.Handoff{From: s.cfg.Name, To: to}
	return s.publish(ctx, dev, st)
}

// ownPendingOffer reads device id's pending offer from this partner: the
// offer itself when it is to recipient to (a retry of it), a
// *PendingOfferError when it is to another recipient (the ledger would log
// a new offer as equivocation), nil when there is none or the ledger does
// not know the device (it refuses with its rule).
func (s *Station) ownPendingOffer(id, to string) (*ledger.Offer, error) {
	state, err := s.cfg.Ledger.Device(id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("station: reading device %s's state to check for a pending offer: %w", id, err)
	case state.Pending == nil || state.Pending.From != s.cfg.Name:
		return nil, nil
	case state.Pending.To == to:
		existing := *state.Pending
		return &existing, nil
	}
	return nil, &PendingOfferError{Device: id, Pending: *state.Pending}
}

// Accept accepts the pending offer of the device behind agentURL.
func (s *Station) Accept(ctx context.Context, agentURL string) (*Result, error) {
	return s.answerOffer(ctx, agentURL, events.KindHandoffAccepted, "to",
		func(o *ledger.Offer) bool { return o.To == s.cfg.Name })
}

// Withdraw withdraws this partner's pending offer of the device behind
// agentURL (handoff.withdrawn, naming the offer) before its recipient
// accepts it; custody stays with this partner.
func (s *Station) Withdraw(ctx context.Context, agentURL string) (*Result, error) {
	return s.answerOffer(ctx, agentURL, events.KindHandoffWithdrawn, "from",
		func(o *ledger.Offer) bool { return o.From == s.cfg.Name })
}

// answerOffer publishes kind (an acceptance or a withdrawal) naming the
// pending offer of the device behind agentURL, which must be on this
// partner's side (ours; side says which, "to" or "from", in the error).
func (s *Station) answerOffer(ctx context.Context, agentURL, kind, side string, ours func(*ledger.Offer) bool) (*Result, error) {
	dev, err := s.device(agentURL)
	if err != nil {
		return nil, err
	}
	id, err := s.deviceID(ctx, dev)
	if err != nil {
		return nil, err
	}
	state, err := s.cfg.Ledger.Device(id)
	if err != nil {
		return nil, fmt.Errorf("station: device %s: %w", id, err)
	}
	p := state.Pending
	if p == nil || !ours(p) {
		return nil, fmt.Errorf("station: device %s has no pending offer %s %s", id, side, s.cfg.Name)
	}
	st := events.NewStatement(kind, s.cfg.Name, id, s.cfg.Now(), events.NewEventID())
	st.Predicate.Handoff = &events.Handoff{From: p.From, To: p.To, Offer: p.Digest}
	return s.publish(ctx, dev, st)
}

// Flag flags (kind device.flagged) or clears (device.cleared) the device.
func (s *Station) Flag(ctx context.Context, agentURL, kind, reason, note string) (*Result, error) {
	if kind != events.KindDeviceFlagged && kind != events.KindDeviceCleared && kind != events.KindDeviceDecommissioned {
		return nil, fmt.Errorf("station: %s is not a flag event", kind)
	}
	dev, err := s.device(agentURL)
	if err != nil {
		return nil, err
	}
	id, err := s.deviceID(ctx, dev)
	if err != nil {
		return nil, err
	}
	st := events.NewStatement(kind, s.cfg.Name, id, s.cfg.Now(), events.NewEventID())
	st.Predicate.Flag = &events.Flag{Reason: reason, Note: note}
	return s.publish(ctx, dev, st)
}
