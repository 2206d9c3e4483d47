package schemas_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/schemas"
)

func TestEveryKindHasASchema(t *testing.T) {
	kinds, err := schemas.Kinds()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range events.Kinds {
		if !slices.Contains(kinds, k) {
			t.Errorf("no schema for %s", k)
		}
	}
	if len(kinds) != len(events.Kinds) {
		t.Errorf("schemas %v, kinds %v", kinds, events.Kinds)
	}
}

func stage() map[string]any {
	return map[string]any{
		"_type":         events.StatementType,
		"subject":       []any{map[string]any{"name": "device:" + strings.Repeat("ab", 32), "digest": map[string]any{"sha256": strings.Repeat("ab", 32)}}},
		"predicateType": events.PredicateTypePrefix + "stage.recorded",
		"predicate": map[string]any{
			"kind": "stage.recorded", "partner": "delta-ems", "time": "2026-11-27T10:00:00Z",
			"eventId":  strings.Repeat("0f", 16),
			"stage":    map[string]any{"name": "firmware-programmed", "firmwareDigest": strings.Repeat("cd", 32), "pcrs": map[string]any{"0": strings.Repeat("ef", 32)}},
			"evidence": map[string]any{"attest": "AAEC", "signature": "AAEC", "pcrs": map[string]any{"0": "7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+8="}},
		},
	}
}

func TestValidate(t *testing.T) {
	ok, _ := json.Marshal(stage())
	if err := schemas.Validate(ok); err != nil {
		t.Fatalf("valid statement refused: %v", err)
	}
	cases := map[string]func(m map[string]any){
		"firmware without PCRs": func(m map[string]any) { delete(m["predicate"].(map[string]any)["stage"].(map[string]any), "pcrs") },
		"unknown stage":         func(m map[string]any) { m["predicate"].(map[string]any)["stage"].(map[string]any)["name"] = "painted" },
		"bad partner name":      func(m map[string]any) { m["predicate"].(map[string]any)["partner"] = "Delta EMS" },
		"bad time":              func(m map[string]any) { m["predicate"].(map[string]any)["time"] = "yesterday" },
		"extra field":           func(m map[string]any) { m["predicate"].(map[string]any)["price"] = 12 },
		"unknown kind":          func(m map[string]any) { m["predicate"].(map[string]any)["kind"] = "device.sold" },
		"PCR of wrong length": func(m map[string]any) {
			m["predicate"].(map[string]any)["evidence"].(map[string]any)["pcrs"] = map[string]any{"0": "AAEC"}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := stage()
			mutate(m)
			b, _ := json.Marshal(m)
			err := schemas.Validate(b)
			var ve *schemas.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a ValidationError", err)
			}
		})
	}
}
