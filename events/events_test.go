package events_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/eventtest"
	"github.com/custodyledger/custody/schemas"
)

const dev = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"

func offer(t *testing.T) *events.Statement {
	t.Helper()
	st := events.NewStatement(events.KindHandoffOffered, "delta-ems", dev, time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), "00112233445566778899aabbccddeeff")
	st.Predicate.Handoff = &events.Handoff{From: "delta-ems", To: "blue-operator"}
	st.Predicate.Evidence = &events.Evidence{Attest: []byte("attest"), Signature: []byte("sig"), PCRs: map[string][]byte{"0": bytes.Repeat([]byte{1}, 32)}}
	return st
}

func TestSignOpenVerify(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	env, err := events.Sign(context.Background(), offer(t), key, "delta-ems")
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(&key.PublicKey); err != nil {
		t.Fatalf("Verify with the signer's key: %v", err)
	}
	if err := s.Verify(&other.PublicKey); !errors.Is(err, events.ErrBadSignature) {
		t.Fatalf("Verify with another key = %v, want ErrBadSignature", err)
	}
	if got := s.Statement.Device(); got != dev {
		t.Fatalf("Device() = %q", got)
	}
	if err := schemas.Validate(s.Payload); err != nil {
		t.Fatalf("schema: %v", err)
	}
	// Tampering with the payload breaks the signature.
	var e map[string]any
	_ = json.Unmarshal(env, &e)
	payload := strings.Replace(string(s.Payload), "blue-operator", "grey-operator", 1)
	e["payload"] = base64.StdEncoding.EncodeToString([]byte(payload))
	tampered, _ := json.Marshal(e)
	ts, err := events.Open(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Verify(&key.PublicKey); err == nil {
		t.Fatal("a tampered payload verified")
	}
	if ts.Digest == s.Digest {
		t.Fatal("tampered payload has the same digest")
	}
}

func TestBindingDigestIgnoresEvidenceOnly(t *testing.T) {
	a := offer(t)
	b := offer(t)
	b.Predicate.Evidence = &events.Evidence{Attest: []byte("other"), Signature: []byte("x"), PCRs: map[string][]byte{}}
	da, err := events.StatementBindingDigest(a)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := events.StatementBindingDigest(b)
	if !bytes.Equal(da, db) {
		t.Fatal("the binding digest depends on the evidence")
	}
	c := offer(t)
	c.Predicate.Handoff.To = "grey-operator"
	dc, _ := events.StatementBindingDigest(c)
	if bytes.Equal(da, dc) {
		t.Fatal("the binding digest does not depend on the recipient")
	}
	// Key order and whitespace do not matter (RFC 8785).
	payload, _ := json.Marshal(a)
	var m map[string]any
	_ = json.Unmarshal(payload, &m)
	indented, _ := json.MarshalIndent(m, "", "   ")
	di, err := events.BindingDigest(indented)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da, di) {
		t.Fatal("the binding digest depends on formatting")
	}
}

