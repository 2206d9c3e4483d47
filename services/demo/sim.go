package demo

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// Fault kinds the simulator injects: attacks a supply chain sees.
const (
	FaultDoubleHandoff   = "double-handoff"     // EMS offers the device to two operators
	FaultReplayedQuote   = "replayed-quote"     // a logged event's quote reused in a new event
	FaultSwappedTPM      = "swapped-tpm"        // an event about this device quoted by another TPM
	FaultGreyMarket      = "grey-market"        // hand-off to an unregistered party
	FaultTamperedPCRs    = "tampered-pcrs"      // firmware record with PCRs the TPM did not quote
	FaultRevokedPartner  = "revoked-partner"    // an event by a revoked partner
	FaultForgedSignature = "forged-signature"   // an event signed by someone else's key
	FaultMalformed       = "malformed"          // not a custody envelope
	FaultOversized       = "oversized"          // larger than the stream accepts
	FaultReflashed       = "reflashed-firmware" // firmware changed after the EMS recorded it
	FaultDoubleSold      = "double-sold-pallet" // the ODM ships the pallet to the OEM and again to a grey operator
	FaultSlippedDevice   = "slipped-device"     // a device taken out of a shipment's manifest after it was signed
	FaultForeignDevice   = "foreign-device"     // a manifest listing a device the sender does not hold
)

// AllFaults lists every fault kind.
var AllFaults = []string{
	FaultDoubleHandoff, FaultReplayedQuote, FaultSwappedTPM, FaultGreyMarket, FaultTamperedPCRs,
	FaultRevokedPartner, FaultForgedSignature, FaultMalformed, FaultOversized, FaultReflashed,
	FaultDoubleSold, FaultSlippedDevice, FaultForeignDevice,
}

// lapsedPartner is an ODM the simulator registers and then revokes.
const lapsedPartner = "lapsed-odm"

// expectations: what the ledger (fault event) and the gate (first boot)
// must decide for each fault kind.
var expectations = map[string]struct {
	event string // status/code of the injected event
	boot  string // "enrolled" or the gate's rule
}{
	"":                   {"", "enrolled"},
	FaultDoubleHandoff:   {verdict(events.StatusEvidence, events.CodeEquivocation), events.RuleFlagged},
	FaultReplayedQuote:   {verdict(events.StatusRejected, events.CodeEvidence), "enrolled"},
	FaultSwappedTPM:      {verdict(events.StatusRejected, events.CodeEvidence), "enrolled"},
	FaultGreyMarket:      {verdict(events.StatusRejected, events.CodeRecipient), "enrolled"},
	FaultTamperedPCRs:    {verdict(events.StatusRejected, events.CodeEvidence), "enrolled"},
	FaultRevokedPartner:  {verdict(events.StatusRejected, events.CodePartnerRevoked), "enrolled"},
	FaultForgedSignature: {verdict(events.StatusRejected, events.CodeBadSignature), "enrolled"},
	FaultMalformed:       {verdict(events.StatusRejected, events.CodeMalformed), "enrolled"},
	FaultOversized:       {"refused/jetstream-max-size", "enrolled"},
	FaultReflashed:       {"", events.RulePCRPolicy},
	FaultDoubleSold:      {verdict(events.StatusEvidence, events.CodeEquivocation), events.RuleFlagged},
	FaultSlippedDevice:   {verdict(events.StatusRejected, events.CodeManifest), "enrolled"},
	FaultForeignDevice:   {verdict(events.StatusRejected, events.CodeNotCustodian), "enrolled"},
}

// verdict is how the simulator writes a ledger answer: status/code.
func verdict(status string, code events.Code) string { return status + "/" + string(code) }

// SimConfig configures the supply-chain simulator.
type SimConfig struct {
	Devices int
	// Faults to inject (AllFaults for "all"); Rate is the share of devices
	// that get one, assigned round-robin over Faults.
	Faults []string
	Rate   float64
	// Concurrency is how many devices move through the chain at once.
	Concurrency int
	// EventsOut, if set, receives every logged event as JSON lines
	// {"subject","envelope"}: fully signed and quoted, for load tests.
	EventsOut string
	Env
}

