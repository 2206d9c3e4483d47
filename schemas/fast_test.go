package schemas_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/schemas"
)

// fastKinds are the kinds whose schemas the fast validator compiles today;
// a kind added later may use keywords it does not implement (then the
// general validator alone checks it, correctly but slower).
var fastKinds = []string{
	events.KindTPMManufactured, events.KindStageRecorded, events.KindHandoffOffered, events.KindHandoffAccepted,
	events.KindHandoffWithdrawn, events.KindDeviceFlagged, events.KindDeviceCleared, events.KindDeviceEnrolled,
	events.KindDeviceDecommissioned, events.KindPartnerRegistered, events.KindPartnerRevoked, events.KindEnrollmentRefused,
}

func TestFastValidatorCompiles(t *testing.T) {
	for _, k := range fastKinds {
		if ok, err := schemas.FastValidator(k); !ok {
			t.Errorf("%s: no fast validator: %v", k, err)
		}
	}
}

// sampleStatements returns a valid statement of every kind, decoded as
// Decode does.
func sampleStatements(t testing.TB) map[string]any {
	dev := strings.Repeat("ab", 32)
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ev := &events.Evidence{Attest: make([]byte, 145), Signature: make([]byte, 72), PCRs: map[string][]byte{"0": make([]byte, 32), "7": make([]byte, 32)}}
	var sts []*events.Statement
	add := func(kind string, fill func(p *events.Predicate)) {
		st := events.NewStatement(kind, "delta-ems", dev, now, strings.Repeat("0f", 16))
		st.Predicate.Evidence = ev
		fill(&st.Predicate)
		sts = append(sts, st)
	}
	add(events.KindTPMManufactured, func(p *events.Predicate) {
		p.Manufactured = &events.Manufactured{EKCertificate: []byte("ek cert"), EKPublic: []byte("ek"), IAKPublic: []byte("iak"), IAKCertificate: []byte("iak cert"),
			TPM: attest.TPMInfo{Manufacturer: "id:49465800", Model: "SLB9670", Version: "id:00070055"}}
	})
	add(events.KindStageRecorded, func(p *events.Predicate) {
		p.Stage = &events.Stage{Name: events.StageFirmwareProgrammed, FirmwareDigest: dev, PCRs: map[string]string{"0": dev}, Note: "line 4"}
	})
	add(events.KindHandoffOffered, func(p *events.Predicate) { p.Handoff = &events.Handoff{From: "delta-ems", To: "blue-operator"} })
	add(events.KindHandoffAccepted, func(p *events.Predicate) {
		p.Handoff = &events.Handoff{From: "delta-ems", To: "blue-operator", Offer: dev}
	})
	add(events.KindHandoffWithdrawn, func(p *events.Predicate) {
		p.Handoff = &events.Handoff{From: "delta-ems", To: "blue-operator", Offer: dev}
	})
	add(events.KindDeviceFlagged, func(p *events.Predicate) { p.Flag = &events.Flag{Reason: events.FlagStolen, Note: "truck"} })
	add(events.KindDeviceCleared, func(p *events.Predicate) { p.Flag = &events.Flag{Reason: "cleared"} })
	add(events.KindDeviceDecommissioned, func(p *events.Predicate) { p.Flag = &events.Flag{Reason: "end-of-life"} })
	add(events.KindDeviceEnrolled, func(p *events.Predicate) {
		p.Enrolled = &events.Enrolled{Operator: "blue-operator", RegistrationID: dev, IDScope: "0ne00000001", Challenge: make([]byte, 32), LDevIDCertificate: []byte("cert")}
	})
	add(events.KindEnrollmentRefused, func(p *events.Predicate) {
		p.Evidence = nil
		p.Refused = &events.Refused{Operator: "blue-operator", RegistrationID: dev, IDScope: "0ne00000001", Rule: "pcr-policy", Message: "no"}
	})
	for _, kind := range []string{events.KindPartnerRegistered, events.KindPartnerRevoked} {
		sts = append(sts, events.NewPartnerStatement(kind, events.PartnerInfo{Name: "delta-ems", Role: "ems", Certificate: []byte("cert")}, dev, now, strings.Repeat("0f", 16)))
	}
	out := map[string]any{}
	for _, st := range sts {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := schemas.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		out[st.Predicate.Kind] = doc
	}
	return out
}

// general is the general validator's verdict.
func general(kind string, doc any) bool { return schemas.GeneralValid(kind, doc) == nil }