func TestParseStatementRejects(t *testing.T) {
	good, _ := json.Marshal(offer(t))
	cases := map[string]func(m map[string]any){
		"wrong type":         func(m map[string]any) { m["_type"] = "https://in-toto.io/Statement/v0.1" },
		"kind/type mismatch": func(m map[string]any) { m["predicateType"] = events.PredicateTypePrefix + "device.flagged" },
		"no evidence":        func(m map[string]any) { delete(m["predicate"].(map[string]any), "evidence") },
		"bad device": func(m map[string]any) {
			m["subject"] = []any{map[string]any{"name": "device:XYZ", "digest": map[string]any{"sha256": "XYZ"}}}
		},
		"unknown field":   func(m map[string]any) { m["predicate"].(map[string]any)["extra"] = 1 },
		"missing handoff": func(m map[string]any) { delete(m["predicate"].(map[string]any), "handoff") },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			var m map[string]any
			_ = json.Unmarshal(good, &m)
			mutate(m)
			b, _ := json.Marshal(m)
			if _, err := events.ParseStatement(b); !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("ParseStatement = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestOpenRejectsOversized opens envelopes that are valid in every way but
// their size, so that only the size rule can reject them: a signed event
// whose TPM evidence makes it just too large, and an event padded with
// insignificant JSON whitespace to exactly the limit and to one byte over.
func TestOpenRejectsOversized(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signWithAttest := func(n int) []byte {
		t.Helper()
		st := offer(t)
		st.Predicate.Evidence.Attest = bytes.Repeat([]byte{0xa5}, n)
		env, err := events.Sign(context.Background(), st, key, "delta-ems")
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	wantSizeRule := func(t *testing.T, env []byte) {
		t.Helper()
		_, err := events.Open(env)
		if !errors.Is(err, events.ErrMalformed) {
			t.Fatalf("Open(%d bytes) = %v, want ErrMalformed", len(env), err)
		}
		if msg := err.Error(); !strings.Contains(msg, "exceeds "+itoa(events.MaxEnvelopeSize)) || !strings.Contains(msg, itoa(len(env))+" bytes") {
			t.Fatalf("Open(%d bytes) = %q, want the error to name the %d-byte size limit", len(env), msg, events.MaxEnvelopeSize)
		}
	}
	// Grow the evidence until the signed envelope crosses the limit; base64
	// twice (evidence in the payload, payload in the envelope) makes each
	// evidence byte cost about 16/9 envelope bytes.
	base := len(signWithAttest(0))
	n := (events.MaxEnvelopeSize-base)*9/16 - 64
	under := signWithAttest(n)
	if len(under) > events.MaxEnvelopeSize {
		t.Fatalf("the starting envelope is already %d bytes", len(under))
	}
	var over []byte
	for {
		n++
		over = signWithAttest(n)
		if len(over) > events.MaxEnvelopeSize {
			break
		}
		under = over
	}
	if len(over)-events.MaxEnvelopeSize > 16 {
		t.Fatalf("the smallest oversized envelope is %d bytes over", len(over)-events.MaxEnvelopeSize)
	}
	s, err := events.Open(under)
	if err != nil {
		t.Fatalf("Open(%d-byte envelope under the limit) = %v", len(under), err)
	}
	if err := s.Verify(&key.PublicKey); err != nil {
		t.Fatal(err)
	}
	t.Run("evidence", func(t *testing.T) { wantSizeRule(t, over) })

	// The same valid envelope padded: exactly the limit opens, one byte more
	// does not.
	pad := func(size int) []byte {
		return append(bytes.Clone(under), bytes.Repeat([]byte(" "), size-len(under))...)
	}
	t.Run("at limit", func(t *testing.T) {
		s, err := events.Open(pad(events.MaxEnvelopeSize))
		if err != nil {
			t.Fatalf("Open(exactly MaxEnvelopeSize) = %v", err)
		}
		if err := s.Verify(&key.PublicKey); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("one over", func(t *testing.T) { wantSizeRule(t, pad(events.MaxEnvelopeSize+1)) })
}

func FuzzOpen(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	st := events.NewStatement(events.KindHandoffOffered, "delta-ems", dev, time.Unix(0, 0), "00112233445566778899aabbccddeeff")
	st.Predicate.Handoff = &events.Handoff{From: "delta-ems", To: "blue-operator"}
	st.Predicate.Evidence = &events.Evidence{Attest: []byte{1}, Signature: []byte{2}, PCRs: map[string][]byte{}}
	env, _ := events.Sign(context.Background(), st, key, "delta-ems")
	f.Add(env)
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := events.Open(data)
		if err != nil {
			return
		}
		// Whatever parses re-parses to the same statement and digest.
		again, err := events.ParseStatement(s.Payload)
		if err != nil {
			t.Fatalf("payload parsed once but not twice: %v", err)
		}
		if again.Predicate.Kind != s.Statement.Predicate.Kind || again.Target() != s.Statement.Target() {
			t.Fatal("re-parse differs")
		}
		if events.Digest(events.PayloadType, s.Payload) != s.Digest {
			t.Fatal("digest is not a function of the payload")
		}
	})
}

func FuzzOpenMessage(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	m := &events.Manifest{Containers: []events.Container{{Path: "P-1/C-1", Devices: []string{dev}}}}
	st, _ := events.NewShipmentStatement(events.KindShipmentOffered, "delta-ems", events.Shipment{ID: "S-1", From: "delta-ems", To: "blue-operator"}, m, time.Unix(0, 0), "00112233445566778899aabbccddeeff")
	s, _ := events.SignShipment(context.Background(), st, m, key, "delta-ems")
	f.Add(s.Wire())
	f.Add([]byte(`{"envelope":{},"manifest":{"containers":[]}}`))
	b, _ := events.SignBatch(context.Background(), "B-1", []*events.Statement{eventtest.UnquotedStage("delta-ems", dev, events.StageTestPassed, "00112233445566778899aabbccddeeff")}, key, "delta-ems")
	f.Add(b.Parcel)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := events.OpenMessage(data)
		if err != nil {
			return
		}
		if s.Members != nil {
			// A batch that opens carries members that prove into the root
			// it signs, each by its partner.
			proofs, err := s.MemberProofs()
			if err != nil || len(proofs) != s.Statement.Predicate.Batch.Events {
				t.Fatalf("an opened batch's members: %d, %v", len(proofs), err)
			}
			for i, p := range proofs {
				m, err := p.Verify(s.Statement.BatchRoot())
				if err != nil || m.Digest != s.Members[i].Digest || m.Statement.Predicate.Partner != s.Statement.Predicate.Partner {
					t.Fatalf("member %d does not prove into the signed root: %v", i, err)
				}
			}
			return
		}
		if s.Manifest == nil {
			return // a bare envelope: FuzzOpen
		}
		// A parcel that opens carries a manifest whose root and size are
		// the ones its statement signs, and every device proves into it.
		root, proofs, err := s.Manifest.Proofs()
		if err != nil {
			t.Fatal(err)
		}
		if string(root) != string(s.Statement.ShipmentRoot()) || s.Manifest.Len() != s.Statement.Predicate.Shipment.Devices {
			t.Fatal("an opened parcel's manifest is not the one signed")
		}
		for d, p := range proofs {
			if err := p.Verify(d, root); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzDecodeEnvelope holds Open's envelope decoding to encoding/json's
// decoding into the DSSE envelope.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(`{"payload":"eyJ9","payloadType":"application/vnd.in-toto+json","signatures":[{"keyid":"acme","sig":"MEUC"}]}`))
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`))
	f.Add([]byte(`{"payload":"a","Payload":"b","signatures":[]}`))
	f.Add([]byte(`{"payload":"a","payloadType":null,"signatures":[]}`))
	f.Add([]byte(`{"payload":"a","payloadType":"b","signatures":[{"keyid":"k","sig":"s","x":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := events.DecodeEnvelopeForTest(b)
		if !ok {
			return
		}
		var want events.Envelope
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: decoded, encoding/json refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decoded %#v, encoding/json %#v", b, got, want)
		}
	})
}

// FuzzStatementFromDoc holds the statement Open builds from the generic
// decoding to ParseStatement's: whatever it builds, ParseStatement accepts
// and parses to the same statement.
func FuzzStatementFromDoc(f *testing.F) {
	f.Add([]byte(vectorPayload))
	dev := strings.Repeat("ab", 32)
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ev := &events.Evidence{Attest: []byte("attest"), Signature: []byte("sig"), PCRs: map[string][]byte{"0": make([]byte, 32)}}
	for _, fill := range []func(st *events.Statement){
		func(st *events.Statement) {
			st.Predicate.Kind, st.PredicateType = events.KindTPMManufactured, events.PredicateTypePrefix+events.KindTPMManufactured
			st.Predicate.Manufactured = &events.Manufactured{EKCertificate: []byte("ek"), EKPublic: []byte{}, IAKPublic: []byte("iak"), IAKCertificate: []byte("c"), TPM: attest.TPMInfo{Manufacturer: "id:1", Model: "m", Version: "v"}}
		},
		func(st *events.Statement) {
			st.Predicate.Stage = &events.Stage{Name: events.StageFirmwareProgrammed, FirmwareDigest: dev, PCRs: map[string]string{"0": dev}, Note: "é"}
		},
		func(st *events.Statement) {
			st.Predicate.Kind, st.PredicateType = events.KindHandoffAccepted, events.PredicateTypePrefix+events.KindHandoffAccepted
			st.Predicate.Stage, st.Predicate.Handoff = nil, &events.Handoff{From: "a", To: "b", Offer: dev}
		},
		func(st *events.Statement) {
			st.Predicate.Kind, st.PredicateType = events.KindDeviceFlagged, events.PredicateTypePrefix+events.KindDeviceFlagged
			st.Predicate.Stage, st.Predicate.Flag = nil, &events.Flag{Reason: "lost", Note: "n"}
		},
		func(st *events.Statement) {
			st.Predicate.Kind, st.PredicateType = events.KindDeviceEnrolled, events.PredicateTypePrefix+events.KindDeviceEnrolled
			st.Predicate.Stage, st.Predicate.Enrolled = nil, &events.Enrolled{Operator: "o", RegistrationID: dev, IDScope: "s", Challenge: []byte("c"), LDevIDCertificate: []byte("l")}
		},
		func(st *events.Statement) {
			st.Predicate.Kind, st.PredicateType = events.KindEnrollmentRefused, events.PredicateTypePrefix+events.KindEnrollmentRefused
			st.Predicate.Stage, st.Predicate.Evidence = nil, nil
			st.Predicate.Refused = &events.Refused{Operator: "o", RegistrationID: dev, IDScope: "s", Rule: "r", Message: "m"}
		},
	} {
		st := events.NewStatement(events.KindStageRecorded, "delta-ems", dev, now, strings.Repeat("0f", 16))
		st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed}
		st.Predicate.Evidence = ev
		fill(st)
		b, err := json.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	reg := events.NewPartnerStatement(events.KindPartnerRegistered, events.PartnerInfo{Name: "delta-ems", Role: "ems", Certificate: []byte("c"), Operator: "x"}, dev, now, strings.Repeat("0f", 16))
	b, _ := json.Marshal(reg)
	f.Add(b)
	f.Add([]byte(`{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://custodyledger.dev/custody/v1/device.flagged","subject":[{"name":"device:` + dev + `","digest":{"sha256":"` + dev + `"}}],"predicate":{"kind":"device.flagged","partner":"a","time":"2026-11-27T10:00:00+02:00","eventId":"x","flag":{"reason":"lost"},"evidence":{"attest":"","signature":"AA==","pcrs":{}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, ok := schemas.DecodeSimple(b)
		if !ok {
			return
		}
		got, ok := events.StatementFromDocForTest(doc)
		if !ok {
			return // ParseStatement decides
		}
		want, err := events.ParseStatement(b)
		if err != nil {
			t.Fatalf("%s: built a statement, ParseStatement refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: built %+v, ParseStatement %+v", b, got, want)
		}
	})
}

// Open builds the statements publishers send from the generic decoding.
func TestOpenDecodesOnce(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dev := strings.Repeat("ab", 32)
	st := events.NewStatement(events.KindStageRecorded, "delta-ems", dev, time.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: "line 4"}
	st.Predicate.Evidence = &events.Evidence{Attest: make([]byte, 145), Signature: make([]byte, 72), PCRs: map[string][]byte{"0": make([]byte, 32)}}
	env, err := events.Sign(context.Background(), st, key, "delta-ems")
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	if s.Doc == nil {
		t.Fatal("Open did not keep the generic decoding")
	}
	if _, ok := events.StatementFromDocForTest(s.Doc); !ok {
		t.Fatal("the statement was not built from the generic decoding")
	}
	want, err := events.ParseStatement(s.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Statement, want) {
		t.Fatalf("Open: %+v, ParseStatement: %+v", s.Statement, want)
	}
}