// SimDevice is one simulated device's outcome.
type SimDevice struct {
	Seed     int
	ID       string
	Fault    string
	Event    string // observed status/code of the fault event
	Boot     string // observed first-boot outcome
	Err      string // the run itself failed
	Mismatch string
}

// SimReport is the simulator's outcome.
type SimReport struct {
	Devices []*SimDevice
	Events  uint64 // log size at the end
	Elapsed time.Duration
}

// Mismatches counts devices whose observed decisions differ from the expected.
func (r *SimReport) Mismatches() int {
	n := 0
	for _, d := range r.Devices {
		if d.Mismatch != "" {
			n++
		}
	}
	return n
}

// Sim drives cfg.Devices devices through the whole chain, injecting faults.
func Sim(ctx context.Context, cfg SimConfig) (*SimReport, error) {
	if cfg.Devices <= 0 {
		return nil, errors.New("sim: --devices must be positive")
	}
	for _, f := range cfg.Faults {
		if _, ok := expectations[f]; !ok || f == "" {
			return nil, fmt.Errorf("sim: unknown fault %q (known: %s)", f, strings.Join(AllFaults, ", "))
		}
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 0.5
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	cleanup, err := cfg.prepare("custody-sim-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	partners := append(pki.DefaultPartners(), pki.PartnerSpec{Name: lapsedPartner, Role: events.RoleODM})
	n, stop, err := node.Start(ctx, node.Config{
		DataDir: filepath.Join(cfg.Dir, "node"), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0",
		Partners: partners, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = stop() }()
	s := &sim{ctx: ctx, n: n, cfg: cfg, agentBin: cfg.Agent, pubs: map[string]*events.Publisher{}}
	defer s.stop()
	if err := s.revokeLapsed(); err != nil {
		return nil, err
	}
	// A TPM that belongs to no device in the chain, for swapped-TPM events.
	donor, err := s.agent(900000)
	if err != nil {
		return nil, err
	}
	s.donor = device.NewClient(donor, s.agentClient(odm)) // the swapped TPM, quoted by the ODM
	// The donor is a device the vendor holds: the foreign device a
	// manifest lists (foreign-device).
	dr, err := n.Stations[vendor].Manufacture(ctx, donor)
	if err != nil {
		return nil, fmt.Errorf("sim: manufacturing the donor device: %w", err)
	}
	s.donorID = dr.Device

	faulty := int(float64(cfg.Devices)*cfg.Rate + 0.5)
	devs := make([]*SimDevice, cfg.Devices)
	for i := range devs {
		devs[i] = &SimDevice{Seed: 10000 + i}
		if len(cfg.Faults) > 0 && i < faulty {
			devs[i].Fault = cfg.Faults[i%len(cfg.Faults)]
		}
	}
	if len(cfg.Faults) == 0 {
		faulty = 0
	}
	fmt.Fprintf(cfg.Out, "simulating %d devices (%d with faults), %d at a time, node %s\n", cfg.Devices, min(faulty, cfg.Devices), cfg.Concurrency, n.URL())
	work := make(chan *SimDevice)
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				if err := s.run(d); err != nil {
					d.Err = err.Error()
				}
				s.judge(d)
			}
		}()
	}
	for _, d := range devs {
		work <- d
	}
	close(work)
	wg.Wait()
	rep := &SimReport{Devices: devs, Events: n.Ledger.Head().Size, Elapsed: time.Since(start)}
	if cfg.EventsOut != "" {
		if err := writeEvents(n, cfg.EventsOut); err != nil {
			return rep, err
		}
	}
	printSim(cfg.Out, rep)
	return rep, nil
}

type sim struct {
	ctx      context.Context
	n        *node.Node
	cfg      SimConfig
	agentBin string
	donor    *device.Client
	donorID  string

	mu      sync.Mutex
	agents  []*agentProc
	pubs    map[string]*events.Publisher
	clients map[string]*http.Client
}

