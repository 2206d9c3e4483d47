package tpm

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/tcp"
)

// TPM is an open TPM 2.0. It is safe for concurrent use: every method holds
// an internal mutex for the whole TPM conversation it needs, so a quote and
// the PCR read that accompanies it see the same TPM state.
//
// A TPM keeps the keys it creates loaded (EK, IAK, SRK, LDevID). TPMs hold
// only a few transient objects at once (three on the reference simulator),
// so the least recently used key is swapped out with TPM2_ContextSave and
// back in with TPM2_ContextLoad, or re-created: primary keys (EK, IAK, SRK)
// are derived from the hierarchy seeds and come out identical.
type TPM struct {
	mu     sync.Mutex
	tp     transport.TPM
	closer func() error
	reboot func() error // nil: unsupported
	uri    string
	closed bool

	maxLoaded int
	tick      uint64
	objs      [numObjKinds]*object
	ldevid    *ldevidBlob
	ldevidGen uint64
}

// objKind names the keys a TPM keeps.
type objKind int

const (
	objEKRSA objKind = iota
	objEKECC
	objIAK
	objSRK
	objLDevID
	numObjKinds
)

func (k objKind) String() string {
	switch k {
	case objEKRSA:
		return "RSA EK"
	case objEKECC:
		return "ECC EK"
	case objIAK:
		return "IAK"
	case objSRK:
		return "SRK"
	case objLDevID:
		return "LDevID"
	}
	return "object " + strconv.Itoa(int(k))
}

// object is a key the TPM struct manages.
type object struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte // marshalled TPMT_PUBLIC
	loaded bool
	saved  *tpm2.TPMSContext
	used   uint64
}

// ldevidBlob is the wrapped LDevID key, loadable under the SRK.
type ldevidBlob struct {
	private tpm2.TPM2BPrivate
	public  tpm2.TPM2BPublic
}

// Open opens a TPM.
//
//   - "sim": the in-process reference simulator (go-tpm-tools), freshly
//     manufactured with random seeds. One simulator exists per process: a
//     second Open("sim") blocks until the first is closed.
//   - "sim:seed=N": the simulator with hierarchy seeds derived from N
//     (simulator.GetWithFixedSeedInsecure; insecure, for tests): the EK and
//     IAK are the same on every run, and stay so across Reboot.
//   - "swtpm://HOST:PORT": a swtpm server channel (swtpm socket --tpm2
//     --server type=tcp,port=PORT), which carries raw TPM commands.
//     Start swtpm with --flags startup-clear, or let Open send
//     TPM2_Startup.
//   - "mssim://HOST:PORT": a TPM speaking the TCG reference simulator TCP
//     protocol (command port PORT, platform port PORT+1), through go-tpm's
//     tpm2/transport/tcp.
//   - an absolute path such as "/dev/tpmrm0": a Linux TPM character device.
func Open(uri string) (*TPM, error) {
	t := &TPM{uri: uri}
	switch {
	case uri == "sim" || strings.HasPrefix(uri, "sim:"):
		var (
			sim    *simulator.Simulator
			err    error
			seeded bool
			seed   int64
		)
		if uri == "sim" {
			sim, err = simulator.Get()
		} else {
			arg := strings.TrimPrefix(uri, "sim:")
			v, ok := strings.CutPrefix(arg, "seed=")
			if !ok {
				return nil, fmt.Errorf("attest: open %q: want sim or sim:seed=N", uri)
			}
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil {
				return nil, fmt.Errorf("attest: open %q: bad seed: %w", uri, perr)
			}
			seeded, seed = true, n
			sim, err = simulator.GetWithFixedSeedInsecure(seed)
		}
		if err != nil {
			return nil, fmt.Errorf("attest: open simulator: %w", err)
		}
		t.tp = transport.FromReadWriter(sim)
		t.closer = sim.Close
		t.reboot = func() error {
			if err := sim.Reset(); err != nil {
				return err
			}
			if seeded {
				// See simSetSeeds: the reset brought back the random
				// manufacture seeds.
				reapplySeed(seed)
			}
			return nil
		}
	case strings.HasPrefix(uri, "swtpm://"):
		addr := strings.TrimPrefix(uri, "swtpm://")
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("attest: open %q: %w", uri, err)
		}
		rt := &rawTCP{conn: conn}
		t.tp = rt
		t.closer = conn.Close
		if err := startup(t.tp); err != nil {
			conn.Close()
			return nil, fmt.Errorf("attest: open %q: %w", uri, err)
		}
	case strings.HasPrefix(uri, "mssim://"):
		addr := strings.TrimPrefix(uri, "mssim://")
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("attest: open %q: %w", uri, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("attest: open %q: bad port: %w", uri, err)
		}
		mt, err := tcp.Open(tcp.Config{
			CommandAddress:  net.JoinHostPort(host, port),
			PlatformAddress: net.JoinHostPort(host, strconv.Itoa(p+1)),
		})
		if err != nil {
			return nil, fmt.Errorf("attest: open %q: %w", uri, err)
		}
		if err := mt.PowerOn(); err != nil {
			mt.Close()
			return nil, fmt.Errorf("attest: open %q: power on: %w", uri, err)
		}
		if err := startup(mt); err != nil {
			mt.Close()
			return nil, fmt.Errorf("attest: open %q: %w", uri, err)
		}
		t.tp = mt
		t.closer = mt.Close
		t.reboot = func() error {
			// A TPM Reset: orderly shutdown, power cycle, Startup(CLEAR).
			_, _ = tpm2.Shutdown{ShutdownType: tpm2.TPMSUClear}.Execute(mt)
			if err := mt.PowerOff(); err != nil {
				return err
			}
			if err := mt.PowerOn(); err != nil {
				return err
			}
			return startup(mt)
		}
	case strings.HasPrefix(uri, "/"):
		lt, err := linuxtpm.Open(uri)
		if err != nil {
			return nil, fmt.Errorf("attest: open %q: %w", uri, err)
		}
		t.tp = lt
		t.closer = lt.Close
	default:
		return nil, fmt.Errorf("attest: open %q: unknown TPM address (want sim, sim:seed=N, swtpm://HOST:PORT, mssim://HOST:PORT or a device path)", uri)
	}
	t.tp = retrying{inner: t.tp}
	t.maxLoaded = maxTransientObjects(t.tp)
	return t, nil
}

