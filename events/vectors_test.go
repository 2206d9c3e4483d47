package events_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/custodyledger/custody/events"
)

// vectorPayload is a fixed handoff.offered statement, as a partner would
// sign it (not canonical: extra spaces and its own key order).
const vectorPayload = `{"predicateType": "https://custodyledger.dev/custody/v1/handoff.offered", "_type": "https://in-toto.io/Statement/v1",
 "subject": [{"name": "device:d1ab0cc645d59887df8ec35d5c8257f8069f944867718e7ca7a5ae955808b476", "digest": {"sha256": "d1ab0cc645d59887df8ec35d5c8257f8069f944867718e7ca7a5ae955808b476"}}],
 "predicate": {"partner": "delta-ems", "kind": "handoff.offered", "time": "2026-11-27T10:00:00Z", "eventId": "00112233445566778899aabbccddeeff",
   "handoff": {"to": "blue-operator", "from": "delta-ems"},
   "evidence": {"attest": "/1RDR4AYACIAC/8=", "signature": "ABgACwAg", "pcrs": {"0": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}}}`

// The canonical form the binding digest hashes (RFC 8785: sorted keys, no
// whitespace, evidence removed).
const vectorCanonical = `{"_type":"https://in-toto.io/Statement/v1","predicate":{"eventId":"00112233445566778899aabbccddeeff","handoff":{"from":"delta-ems","to":"blue-operator"},"kind":"handoff.offered","partner":"delta-ems","time":"2026-11-27T10:00:00Z"},"predicateType":"https://custodyledger.dev/custody/v1/handoff.offered","subject":[{"digest":{"sha256":"d1ab0cc645d59887df8ec35d5c8257f8069f944867718e7ca7a5ae955808b476"},"name":"device:d1ab0cc645d59887df8ec35d5c8257f8069f944867718e7ca7a5ae955808b476"}]}`

func TestVectors(t *testing.T) {
	got, err := events.BindingDigest([]byte(vectorPayload))
	if err != nil {
		t.Fatal(err)
	}
	want := sha256Hex(vectorCanonical)
	if hex.EncodeToString(got) != want {
		t.Fatalf("binding digest %x, want SHA-256 of the canonical form %s", got, want)
	}
	// The event digest is over the exact payload bytes, in the DSSE PAE.
	pae := "DSSEv1 28 application/vnd.in-toto+json " + itoa(len(vectorPayload)) + " " + vectorPayload
	d := events.Digest(events.PayloadType, []byte(vectorPayload))
	if hex.EncodeToString(d[:]) != sha256Hex(pae) {
		t.Fatalf("event digest %x is not SHA-256 of the PAE", d)
	}
	if _, err := events.ParseStatement([]byte(vectorPayload)); err != nil {
		t.Fatalf("the vector does not parse: %v", err)
	}
}

func TestBindingDigestOfDecoded(t *testing.T) {
	want, _ := events.BindingDigest([]byte(vectorPayload))
	var doc any
	dec := json.NewDecoder(strings.NewReader(vectorPayload))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	got, err := events.BindingDigestOf(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("BindingDigestOf differs from BindingDigest")
	}
	if _, ok := doc.(map[string]any)["predicate"].(map[string]any)["evidence"]; !ok {
		t.Fatal("BindingDigestOf modified its input")
	}
}