// agentClient is partner's HTTP client of device agents (they answer only
// partners' certificates), one per partner so that its connections are
// kept.
func (s *sim) agentClient(partner string) *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients == nil {
		s.clients = map[string]*http.Client{}
	}
	hc, ok := s.clients[partner]
	if !ok {
		hc = s.n.HTTPClient(partner)
		s.clients[partner] = hc
	}
	return hc
}

func (s *sim) agent(seed int) (string, error) {
	a, err := startAgent(s.ctx, s.agentBin, filepath.Join(s.cfg.Dir, "devices"), s.n.PKI.Dir, seed)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.agents = append(s.agents, a)
	s.mu.Unlock()
	return a.url, nil
}

func (s *sim) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.agents {
		_ = a.cmd.Process.Signal(os.Interrupt)
	}
}

// publisher returns a publisher connected as partner (its own NATS user).
func (s *sim) publisher(partner string) (*events.Publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pubs[partner]; ok {
		return p, nil
	}
	nc, err := s.n.Connect(partner)
	if err != nil {
		return nil, err
	}
	rv, err := s.n.ReceiptVerifier(partner)
	if err != nil {
		return nil, err
	}
	p, err := events.NewPublisher(nc, partner, rv)
	if err != nil {
		return nil, err
	}
	s.pubs[partner] = p
	return p, nil
}

func (s *sim) revokeLapsed() error {
	p := s.n.PKI.Partners[lapsedPartner]
	st := events.NewPartnerStatement(events.KindPartnerRevoked, events.PartnerInfo{Name: p.Name, Role: p.Role}, strings.Repeat("0", 64), time.Now(), events.NewEventID())
	env, err := events.Sign(s.ctx, st, s.n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
	if err != nil {
		return err
	}
	r, err := s.send(events.ConsortiumPartner, env)
	if err != nil {
		return err
	}
	if r.Status != events.StatusAccepted {
		return fmt.Errorf("sim: revoking %s: %s: %s", lapsedPartner, r.Code, r.Reason)
	}
	return nil
}

func (s *sim) send(partner string, env []byte) (*events.Receipt, error) {
	pub, err := s.publisher(partner)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	return pub.Publish(ctx, env)
}

// op is one station call of the clean chain.
type op struct {
	what string
	fn   func() (*station.Result, error)
}

// runOps runs station calls that must all be accepted, returning the last
// receipt.
func runOps(ops ...op) (*events.Receipt, error) {
	var last *events.Receipt
	for _, o := range ops {
		res, err := o.fn()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.what, err)
		}
		last = res.Receipt
	}
	return last, nil
}

func observed(r *events.Receipt, err error) string {
	var rej *station.RejectedError
	if errors.As(err, &rej) {
		r = rej.Receipt
	} else if err != nil {
		return "error: " + err.Error()
	}
	if r == nil {
		return "no answer"
	}
	return verdict(r.Status, events.Code(r.Code))
}

