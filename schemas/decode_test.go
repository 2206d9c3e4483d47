package schemas_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/custodyledger/custody/schemas"
)

// FuzzDecode holds the single-pass decoder to encoding/json: whatever it
// decodes, encoding/json decodes to the same value, and it decodes nothing
// encoding/json refuses.
func FuzzDecode(f *testing.F) {
	for _, doc := range sampleStatements(f) {
		b, _ := json.Marshal(doc)
		f.Add(b)
	}
	for _, s := range []string{`{}`, `[]`, ` {"a" : [1, -0.5e+3, true, false, null, "x"]} `, `{"a":1,"a":2}`, `"\u00e9"`, `"é"`, "\"\xff\"",
		`01`, `-`, `1.`, `1e`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `nul`, `[1] x`, `{"A":1,"a":2}`, "\"a\tb\"", `1E+2`, `-0`, `"\/"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		got, ok := schemas.DecodeSimple(b)
		if !ok {
			return // the general decoder's answer stands
		}
		if werr != nil {
			t.Fatalf("%q: decoded %#v, encoding/json refuses it: %v", b, got, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decoded %#v, encoding/json %#v", b, got, want)
		}
	})
}

// The statements the ledger sees take the single pass.
func TestDecodeSimpleTakesStatements(t *testing.T) {
	for kind, doc := range sampleStatements(t) {
		b, _ := json.Marshal(doc)
		if _, ok := schemas.DecodeSimple(b); !ok {
			t.Errorf("%s: not decoded in a single pass", kind)
		}
	}
}
