package gate

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// Policy is what a device must show to be enrolled, beyond what the gate
// always checks (the EK identity and chain, credential activation, a fresh
// quote by the recorded IAK with counters that do not go backwards, no flag,
// not decommissioned, custody held by this operator with no hand-off
// pending, and an IAK-certified LDevID key). Every check is recorded in the
// decision, pass or fail. The zero Policy is the default below.
//
// In JSON, as GET /gate/v1/policy shows it (node.Config.GatePolicy sets it):
//
//	{
//	  "requiredStages": ["assembly", "firmware-programmed", "test-passed"],
//	  "quotePcrs": [0],
//	  "pcrAllowList": {"0": ["<hex SHA-256 PCR value>", …]},
//	  "refuseReenrollment": false
//	}
type Policy struct {
	// RequiredStages must each have been recorded by a custodian (see
	// events.Stage*). Default: ["firmware-programmed"].
	RequiredStages []string `json:"requiredStages,omitempty"`
	// QuotePCRs are the SHA-256 PCRs the fresh quote must cover. Each must
	// equal the value the EMS recorded with firmware-programmed, or be
	// listed for that PCR in PCRAllowList. Default [0].
	QuotePCRs []int `json:"quotePcrs,omitempty"`
	// PCRAllowList lists further accepted values (lowercase hex SHA-256) per
	// PCR index, in addition to the EMS-recorded ones: firmware the operator
	// itself approved after the EMS, such as a field update image. A PCR
	// with an allow-list but no EMS record is accepted on the list alone.
	PCRAllowList map[int][]string `json:"pcrAllowList,omitempty"`
	// RefuseReenrollment refuses a device the ledger already shows enrolled.
	// By default an enrolled device may enroll again with the same TPM (an
	// LDevID renewal, or a device that lost its certificate): it passes every
	// check again, gets a new LDevID, and its previous LDevIDs are revoked.
	RefuseReenrollment bool `json:"refuseReenrollment,omitempty"`
}

// withDefaults returns p with defaults filled, validated.
func (p Policy) withDefaults() (Policy, error) {
	if len(p.RequiredStages) == 0 {
		p.RequiredStages = []string{events.StageFirmwareProgrammed}
	}
	if len(p.QuotePCRs) == 0 {
		p.QuotePCRs = []int{0}
	}
	known := []string{events.StageAssembly, events.StageFirmwareProgrammed, events.StageTestPassed}
	for _, s := range p.RequiredStages {
		if !slices.Contains(known, s) {
			return p, fmt.Errorf("gate: policy: unknown stage %q (known: %v)", s, known)
		}
	}
	for _, i := range p.QuotePCRs {
		if i < 0 || i >= attest.NumPCRs {
			return p, fmt.Errorf("gate: policy: PCR %d out of range 0..%d", i, attest.NumPCRs-1)
		}
	}
	for i, vals := range p.PCRAllowList {
		if !slices.Contains(p.QuotePCRs, i) {
			return p, fmt.Errorf("gate: policy: PCR %d has an allow-list but is not in quotePcrs", i)
		}
		for _, v := range vals {
			if b, err := hex.DecodeString(v); err != nil || len(b) != 32 || hex.EncodeToString(b) != v {
				return p, fmt.Errorf("gate: policy: allow-list value %q of PCR %d is not lowercase hex SHA-256", v, i)
			}
		}
	}
	return p, nil
}

// pcrAccepted reports whether got (hex) is an accepted value of PCR i given
// the EMS-recorded values, and says which source accepted it.
func (p *Policy) pcrAccepted(i int, got string, recorded map[string]string) (bool, string) {
	if want, ok := recorded[strconv.Itoa(i)]; ok && want == got {
		return true, "EMS record"
	}
	if slices.Contains(p.PCRAllowList[i], got) {
		return true, "operator allow-list"
	}
	return false, ""
}