// startup sends TPM2_Startup(CLEAR); a TPM that is already started is fine.
func startup(tp transport.TPM) error {
	_, err := tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(tp)
	if err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		return fmt.Errorf("TPM2_Startup: %w", err)
	}
	return nil
}

// maxTransientObjects asks the TPM how many transient objects it can hold.
func maxTransientObjects(tp transport.TPM) int {
	const fallback = 3
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTHRTransientMin),
		PropertyCount: 1,
	}.Execute(tp)
	if err != nil {
		return fallback
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return fallback
	}
	for _, p := range props.TPMProperty {
		if p.Property == tpm2.TPMPTHRTransientMin && p.Value >= 2 {
			return int(p.Value)
		}
	}
	return fallback
}

// Close flushes the keys the TPM struct loaded and closes the transport.
// For the simulator this also releases it for the next Open("sim").
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	for _, o := range t.objs {
		if o != nil && o.loaded {
			_, _ = tpm2.FlushContext{FlushHandle: o.handle}.Execute(t.tp)
			o.loaded = false
		}
	}
	t.closed = true
	return t.closer()
}

// Reboot resets the TPM as a power cycle of the host would (a TPM Reset:
// PCRs are cleared, resetCount increases, transient objects are gone).
// Keys are re-created or re-loaded on next use and keep their names; the
// LDevID survives (its wrapped blob is kept). Supported for the simulator
// and mssim://; other transports return an error wrapping ErrUnsupported.
func (t *TPM) Reboot() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if t.reboot == nil {
		return fmt.Errorf("%w: reboot of %q (only the simulator and mssim:// can be reset by software)", ErrUnsupported, t.uri)
	}
	if err := t.reboot(); err != nil {
		return fmt.Errorf("attest: reboot: %w", err)
	}
	for _, o := range t.objs {
		if o != nil {
			o.loaded = false
			o.saved = nil
		}
	}
	return nil
}