// run moves one device through the chain, injecting its fault.
func (s *sim) run(d *SimDevice) error {
	url, err := s.agent(d.Seed)
	if err != nil {
		return err
	}
	ctx := s.ctx
	st := func(name string) *station.Station { return s.n.Stations[name] }
	// The device's own agent, called directly (not through a station) by
	// the partner that holds the device when the fault is injected.
	dev := func(partner string) *device.Client { return device.NewClient(url, s.agentClient(partner)) }
	r, err := runOps(op{"manufacture", func() (*station.Result, error) { return st(vendor).Manufacture(ctx, url) }})
	if err != nil {
		return err
	}
	d.ID = r.Target
	if d.Fault == FaultGreyMarket {
		_, err := st(vendor).Offer(ctx, url, "shadow-broker")
		d.Event = observed(nil, err)
	}
	assembly, err := runOps(
		op{"offer to odm", func() (*station.Result, error) { return st(vendor).Offer(ctx, url, odm) }},
		op{"odm accepts", func() (*station.Result, error) { return st(odm).Accept(ctx, url) }},
		op{"assembly", func() (*station.Result, error) { return st(odm).RecordStage(ctx, url, events.StageAssembly, "") }},
	)
	if err != nil {
		return err
	}
	switch d.Fault {
	case FaultReplayedQuote, FaultSwappedTPM, FaultForgedSignature, FaultMalformed, FaultOversized, FaultRevokedPartner:
		if d.Event, err = s.attack(d, dev(odm), assembly); err != nil {
			return err
		}
	}
	switch d.Fault {
	case FaultSlippedDevice, FaultForeignDevice:
		if d.Event, err = s.badManifest(d); err != nil {
			return err
		}
	}
	// ODM → OEM as a shipment (the device's pallet; boxed, no quote), OEM
	// → EMS as a single-device hand-off.
	pallet := &events.Manifest{Containers: []events.Container{{Path: fmt.Sprintf("P-%d/C-1", d.Seed), Devices: []string{d.ID}}}}
	shipped, err := runOps(op{"ship to oem", func() (*station.Result, error) {
		return st(odm).Ship(ctx, fmt.Sprintf("S-%d", d.Seed), oem, pallet)
	}})
	if err != nil {
		return err
	}
	if d.Fault == FaultDoubleSold {
		_, err := st(odm).EquivocateShipment(ctx, fmt.Sprintf("S-%d-again", d.Seed), grey, pallet)
		d.Event = observed(nil, err)
	}
	if _, err := runOps(
		op{"oem accepts the shipment", func() (*station.Result, error) { return st(oem).AcceptShipment(ctx, shipped.Digest, pallet) }},
		op{"offer to ems", func() (*station.Result, error) { return st(oem).Offer(ctx, url, ems) }},
		op{"ems accepts", func() (*station.Result, error) { return st(ems).Accept(ctx, url) }},
	); err != nil {
		return err
	}
	if d.Fault == FaultTamperedPCRs {
		if d.Event, err = s.tamperedPCRs(d, dev(ems)); err != nil {
			return err
		}
	}
	image := []byte(fmt.Sprintf("firmware 2.0.%d\n", d.Seed%7))
	if _, err := runOps(
		op{"firmware", func() (*station.Result, error) { return st(ems).ProgramFirmware(ctx, url, image) }},
		op{"test", func() (*station.Result, error) { return st(ems).RecordStage(ctx, url, events.StageTestPassed, "") }},
		op{"offer to operator", func() (*station.Result, error) { return st(ems).Offer(ctx, url, operator) }},
	); err != nil {
		return err
	}
	if d.Fault == FaultDoubleHandoff {
		_, err := st(ems).Equivocate(ctx, url, grey)
		d.Event = observed(nil, err)
	}
	if _, err := runOps(op{"operator accepts", func() (*station.Result, error) { return st(operator).Accept(ctx, url) }}); err != nil {
		return err
	}
	if d.Fault == FaultReflashed {
		if _, err := dev(operator).ProgramFirmware(ctx, []byte("unofficial firmware\n")); err != nil {
			return err
		}
	}
	fb, err := firstBoot(s.ctx, s.n, url)
	if err != nil {
		return err
	}
	if fb.Enrolled {
		d.Boot = "enrolled"
	} else {
		d.Boot = fb.Rule
	}
	return nil
}

// attack publishes one forged or replayed event about the device.
func (s *sim) attack(d *SimDevice, dev *device.Client, assembly *events.Receipt) (string, error) {
	ctx := s.ctx
	newStage := func(partner string) *events.Statement {
		st := events.NewStatement(events.KindStageRecorded, partner, d.ID, time.Now(), events.NewEventID())
		st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: "injected by the simulator"}
		return st
	}
	quote := func(c *device.Client, st *events.Statement) error {
		nonce, err := events.StatementBindingDigest(st)
		if err != nil {
			return err
		}
		q, err := c.Quote(ctx, nonce, []int{0})
		if err != nil {
			return err
		}
		st.Predicate.Evidence = events.NewEvidence(q)
		return nil
	}
	sign := func(st *events.Statement, signer string) ([]byte, error) {
		return events.Sign(ctx, st, s.n.PKI.Partners[signer].Key, st.Predicate.Partner)
	}
	var env []byte
	partner := odm
	switch d.Fault {
	case FaultReplayedQuote:
		old, err := s.n.Ledger.Store().Entry(assembly.LogIndex)
		if err != nil {
			return "", err
		}
		prev, err := events.Open(old.Envelope)
		if err != nil {
			return "", err
		}
		st := newStage(odm)
		st.Predicate.Evidence = prev.Statement.Predicate.Evidence
		if env, err = sign(st, odm); err != nil {
			return "", err
		}
	case FaultSwappedTPM:
		st := newStage(odm)
		if err := quote(s.donor, st); err != nil {
			return "", err
		}
		var err error
		if env, err = sign(st, odm); err != nil {
			return "", err
		}
	case FaultForgedSignature:
		st := newStage(odm)
		if err := quote(dev, st); err != nil {
			return "", err
		}
		var err error
		if env, err = sign(st, grey); err != nil {
			return "", err
		}
	case FaultRevokedPartner:
		partner = lapsedPartner
		st := newStage(lapsedPartner)
		if err := quote(dev, st); err != nil {
			return "", err
		}
		var err error
		if env, err = sign(st, lapsedPartner); err != nil {
			return "", err
		}
	case FaultMalformed, FaultOversized:
		return s.raw(d)
	}
	r, err := s.send(partner, env)
	return observed(r, err), nil
}

