package schemas

import (
	"encoding/json"
	"slices"
	"testing"
)

// The quote policy and the schemas say the same thing: a kind whose quote
// is required has "evidence" among its predicate's required properties; an
// optional one has the property but does not require it; none, no
// property at all.
func TestQuotePolicyMatchesSchemas(t *testing.T) {
	if err := PolicyError(); err != nil {
		t.Fatal(err)
	}
	kinds, err := Kinds()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		raw, err := files.ReadFile("custody/v1/" + k + ".json")
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Properties struct {
				Predicate struct {
					Required   []string                   `json:"required"`
					Properties map[string]json.RawMessage `json:"properties"`
				} `json:"predicate"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		_, has := s.Properties.Predicate.Properties["evidence"]
		req := slices.Contains(s.Properties.Predicate.Required, "evidence")
		want := QuoteNone
		if req {
			want = QuoteRequired
		} else if has {
			want = QuoteOptional
		}
		if got := QuotePolicy(k, ""); got != want {
			t.Errorf("%s: the quote policy says %s, its schema %s", k, got, want)
		}
	}
	for _, st := range []string{"assembly", "firmware-programmed", "test-passed", "receiving-inspection"} {
		if QuotePolicy("stage.recorded", st) != QuoteRequired {
			t.Errorf("stage %s: quote not required", st)
		}
	}
	if !PCRsMustMatchRecorded("receiving-inspection") || PCRsMustMatchRecorded("assembly") {
		t.Error("receiving inspection, and only it, compares the quoted PCRs with the recorded ones")
	}
}