// lock takes the mutex and checks that the TPM is open.
func (t *TPM) lock() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// ensure makes the given keys loaded at the same time and returns them in
// the same order. t.mu must be held.
func (t *TPM) ensure(kinds ...objKind) ([]*object, error) {
	var pinned [numObjKinds]bool
	for _, k := range kinds {
		pinned[k] = true
	}
	out := make([]*object, len(kinds))
	for i, k := range kinds {
		o, err := t.ensureOne(k, &pinned)
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	// A later ensureOne may not evict an earlier pinned one, but check.
	for i, o := range out {
		if !o.loaded {
			return nil, fmt.Errorf("attest: %v was evicted while in use", kinds[i])
		}
	}
	return out, nil
}

func (t *TPM) touch(o *object) {
	t.tick++
	o.used = t.tick
}

func (t *TPM) ensureOne(k objKind, pinned *[numObjKinds]bool) (*object, error) {
	o := t.objs[k]
	if o != nil && o.loaded {
		t.touch(o)
		return o, nil
	}
	if o != nil && o.saved != nil {
		if err := t.makeRoom(pinned); err != nil {
			return nil, err
		}
		rsp, err := tpm2.ContextLoad{Context: *o.saved}.Execute(t.tp)
		o.saved = nil
		if err == nil {
			o.handle = rsp.LoadedHandle
			o.loaded = true
			t.touch(o)
			return o, nil
		}
		// Fall through: re-create or re-load it.
	}
	var (
		handle tpm2.TPMHandle
		name   tpm2.TPM2BName
		public []byte
	)
	switch k {
	case objLDevID:
		if t.ldevid == nil {
			return nil, ErrNoLDevID
		}
		p2 := *pinned
		p2[objSRK] = true
		srk, err := t.ensureOne(objSRK, &p2)
		if err != nil {
			return nil, err
		}
		if err := t.makeRoom(&p2); err != nil {
			return nil, err
		}
		rsp, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
			InPrivate:    t.ldevid.private,
			InPublic:     t.ldevid.public,
		}.Execute(t.tp)
		if err != nil {
			return nil, fmt.Errorf("attest: load LDevID: %w", err)
		}
		handle, name, public = rsp.ObjectHandle, rsp.Name, t.ldevid.public.Bytes()
	default:
		hierarchy, tmpl, err := primaryTemplate(k)
		if err != nil {
			return nil, err
		}
		if err := t.makeRoom(pinned); err != nil {
			return nil, err
		}
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: hierarchy,
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(t.tp)
		if err != nil {
			return nil, fmt.Errorf("attest: create %v: %w", k, err)
		}
		handle, name, public = rsp.ObjectHandle, rsp.Name, rsp.OutPublic.Bytes()
	}
	if o == nil {
		o = &object{}
		t.objs[k] = o
	} else if len(o.public) > 0 && string(o.public) != string(public) {
		// A primary key that changes means the hierarchy seed changed
		// (TPM cleared): everything derived from it is void.
		_, _ = tpm2.FlushContext{FlushHandle: handle}.Execute(t.tp)
		return nil, fmt.Errorf("attest: %v changed since it was first created (TPM cleared?)", k)
	}
	o.handle, o.name, o.public = handle, name, append([]byte(nil), public...)
	o.loaded = true
	t.touch(o)
	return o, nil
}

// makeRoom evicts least recently used, unpinned keys until one more object
// fits in the TPM.
func (t *TPM) makeRoom(pinned *[numObjKinds]bool) error {
	for {
		n := 0
		var victim *object
		for k, o := range t.objs {
			if o == nil || !o.loaded {
				continue
			}
			n++
			if pinned[k] {
				continue
			}
			if victim == nil || o.used < victim.used {
				victim = o
			}
		}
		if n < t.maxLoaded {
			return nil
		}
		if victim == nil {
			return fmt.Errorf("attest: no free TPM object slot (%d in use, all needed)", n)
		}
		if rsp, err := (tpm2.ContextSave{SaveHandle: victim.handle}).Execute(t.tp); err == nil {
			ctx := rsp.Context
			victim.saved = &ctx
		}
		if _, err := (tpm2.FlushContext{FlushHandle: victim.handle}).Execute(t.tp); err != nil {
			return fmt.Errorf("attest: flush: %w", err)
		}
		victim.loaded = false
	}
}

// forget unloads and forgets a key. t.mu must be held.
func (t *TPM) forget(k objKind) {
	o := t.objs[k]
	if o == nil {
		return
	}
	if o.loaded {
		_, _ = tpm2.FlushContext{FlushHandle: o.handle}.Execute(t.tp)
	}
	t.objs[k] = nil
}

// authHandle returns a password-authorised handle for a loaded key.
func (o *object) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: o.handle, Name: o.name, Auth: tpm2.PasswordAuth(nil)}
}

// namedHandle returns the named handle of a loaded key.
func (o *object) namedHandle() tpm2.NamedHandle {
	return tpm2.NamedHandle{Handle: o.handle, Name: o.name}
}