// raw publishes bytes that are not a custody envelope on the ODM's subject
// and waits for the ledger's (or JetStream's) answer.
func (s *sim) raw(d *SimDevice) (string, error) {
	data := []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"bm90IGpzb24=","signatures":[]}`)
	if d.Fault == FaultOversized {
		data = make([]byte, events.MaxMessageSize+1024)
		_, _ = rand.Read(data)
	}
	return s.publishRaw(events.EventSubject(odm, d.ID), data, events.RawDigest(data))
}

// publishRaw publishes data on an ODM subject as the ODM, without the
// publisher's checks, and waits for the ledger's rejection of digest (or
// JetStream's refusal).
func (s *sim) publishRaw(subject string, data []byte, digest string) (string, error) {
	nc, err := s.n.Connect(odm)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	answers := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe(events.RejectionSubject(odm, digest), answers)
	if err != nil {
		return "", err
	}
	defer sub.Unsubscribe()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	if _, err := js.Publish(ctx, subject, data); err != nil {
		if errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
			return "refused/jetstream-max-size", nil
		}
		return "error: " + err.Error(), nil
	}
	select {
	case m := <-answers:
		var r events.Receipt
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return "", err
		}
		return verdict(r.Status, events.Code(r.Code)), nil
	case <-ctx.Done():
		return "no answer", nil
	}
}

// badManifest has the ODM (holding the device) publish a shipment whose
// manifest is not what it may ship: the signed manifest with a device
// taken out of the parcel (slipped-device), or a manifest listing the
// donor device, which the vendor holds (foreign-device).
func (s *sim) badManifest(d *SimDevice) (string, error) {
	signed := &events.Manifest{Containers: []events.Container{{Path: "P-X/C-1", Devices: []string{d.ID, s.donorID}}}}
	sent := signed
	if d.Fault == FaultSlippedDevice {
		sent = &events.Manifest{Containers: []events.Container{{Path: "P-X/C-1", Devices: []string{d.ID}}}}
	}
	st, err := events.NewShipmentStatement(events.KindShipmentOffered, odm, events.Shipment{ID: fmt.Sprintf("X-%d", d.Seed), From: odm, To: oem}, signed, time.Now(), events.NewEventID())
	if err != nil {
		return "", err
	}
	env, err := events.Sign(s.ctx, st, s.n.PKI.Partners[odm].Key, odm)
	if err != nil {
		return "", err
	}
	parcel, err := events.EncodeParcel(env, sent)
	if err != nil {
		return "", err
	}
	if d.Fault == FaultForeignDevice {
		r, err := s.send(odm, parcel)
		return observed(r, err), nil
	}
	// The publisher refuses to send a parcel whose manifest is not the
	// one signed; an attacker sends it past that check.
	return s.rawParcel(parcel)
}

// rawParcel publishes a parcel on the ODM's subject without the
// publisher's checks and waits for the ledger's answer.
func (s *sim) rawParcel(parcel []byte) (string, error) {
	signed, _ := events.OpenMessage(parcel)
	if signed == nil {
		return "", errors.New("sim: not a parcel")
	}
	return s.publishRaw(events.EventSubject(odm, signed.Statement.Target()), parcel, signed.DigestHex())
}

// tamperedPCRs has the EMS record firmware with PCR values the TPM did not
// quote.
func (s *sim) tamperedPCRs(d *SimDevice, dev *device.Client) (string, error) {
	st := events.NewStatement(events.KindStageRecorded, ems, d.ID, time.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageFirmwareProgrammed,
		FirmwareDigest: strings.Repeat("ab", 32), PCRs: map[string]string{"0": strings.Repeat("cd", 32)}}
	nonce, err := events.StatementBindingDigest(st)
	if err != nil {
		return "", err
	}
	q, err := dev.Quote(s.ctx, nonce, []int{0})
	if err != nil {
		return "", err
	}
	st.Predicate.Evidence = events.NewEvidence(q)
	env, err := events.Sign(s.ctx, st, s.n.PKI.Partners[ems].Key, ems)
	if err != nil {
		return "", err
	}
	r, err := s.send(ems, env)
	return observed(r, err), nil
}

// judge compares a device's observed decisions with the expected ones.
func (s *sim) judge(d *SimDevice) {
	want := expectations[d.Fault]
	switch {
	case d.Err != "":
		d.Mismatch = "run failed: " + d.Err
	case d.Event != want.event:
		d.Mismatch = fmt.Sprintf("fault event: want %s, observed %s", want.event, d.Event)
	case d.Boot != want.boot:
		d.Mismatch = fmt.Sprintf("first boot: want %s, observed %s", want.boot, d.Boot)
	}
}

func printSim(out io.Writer, rep *SimReport) {
	type row struct {
		devices, ok int
		observed    map[string]int
	}
	rows := map[string]*row{}
	for _, d := range rep.Devices {
		r := rows[d.Fault]
		if r == nil {
			r = &row{observed: map[string]int{}}
			rows[d.Fault] = r
		}
		r.devices++
		if d.Mismatch == "" {
			r.ok++
		}
		ev := d.Event
		if ev == "" {
			ev = "all accepted"
		}
		if d.Err != "" {
			ev, d.Boot = "run failed", ""
		}
		r.observed[ev+" → "+d.Boot]++
	}
	kinds := make([]string, 0, len(rows))
	for k := range rows {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nFAULT\tDEVICES\tEXPECTED (event → first boot)\tOBSERVED\tOK\n")
	for _, k := range kinds {
		r, want := rows[k], expectations[k]
		name := k
		if name == "" {
			name = "none (clean)"
		}
		exp := want.event
		if exp == "" {
			exp = "all accepted"
		}
		var obs []string
		for o, c := range r.observed {
			obs = append(obs, fmt.Sprintf("%s ×%d", o, c))
		}
		sort.Strings(obs)
		mark := "✓"
		if r.ok != r.devices {
			mark = "✗"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s → %s\t%s\t%s %d/%d\n", name, r.devices, exp, want.boot, strings.Join(obs, "; "), mark, r.ok, r.devices)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "\n%d devices, %d log entries in %.1fs; %d mismatches\n", len(rep.Devices), rep.Events, rep.Elapsed.Seconds(), rep.Mismatches())
	for _, d := range rep.Devices {
		if d.Mismatch != "" {
			fmt.Fprintf(out, "  MISMATCH device seed %d (%s) %s: %s\n", d.Seed, d.Fault, d.ID, d.Mismatch)
		}
	}
}

// writeEvents writes every logged event as a JSON line {subject, envelope}.
func writeEvents(n *node.Node, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	head := n.Ledger.Head()
	enc := json.NewEncoder(w)
	for i := uint64(0); i < head.Size; i++ {
		e, err := n.Ledger.Store().Entry(i)
		if err != nil {
			f.Close()
			return err
		}
		line := struct {
			Subject  string          `json:"subject"`
			Envelope json.RawMessage `json:"envelope"`
		}{events.EventSubject(e.Partner, e.Target), e.Envelope}
		if err := enc.Encode(line); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