// TestFastValidatorAgrees mutates valid statements of every kind, many
// times, and checks that the fast validator accepts exactly what the
// general validator accepts. (A rejection by the fast validator alone would
// only cost time, since ValidateDocument then asks the general one; an
// acceptance the general validator would refuse would be a hole.)
func TestFastValidatorAgrees(t *testing.T) {
	samples := sampleStatements(t)
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for _, kind := range fastKinds {
		doc := samples[kind]
		if !general(kind, doc) {
			t.Fatalf("%s: the sample is invalid: %v", kind, schemas.GeneralValid(kind, doc))
		}
		if !schemas.FastValid(kind, doc) {
			t.Fatalf("%s: the fast validator refuses the valid sample", kind)
		}
		accepted := 0
		for i := range n {
			m := deepCopy(doc)
			for range 1 + rng.IntN(3) {
				m = mutate(rng, m, samples)
			}
			g, f := general(kind, m), schemas.FastValid(kind, m)
			if g != f {
				b, _ := json.Marshal(m)
				t.Fatalf("%s, mutation %d: general %v, fast %v on %s", kind, i, g, f, b)
			}
			if g {
				accepted++
			}
		}
		t.Logf("%s: %d of %d mutations valid", kind, accepted, n)
	}
}

// FuzzFastValidator checks the fast validator against the general one on
// arbitrary JSON, as every kind's statement.
func FuzzFastValidator(f *testing.F) {
	for _, doc := range sampleStatements(f) {
		b, _ := json.Marshal(doc)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := schemas.Decode(b)
		if err != nil {
			return
		}
		for _, kind := range fastKinds {
			if g, fv := general(kind, doc), schemas.FastValid(kind, doc); g != fv {
				t.Fatalf("%s: general %v, fast %v on %s", kind, g, fv, b)
			}
		}
	})
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

// replacements are values a mutation puts in place of another.
var replacements = []any{
	nil, true, false, json.Number("0"), json.Number("1.5"), json.Number("-3"), "", "x", "AAEC", "AAE=", "AA==", "A===", "YWJj\n",
	"Delta EMS", "delta-ems", "stolen", "cleared", "assembly", "firmware-programmed", "test-passed", "ems", "gate",
	"2026-11-27T10:00:00Z", "2026-13-27T10:00:00Z", "2026-11-27 10:00:00Z", "yesterday",
	strings.Repeat("ab", 32), strings.Repeat("AB", 32), strings.Repeat("0f", 16), strings.Repeat("ab", 33),
	"device:" + strings.Repeat("ab", 32), "partner:delta-ems", "7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+8=",
	strings.Repeat("A", 2048), strings.Repeat("A", 2052), "é", "\x00",
	"https://in-toto.io/Statement/v1", events.PredicateTypePrefix + "stage.recorded",
	[]any{}, []any{"x"}, map[string]any{}, map[string]any{"0": "x"},
}

// mutate changes one place in doc at random (samples give whole
// predicates of other kinds to graft).
func mutate(rng *rand.Rand, doc any, samples map[string]any) any {
	// Collect the containers and pick one.
	var conts []any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			conts = append(conts, v)
			for _, e := range v {
				walk(e)
			}
		case []any:
			conts = append(conts, v)
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
	if len(conts) == 0 {
		return replacements[rng.IntN(len(replacements))]
	}
	val := func() any {
		if rng.IntN(8) == 0 {
			kinds := slices.Sorted(mapKeys(samples))
			other := samples[kinds[rng.IntN(len(kinds))]].(map[string]any)
			pred := other["predicate"].(map[string]any)
			keys := slices.Sorted(mapKeys(pred))
			return deepCopy(pred[keys[rng.IntN(len(keys))]])
		}
		return deepCopy(replacements[rng.IntN(len(replacements))])
	}
	switch c := conts[rng.IntN(len(conts))].(type) {
	case map[string]any:
		keys := slices.Sorted(mapKeys(c))
		switch op := rng.IntN(4); {
		case op == 0 && len(keys) > 0:
			delete(c, keys[rng.IntN(len(keys))])
		case op == 1:
			names := []string{"price", "Kind", "kind", "note", "pcrs", "1", "24", "07", "offer", "evidence", "stage", "flag", "challenge"}
			c[names[rng.IntN(len(names))]] = val()
		case len(keys) > 0:
			c[keys[rng.IntN(len(keys))]] = val()
		default:
			c[fmt.Sprint(rng.IntN(30))] = val()
		}
	case []any:
		if len(c) > 0 {
			c[rng.IntN(len(c))] = val()
		}
	}
	return doc
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
