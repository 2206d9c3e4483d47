package events_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"

	"github.com/custodyledger/custody/events"
)

// referenceCanonical is RFC 8785 by the reference implementation: the
// generic value marshalled, then transformed.
func referenceCanonical(v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsoncanonicalizer.Transform(plain)
}

var canonicalSeeds = []string{
	`{"b":1,"a":[true,false,null,"x"],"c":{"z":"\u0001\n\t\"\\","y":1e21,"x":-0.000001}}`,
	`{"\u20ac":1,"\ud83d\ude00":2,"\u00e9":3,"e":4,"":5}`,
	`{"numbers":[0,-0,1,3.14,1e-7,123456789012345680000,9007199254740993,2e308]}`,
	`{"html":"<a href=\"x\">&amp;</a>","sep":"\u2028\u2029","del":"\u007f","bad":"\udc00"}`,
	`["a",{"k":[[],{}]},1.5]`,
	`"just a string"`,
}

// TestAppendCanonicalMatchesReference holds AppendCanonical byte for byte to
// the reference implementation.
func TestAppendCanonicalMatchesReference(t *testing.T) {
	for _, s := range canonicalSeeds {
		checkCanonical(t, []byte(s))
	}
}

func FuzzAppendCanonical(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkCanonical)
}

func checkCanonical(t *testing.T, data []byte) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return
	}
	switch v.(type) {
	case map[string]any, []any: // the reference takes only these at the top
	default:
		return
	}
	want, werr := referenceCanonical(v)
	got, gerr := events.AppendCanonical(nil, v)
	if werr != nil || gerr != nil {
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: reference error %v, ours %v", data, werr, gerr)
		}
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", data, got, want)
	}
}
