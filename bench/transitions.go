package main

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/station"
)

// Device transitions: a realistic mixed lifecycle, measured end to end
// through the ledger. Each device has its own simulated TPM (its own EK
// and IAK: the in-process simulator, opened once per device with its own
// seed, one at a time, as a device is powered at the factory):
//
//  1. tpm.manufactured by the vendor, with the device's quote;
//  2. shipped in pallets of PalletMin–PalletMax devices (cartons of 50)
//     vendor → ODM → OEM → EMS: one signed shipment.offered and one
//     shipment.accepted per pallet and hop;
//  3. firmware-programmed at the EMS, with the device's quote over the
//     statement (the PCRs the gate will expect);
//  4. shipped EMS → operator the same way;
//  5. at the operator's receiving inspection, one sampled device per
//     carton quoted (receiving-inspection: the quote must show the PCRs
//     recorded at programming).
//
// Every event is pre-generated (the quotes are taken while each device's
// TPM is open, in the device's order, so its counters only go forward),
// then published in lifecycle order on one connection and ingested with
// every check the quote policy requires. The rate counts device
// transitions: a device moved by a shipment event is one transition; a
// quoted single-device event is one. First boot is the gate's (measured
// as gate_decisions_per_s). The run fails if the ledger refuses anything
// or a device does not end with the operator.

// TransitionsConfig sizes the run.
type TransitionsConfig struct {
	Devices   int
	PalletMin int
	PalletMax int
	Carton    int
	// CPUProfile, if set, receives a CPU profile of the timed phase.
	CPUProfile string
}

// TransitionsResult is what the run measured.
type TransitionsResult struct {
	Devices         int     `json:"devices"`
	Pallets         int     `json:"pallets"`
	Events          int     `json:"events"`
	QuotedEvents    int     `json:"quotedEvents"`
	Transitions     int     `json:"transitions"`
	Seconds         float64 `json:"seconds"`
	TransitionsPerS float64 `json:"device_transitions_per_s"`
	EventsPerS      float64 `json:"eventsPerS"`
	CPUMicrosPerTr  float64 `json:"cpuMicrosPerTransition"`
	GenerateSeconds float64 `json:"generateSeconds"`
	Method          string  `json:"method"`
	MessageMaxBytes int     `json:"messageMaxBytes"`
}

type benchMsg struct {
	subject string
	data    []byte
	id      string
}

// captureTransport is a station's Transport that keeps the signed events
// instead of publishing them: the bench publishes them later, all at once.
type captureTransport struct{ envs [][]byte }

func (c *captureTransport) Publish(_ context.Context, env []byte) (*events.Receipt, error) {
	c.envs = append(c.envs, env)
	s, err := events.OpenMessage(env)
	if err != nil {
		return nil, err
	}
	return &events.Receipt{Digest: s.DigestHex(), Status: events.StatusAccepted, Target: s.Statement.Target()}, nil
}

func (c *captureTransport) Resend(context.Context, ...string) (map[string]*events.Receipt, error) {
	return nil, nil
}

func (c *captureTransport) take() []byte {
	e := c.envs[len(c.envs)-1]
	c.envs = c.envs[:len(c.envs)-1]
	return e
}

// powered serves the factory API of a device on the in-process simulated
// TPM of seed (one at a time, as a device is powered at the factory), its
// state in dir, while fn runs with the API's URL.
func powered(seed int, dir string, fn func(url string) error) error {
	tp, err := tpm.Open(fmt.Sprintf("sim:seed=%d", seed))
	if err != nil {
		return err
	}
	defer tp.Close()
	dv, err := device.New(device.Config{TPM: tp, StateDir: dir})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(dv.Handler())
	defer srv.Close()
	return fn(srv.URL)
}

// captureStation is partner's station on n, its events captured instead of
// published (captureTransport).
func captureStation(n *node.Node, partner string) (*station.Station, *captureTransport, error) {
	tr := &captureTransport{}
	p := n.PKI.Partners[partner]
	sc := station.Config{
		Name: partner, Role: p.Role, Key: p.Key, Ledger: n.Ledger.Store(), Transport: tr,
		TPMInfo: node.DefaultTPMInfo,
	}
	if p.Role == events.RoleTPMVendor {
		sc.ManufacturingCA = n.PKI.VendorMfgCA
	}
	st, err := station.New(sc)
	return st, tr, err
}

