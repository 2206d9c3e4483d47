package schemas

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// The quote policy as data (custody/v1/policy/quotes.json): for each event
// kind, and for each stage of stage.recorded, whether the event carries a
// TPM quote. The ledger applies it on ingest and offline replay applies the
// same function to a bundle, so a required quote is never skipped on one
// side and demanded on the other.

// Quote is what the policy asks of an event's TPM quote.
type Quote string

// The policy's values.
const (
	QuoteRequired Quote = "required" // the quote must be there and verify
	QuoteOptional Quote = "optional" // a quote, if there, must verify
	QuoteNone     Quote = "none"     // no quote (boxed devices; registry events)
)

//go:embed custody/v1/policy/quotes.json
var quotePolicyJSON []byte

type quotePolicy struct {
	Description           string           `json:"description"`
	Kinds                 map[string]Quote `json:"kinds"`
	Stages                map[string]Quote `json:"stages"`
	PCRsMustMatchRecorded []string         `json:"pcrsMustMatchRecorded"`
}

var (
	policyOnce sync.Once
	policy     quotePolicy
	policyErr  error
)

func loadPolicy() {
	if err := json.Unmarshal(quotePolicyJSON, &policy); err != nil {
		policyErr = fmt.Errorf("schemas: quote policy: %w", err)
		return
	}
	for k, q := range policy.Kinds {
		if q != QuoteRequired && q != QuoteOptional && q != QuoteNone {
			policyErr = fmt.Errorf("schemas: quote policy: kind %s: %q is not required, optional or none", k, q)
			return
		}
	}
}

// QuotePolicy returns what the policy asks of the quote of an event of
// kind (and, for stage.recorded, of stage). A kind the policy does not name
// requires a quote: the safe default.
func QuotePolicy(kind, stage string) Quote {
	policyOnce.Do(loadPolicy)
	if policyErr != nil {
		return QuoteRequired
	}
	if stage != "" {
		if q, ok := policy.Stages[stage]; ok {
			return q
		}
	}
	if q, ok := policy.Kinds[kind]; ok {
		return q
	}
	return QuoteRequired
}

// PCRsMustMatchRecorded reports whether a stage's quote must show the PCR
// values last recorded for the device (firmware-programmed's): receiving
// inspection checks that a sampled device still runs what was programmed.
func PCRsMustMatchRecorded(stage string) bool {
	policyOnce.Do(loadPolicy)
	return slices.Contains(policy.PCRsMustMatchRecorded, stage)
}

// PolicyError reports a policy file that does not load (nil when it does).
func PolicyError() error {
	policyOnce.Do(loadPolicy)
	return policyErr
}