// measureTransitions runs the lifecycle on a running node.
func measureTransitions(ctx context.Context, n *node.Node, dir string, cfg TransitionsConfig) (*TransitionsResult, error) {
	if cfg.Carton <= 0 {
		cfg.Carton = 50
	}
	res := &TransitionsResult{Devices: cfg.Devices}
	capture := func(partner string) (*station.Station, *captureTransport, error) { return captureStation(n, partner) }
	vendor, vtr, err := capture("acme-tpm")
	if err != nil {
		return nil, err
	}
	ems, etr, err := capture("delta-ems")
	if err != nil {
		return nil, err
	}
	operator, otr, err := capture("blue-operator")
	if err != nil {
		return nil, err
	}

	// Devices, one TPM each, grouped in pallets as they leave the vendor.
	t0 := time.Now()
	rng := mrand.New(mrand.NewPCG(1, 2))
	type dev struct {
		id                   string
		mfg, prog, inspected []byte
	}
	var devs []*dev
	var pallets [][]*dev
	for len(devs) < cfg.Devices {
		size := cfg.PalletMin + rng.IntN(cfg.PalletMax-cfg.PalletMin+1)
		size = min(size, cfg.Devices-len(devs))
		var pallet []*dev
		for i := range size {
			d := &dev{}
			if err := powered(300000+len(devs), filepath.Join(dir, "transitions", fmt.Sprint(len(devs))), func(url string) error {
				r, err := vendor.Manufacture(ctx, url)
				if err != nil {
					return fmt.Errorf("manufacture: %w", err)
				}
				d.id, d.mfg = r.Device, vtr.take()
				if _, err := ems.ProgramFirmware(ctx, url, []byte("bench firmware 2.0\n")); err != nil {
					return fmt.Errorf("programming: %w", err)
				}
				d.prog = etr.take()
				if i%cfg.Carton == 0 { // the carton's sampled device
					if _, err := operator.RecordStage(ctx, url, events.StageReceivingInspection, "sample"); err != nil {
						return fmt.Errorf("inspection: %w", err)
					}
					d.inspected = otr.take()
				}
				return nil
			}); err != nil {
				return nil, fmt.Errorf("device %d: %w", len(devs), err)
			}
			devs = append(devs, d)
			pallet = append(pallet, d)
		}
		pallets = append(pallets, pallet)
	}
	res.Pallets = len(pallets)

	var msgs []benchMsg
	add := func(data []byte, transitions int) error {
		s, err := events.OpenMessage(data)
		if err != nil {
			return err
		}
		msgs = append(msgs, benchMsg{events.EventSubject(s.Statement.Predicate.Partner, s.Statement.Target()), data, s.DigestHex()})
		res.Transitions += transitions
		res.MessageMaxBytes = max(res.MessageMaxBytes, len(data))
		if s.Statement.Predicate.Evidence != nil {
			res.QuotedEvents++
		}
		return nil
	}
	manifest := func(p []*dev, k int) *events.Manifest {
		m := &events.Manifest{}
		for c := 0; c*cfg.Carton < len(p); c++ {
			ct := events.Container{Path: fmt.Sprintf("P-%d/C-%d", k, c)}
			for _, d := range p[c*cfg.Carton : min(len(p), (c+1)*cfg.Carton)] {
				ct.Devices = append(ct.Devices, d.id)
			}
			m.Containers = append(m.Containers, ct)
		}
		return m
	}
	hop := func(from, to string) error {
		for k, p := range pallets {
			m := manifest(p, k)
			id := fmt.Sprintf("%s-%s-%d", from, to, k)
			offer, err := signShipment(ctx, n, events.KindShipmentOffered, from, events.Shipment{ID: id, From: from, To: to}, m)
			if err != nil {
				return err
			}
			accept, err := signShipment(ctx, n, events.KindShipmentAccepted, to, events.Shipment{ID: id, From: from, To: to, Offer: offer.DigestHex()}, m)
			if err != nil {
				return err
			}
			if err := add(offer.Wire(), len(p)); err != nil {
				return err
			}
			if err := add(accept.Wire(), len(p)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range devs {
		if err := add(d.mfg, 1); err != nil {
			return nil, err
		}
	}
	for _, h := range [][2]string{{"acme-tpm", "orbit-odm"}, {"orbit-odm", "nova-oem"}, {"nova-oem", "delta-ems"}} {
		if err := hop(h[0], h[1]); err != nil {
			return nil, err
		}
	}
	for _, d := range devs {
		if err := add(d.prog, 1); err != nil {
			return nil, err
		}
	}
	if err := hop("delta-ems", "blue-operator"); err != nil {
		return nil, err
	}
	for _, d := range devs {
		if d.inspected != nil {
			if err := add(d.inspected, 1); err != nil {
				return nil, err
			}
		}
	}
	res.Events = len(msgs)
	res.GenerateSeconds = time.Since(t0).Seconds()
	logf("transitions: %d devices in %d pallets, %d events (%d quoted), %d transitions, generated in %.1fs", len(devs), len(pallets), len(msgs), res.QuotedEvents, res.Transitions, res.GenerateSeconds)

	lnc, err := n.Connect(node.LedgerUser) // one connection: the stream keeps its order
	if err != nil {
		return nil, err
	}
	defer lnc.Close()
	js, err := jetstream.New(lnc)
	if err != nil {
		return nil, err
	}
	start := n.Ledger.Head()
	want := start.Size + uint64(len(msgs))
	dur, cpu, err := ingestPhase(ctx, n, js, msgs, uint64(len(msgs)), cfg.CPUProfile)
	if err != nil {
		return nil, fmt.Errorf("transitions: %w", err)
	}
	res.Seconds = dur.Seconds()
	res.TransitionsPerS = float64(res.Transitions) / dur.Seconds()
	res.EventsPerS = float64(len(msgs)) / dur.Seconds()
	res.CPUMicrosPerTr = float64(cpu.Microseconds()) / float64(res.Transitions)
	// Every event logged as accepted, every device with the operator.
	for i := start.Size; i < want; i++ {
		e, err := n.Ledger.Store().Entry(i)
		if err != nil {
			return nil, err
		}
		if e.Status != events.StatusAccepted {
			return nil, fmt.Errorf("transitions: entry %d (%s) is %s: %s %s", i, e.Kind, e.Status, e.Code, e.Reason)
		}
	}
	for _, d := range devs {
		s, err := n.Ledger.Store().Device(d.id)
		if err != nil {
			return nil, err
		}
		if s.Custodian != "blue-operator" || s.Flag != nil || s.ExpectedPCRs == nil {
			return nil, fmt.Errorf("transitions: device %s ended with %s (flag %v)", d.id, s.Custodian, s.Flag)
		}
	}
	res.Method = fmt.Sprintf("%d devices, each its own simulated TPM; pallets of %d-%d in cartons of %d: manufacture (quoted), 3 hops of shipment offer+accept, firmware-programmed (quoted), a hop to the operator, one receiving-inspection quote per carton; pre-generated, published async on one connection, every event verified and applied; transitions = devices moved or quoted", len(devs), cfg.PalletMin, cfg.PalletMax, cfg.Carton)
	logf("device transitions: %.0f/s (%d in %.2fs, %.0f events/s, %.1f µs CPU per transition)", res.TransitionsPerS, res.Transitions, res.Seconds, res.EventsPerS, res.CPUMicrosPerTr)
	return res, nil
}

// signShipment signs a shipment event as partner with its consortium key.
func signShipment(ctx context.Context, n *node.Node, kind, partner string, sh events.Shipment, m *events.Manifest) (*events.Signed, error) {
	st, err := events.NewShipmentStatement(kind, partner, sh, m, time.Now(), events.NewEventID())
	if err != nil {
		return nil, err
	}
	return events.SignShipment(ctx, st, m, n.PKI.Partners[partner].Key, partner)
}

// transitionsOnly starts a node and measures device transitions alone
// (go run ./bench --only-transitions N), writing the results to the file
// named by CUSTODY_BENCH_SHIPMENTS_OUT (the summary's shipments.json),
// else to transitions.json in out.
func transitionsOnly(devices int, out, cpuProfile string) error {
	name := os.Getenv("CUSTODY_BENCH_SHIPMENTS_OUT")
	if name == "" {
		name = filepath.Join(out, "transitions.json")
	}
	return onFreshNode(name, func(ctx context.Context, n *node.Node, dir string) (any, error) {
		return measureTransitions(ctx, n, dir, TransitionsConfig{Devices: devices, PalletMin: 100, PalletMax: 1000, CPUProfile: cpuProfile})
	})
}

// onFreshNode starts a node in a temporary folder, runs measure on it and
// writes what it returns, as JSON, to the file name.
func onFreshNode(name string, measure func(ctx context.Context, n *node.Node, dir string) (any, error)) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "custody-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	n, stop, err := startBenchNode(ctx, dir)
	if err != nil {
		return err
	}
	defer stop()
	res, err := measure(ctx, n, dir)
	if err != nil {
		return err
	}
	return writeResult(name, res)
}

// writeResult writes a phase's result as indented JSON to name, making
// its directory.
func writeResult(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	logf("wrote %s", name)
	return os.WriteFile(name, append(b, '\n'), 0o644)
}
