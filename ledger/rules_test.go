package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/proof"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// The custody rules as pure functions of a device's state in memory: no
// NATS, no store, no TPM. One case per rule and per refusal code the rules
// give; the end-to-end tests (TestCustodyRules) run the same rules through
// the whole pipeline with real quotes.

const (
	ruleDevice = "1111111111111111111111111111111111111111111111111111111111111111"
	offerA     = "aaaa000000000000000000000000000000000000000000000000000000000000"
	offerB     = "bbbb000000000000000000000000000000000000000000000000000000000000"
)

// registry is the partners the rules look hand-off recipients up in.
var registry = map[string]*Partner{
	"acme-tpm":      {Name: "acme-tpm", Role: events.RoleTPMVendor},
	"orbit-odm":     {Name: "orbit-odm", Role: events.RoleODM},
	"nova-oem":      {Name: "nova-oem", Role: events.RoleOEM},
	"delta-ems":     {Name: "delta-ems", Role: events.RoleEMS},
	"blue-operator": {Name: "blue-operator", Role: events.RoleOperator},
	"grey-operator": {Name: "grey-operator", Role: events.RoleOperator},
	"blue-gate":     {Name: "blue-gate", Role: events.RoleGate, Operator: "blue-operator"},
	"gone-oem":      {Name: "gone-oem", Role: events.RoleOEM, Revoked: true, RevokedIndex: 3},
}

func lookup(name string) (*Partner, error) { return registry[name], nil }

// held is a device held by custodian, with options applied.
func held(custodian string, opts ...func(*Device)) *Device {
	d := &Device{ID: ruleDevice, Vendor: "acme-tpm", Custodian: custodian}
	for _, o := range opts {
		o(d)
	}
	return d
}

func pending(from, to, digest string) func(*Device) {
	return func(d *Device) { d.Pending = &Offer{Digest: digest, From: from, To: to, Index: 5} }
}

func accepted(digest string) func(*Device) { return func(d *Device) { d.LastAccepted = digest } }

func flagged(reason string) func(*Device) {
	return func(d *Device) { d.Flag = &DeviceFlag{Reason: reason, By: "orbit-odm", Index: 6} }
}

// pred is a predicate carrying evidence (the quote's verdict is the
// test's qi or qerr).
func pred(kind, partner string) *events.Predicate {
	return &events.Predicate{Kind: kind, Partner: partner, Evidence: &events.Evidence{}}
}

func noQuote(p *events.Predicate) *events.Predicate { p.Evidence = nil; return p }

func stage(partner, name string, pcrs map[string]string) *events.Predicate {
	p := pred(events.KindStageRecorded, partner)
	p.Stage = &events.Stage{Name: name, PCRs: pcrs}
	return p
}

func offer(partner, from, to string) *events.Predicate {
	p := pred(events.KindHandoffOffered, partner)
	p.Handoff = &events.Handoff{From: from, To: to}
	return p
}

func accept(partner, from, to, digest string) *events.Predicate {
	p := pred(events.KindHandoffAccepted, partner)
	p.Handoff = &events.Handoff{From: from, To: to, Offer: digest}
	return p
}

func withdraw(partner, from, to, digest string) *events.Predicate {
	p := pred(events.KindHandoffWithdrawn, partner)
	p.Handoff = &events.Handoff{From: from, To: to, Offer: digest}
	return p
}

func flag(kind, partner, reason string) *events.Predicate {
	p := pred(kind, partner)
	p.Flag = &events.Flag{Reason: reason}
	return p
}

func enrolled(gate, operator string) *events.Predicate {
	p := pred(events.KindDeviceEnrolled, gate)
	p.Enrolled = &events.Enrolled{Operator: operator}
	return p
}

var pcr0 = strings.Repeat("ab", 32)

func TestCustodyRuleTable(t *testing.T) {
	quoted := &attest.QuoteInfo{Clock: 10, PCRs: map[int][]byte{0: mustHex(pcr0)}}
	for _, tc := range []struct {
		name string
		dev  *Device
		p    *events.Predicate
		want events.Code // "" accepted
	}{
		// stage.recorded
		{"custodian records a stage", held("orbit-odm"), stage("orbit-odm", "assembly", nil), ""},
		{"non-custodian records a stage", held("orbit-odm"), stage("nova-oem", "assembly", nil), events.CodeNotCustodian},
		{"firmware PCRs the TPM quoted", held("delta-ems"), stage("delta-ems", events.StageFirmwareProgrammed, map[string]string{"0": pcr0}), ""},
		{"firmware PCRs the TPM did not quote", held("delta-ems"), stage("delta-ems", events.StageFirmwareProgrammed, map[string]string{"0": strings.Repeat("cd", 32)}), events.CodeEvidence},
		{"firmware PCR outside the quote", held("delta-ems"), stage("delta-ems", events.StageFirmwareProgrammed, map[string]string{"7": pcr0}), events.CodeEvidence},

		// handoff.offered
		{"custodian offers to a registered partner", held("orbit-odm"), offer("orbit-odm", "orbit-odm", "nova-oem"), ""},
		{"non-custodian offers", held("orbit-odm"), offer("nova-oem", "nova-oem", "delta-ems"), events.CodeNotCustodian},
		{"offer in another partner's name", held("orbit-odm"), offer("orbit-odm", "nova-oem", "delta-ems"), events.CodeNotCustodian},
		{"second offer while one is pending (double hand-off)", held("delta-ems", pending("delta-ems", "blue-operator", offerA)), offer("delta-ems", "delta-ems", "grey-operator"), events.CodeEquivocation},
		{"same offer again while pending (a retry) is a harmless repeat", held("delta-ems", pending("delta-ems", "blue-operator", offerA)), offer("delta-ems", "delta-ems", "blue-operator"), events.CodeAlreadyExists},
		{"offer to an unregistered party (grey market)", held("delta-ems"), offer("delta-ems", "delta-ems", "shadow-broker"), events.CodeRecipient},
		{"offer to a revoked partner", held("delta-ems"), offer("delta-ems", "delta-ems", "gone-oem"), events.CodeRecipient},
		{"offer to a gate", held("delta-ems"), offer("delta-ems", "delta-ems", "blue-gate"), events.CodeRecipient},

		// handoff.accepted
		{"recipient accepts the pending offer", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), accept("nova-oem", "orbit-odm", "nova-oem", offerA), ""},
		{"acceptance with no offer", held("orbit-odm"), accept("nova-oem", "orbit-odm", "nova-oem", offerA), events.CodeNoPendingOffer},
		{"acceptance by someone else", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), accept("delta-ems", "orbit-odm", "delta-ems", offerA), events.CodeNotRecipient},
		{"acceptance of another offer", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), accept("nova-oem", "orbit-odm", "nova-oem", offerB), events.CodeNoPendingOffer},
		{"acceptance naming another sender", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), accept("nova-oem", "acme-tpm", "nova-oem", offerA), events.CodeNoPendingOffer},
		{"recipient re-accepts what it accepted", held("nova-oem", accepted(offerA)), accept("nova-oem", "orbit-odm", "nova-oem", offerA), events.CodeAlreadyExists},
		{"another partner accepts an accepted offer: refused, no evidence", held("nova-oem", accepted(offerA)), accept("delta-ems", "orbit-odm", "delta-ems", offerA), events.CodeNotRecipient},
		{"another partner accepts an accepted offer in the recipient's name", held("nova-oem", accepted(offerA)), accept("delta-ems", "orbit-odm", "nova-oem", offerA), events.CodeNotRecipient},

		// handoff.withdrawn
		{"offering party withdraws its pending offer", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), withdraw("orbit-odm", "orbit-odm", "nova-oem", offerA), ""},
		{"recipient withdraws the offer", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), withdraw("nova-oem", "orbit-odm", "nova-oem", offerA), events.CodeNotCustodian},
		{"third party withdraws in the offerer's name", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), withdraw("delta-ems", "orbit-odm", "nova-oem", offerA), events.CodeNotCustodian},
		{"withdrawal naming another offer", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), withdraw("orbit-odm", "orbit-odm", "nova-oem", offerB), events.CodeNoPendingOffer},
		{"withdrawal naming another recipient", held("orbit-odm", pending("orbit-odm", "nova-oem", offerA)), withdraw("orbit-odm", "orbit-odm", "delta-ems", offerA), events.CodeNoPendingOffer},
		{"withdrawal with nothing pending", held("orbit-odm"), withdraw("orbit-odm", "orbit-odm", "nova-oem", offerA), events.CodeNoPendingOffer},
		{"withdrawal of an accepted offer", held("nova-oem", accepted(offerA)), withdraw("orbit-odm", "orbit-odm", "nova-oem", offerA), events.CodeNoPendingOffer},

		// device.flagged / device.cleared
		{"custodian flags", held("nova-oem"), flag(events.KindDeviceFlagged, "nova-oem", events.FlagLost), ""},
		{"recipient of the pending offer flags", held("nova-oem", pending("nova-oem", "blue-operator", offerA)), flag(events.KindDeviceFlagged, "blue-operator", events.FlagLost), ""},
		{"enrolling operator (its custodian) flags", held("blue-operator", func(d *Device) { d.Enrolled = true }), flag(events.KindDeviceFlagged, "blue-operator", events.FlagCompromised), ""},
		{"operator outside the custody flags: a report", held("nova-oem"), flag(events.KindDeviceFlagged, "grey-operator", events.FlagStolen), events.CodeFlagReport},
		{"earlier custodian flags: a report", held("nova-oem", accepted(offerA)), flag(events.KindDeviceFlagged, "orbit-odm", events.FlagStolen), events.CodeFlagReport},
		{"non-custodian partner flags: a report", held("nova-oem"), flag(events.KindDeviceFlagged, "delta-ems", events.FlagLost), events.CodeFlagReport},
		{"holding operator clears", held("blue-operator", flagged("lost")), flag(events.KindDeviceCleared, "blue-operator", "found"), ""},
		{"receiving operator clears", held("delta-ems", flagged("equivocation"), pending("delta-ems", "blue-operator", offerA)), flag(events.KindDeviceCleared, "blue-operator", "resolved"), ""},
		{"other operator clears", held("blue-operator", flagged("lost")), flag(events.KindDeviceCleared, "grey-operator", "found"), events.CodeNotCustodian},
		{"clearing a device not flagged", held("blue-operator"), flag(events.KindDeviceCleared, "blue-operator", "found"), events.CodeNotFlagged},

		// device.enrolled
		{"gate enrolls its operator's device", held("blue-operator"), enrolled("blue-gate", "blue-operator"), ""},
		{"gate enrolls for another operator", held("grey-operator"), enrolled("blue-gate", "grey-operator"), events.CodeWrongRole},
		{"gate enrolls a device its operator does not hold", held("delta-ems"), enrolled("blue-gate", "blue-operator"), events.CodeNotCustodian},
		{"gate enrolls a flagged device", held("blue-operator", flagged("stolen")), enrolled("blue-gate", "blue-operator"), events.CodeFlagged},

		// device.decommissioned
		{"custodian decommissions", held("blue-operator"), flag(events.KindDeviceDecommissioned, "blue-operator", "retired"), ""},
		{"non-custodian decommissions", held("blue-operator"), flag(events.KindDeviceDecommissioned, "grey-operator", "retired"), events.CodeNotCustodian},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signer := registry[tc.p.Partner]
			if signer == nil {
				t.Fatalf("test case signer %q not in the registry", tc.p.Partner)
			}
			before := tc.dev.Clone()
			next := tc.dev.Clone()
			re := custodyRule(tc.p, signer, tc.dev, next, quoted, lookup)
			switch {
			case tc.want == "" && re != nil:
				t.Fatalf("refused with %s: %s", re.Code, re.Reason)
			case tc.want != "" && re == nil:
				t.Fatalf("accepted, want %s", tc.want)
			case re != nil && re.Code != tc.want:
				t.Fatalf("refused with %s (%s), want %s", re.Code, re.Reason, tc.want)
			case re != nil && strings.TrimSpace(re.Reason) == "":
				t.Fatalf("%s refusal without a sentence", re.Code)
			}
			if !sameDevice(tc.dev, before) {
				t.Fatalf("the rule changed the device state it was given")
			}
		})
	}
}

// TestDeviceRuleVerdicts: the one rule engine of ingest and replay
// (deviceRule) turns the custody rule's answer into the event's fate:
// accepted (state changed, counters advanced), evidence of equivocation
// (only the flag changes), a flag report (nothing changes), or refused.
func TestDeviceRuleVerdicts(t *testing.T) {
	qi := &attest.QuoteInfo{Clock: 20, ResetCount: 1}
	last := &QuoteCounters{Clock: 10, ResetCount: 1}
	withQuote := func(d *Device) { d.LastQuote = last }
	for _, tc := range []struct {
		name      string
		dev       *Device
		p         *events.Predicate
		qerr      *RuleError
		refused   events.Code
		logged    events.Code
		wantState func(before, after *Device) bool
	}{
		{"accepted offer", held("nova-oem", withQuote), offer("nova-oem", "nova-oem", "delta-ems"), nil, "", "",
			func(b, a *Device) bool { return a.Pending != nil && a.Pending.Index == 7 && a.LastQuote.Clock == 20 }},
		{"equivocation flags and changes nothing else", held("nova-oem", withQuote, pending("nova-oem", "delta-ems", offerA)), offer("nova-oem", "nova-oem", "blue-operator"), nil, "", events.CodeEquivocation,
			func(b, a *Device) bool {
				return a.Flag != nil && a.Flag.Reason == "equivocation" && a.Flag.Index == 7 && a.Pending.To == "delta-ems" && a.LastQuote.Clock == 10
			}},
		{"flag report changes nothing", held("nova-oem", withQuote), flag(events.KindDeviceFlagged, "grey-operator", events.FlagStolen), nil, "", events.CodeFlagReport,
			func(b, a *Device) bool { return sameDevice(a, b) }},
		{"retried offer is refused as a repeat", held("nova-oem", withQuote, pending("nova-oem", "delta-ems", offerA)), offer("nova-oem", "nova-oem", "delta-ems"), nil, events.CodeAlreadyExists, "", nil},
		{"wrong role", held("nova-oem", withQuote), flag(events.KindDeviceCleared, "nova-oem", "found"), nil, events.CodeWrongRole, "", nil},
		{"bad quote", held("nova-oem", withQuote), offer("nova-oem", "nova-oem", "delta-ems"), reject(events.CodeEvidence, "no"), events.CodeEvidence, "", nil},
		{"decommissioned", held("nova-oem", withQuote, func(d *Device) { d.Decommissioned = true }), offer("nova-oem", "nova-oem", "delta-ems"), nil, events.CodeDecommissioned, "", nil},
		{"quote policy: a required quote missing", held("nova-oem", withQuote), noQuote(stage("nova-oem", events.StageTestPassed, nil)), nil, events.CodeEvidence, "", nil},
		{"quote policy: receiving inspection needs its quote", held("nova-oem", withQuote), noQuote(stage("nova-oem", events.StageReceivingInspection, nil)), nil, events.CodeEvidence, "", nil},
		{"receiving inspection by the pending recipient", held("nova-oem", withQuote, pending("nova-oem", "delta-ems", offerA)), stage("delta-ems", events.StageReceivingInspection, nil), nil, "", "",
			func(b, a *Device) bool {
				return a.Stages[events.StageReceivingInspection] == 7 && a.LastQuote.Clock == 20
			}},
		{"receiving inspection by a stranger", held("nova-oem", withQuote), stage("delta-ems", events.StageReceivingInspection, nil), nil, events.CodeNotCustodian, "", nil},
		{"receiving inspection: PCRs differ from the recorded ones", held("nova-oem", withQuote, func(d *Device) { d.ExpectedPCRs = map[string]string{"0": strings.Repeat("ab", 32)} }),
			stage("nova-oem", events.StageReceivingInspection, nil), nil, events.CodeEvidence, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.dev.Clone()
			r, re := deviceRule(tc.p, offerB, registry[tc.p.Partner], tc.dev, qi, tc.qerr, lookup)
			if tc.refused != "" {
				if re == nil || re.Code != tc.refused {
					t.Fatalf("deviceRule = %+v, %v; want refused %s", r, re, tc.refused)
				}
				return
			}
			if re != nil {
				t.Fatalf("refused: %v", re)
			}
			if (r.logged == nil) != (tc.logged == "") || (r.logged != nil && r.logged.Code != tc.logged) {
				t.Fatalf("logged %v, want %q", r.logged, tc.logged)
			}
			after := r.next(7)
			if !sameDevice(tc.dev, before) {
				t.Fatal("deviceRule changed the state it was given")
			}
			if !tc.wantState(before, after) {
				t.Fatalf("state after: %+v", after)
			}
		})
	}
}

// TestFinish: an accepted event's effect on the device state.
func TestFinish(t *testing.T) {
	d := held("orbit-odm")
	finish(d, stage("orbit-odm", "assembly", nil), "", 7)
	if d.Stages["assembly"] != 7 {
		t.Fatalf("stage index %v", d.Stages)
	}
	fw := stage("orbit-odm", events.StageFirmwareProgrammed, map[string]string{"0": pcr0})
	fw.Stage.FirmwareDigest = strings.Repeat("0f", 32)
	finish(d, fw, "", 8)
	if d.FirmwareDigest != fw.Stage.FirmwareDigest || d.ExpectedPCRs["0"] != pcr0 {
		t.Fatalf("firmware not recorded: %+v", d)
	}
	finish(d, offer("orbit-odm", "orbit-odm", "nova-oem"), offerA, 9)
	if d.Pending == nil || d.Pending.To != "nova-oem" || d.Pending.Digest != offerA || d.Pending.Index != 9 {
		t.Fatalf("pending offer %+v", d.Pending)
	}
	finish(d, accept("nova-oem", "orbit-odm", "nova-oem", offerA), "", 10)
	if d.Custodian != "nova-oem" || d.Pending != nil || d.LastAccepted != offerA || d.Handoffs != 1 {
		t.Fatalf("after acceptance: %+v", d)
	}
	finish(d, offer("nova-oem", "nova-oem", "delta-ems"), offerB, 10)
	finish(d, withdraw("nova-oem", "nova-oem", "delta-ems", offerB), "", 10)
	if d.Pending != nil || d.Custodian != "nova-oem" {
		t.Fatalf("after withdrawal: %+v", d)
	}
	finish(d, flag(events.KindDeviceFlagged, "nova-oem", events.FlagLost), "", 11)
	if d.Flag == nil || d.Flag.Reason != events.FlagLost || d.Flag.Index != 11 {
		t.Fatalf("flag %+v", d.Flag)
	}
	finish(d, flag(events.KindDeviceCleared, "nova-oem", "found"), "", 12)
	if d.Flag != nil {
		t.Fatalf("flag not cleared: %+v", d.Flag)
	}
	finish(d, enrolled("blue-gate", "blue-operator"), "", 13)
	finish(d, flag(events.KindDeviceDecommissioned, "nova-oem", "retired"), "", 14)
	if !d.Enrolled || !d.Decommissioned {
		t.Fatalf("enrolled %v decommissioned %v", d.Enrolled, d.Decommissioned)
	}
}

// TestRoleMay: which role may publish which kind (events.CodeWrongRole).
func TestRoleMay(t *testing.T) {
	custody := []string{events.RoleTPMVendor, events.RoleODM, events.RoleOEM, events.RoleEMS, events.RoleOperator}
	for _, tc := range []struct {
		kind string
		may  []string
	}{
		{events.KindTPMManufactured, []string{events.RoleTPMVendor}},
		{events.KindStageRecorded, custody},
		{events.KindHandoffOffered, custody},
		{events.KindHandoffAccepted, custody},
		{events.KindHandoffWithdrawn, custody},
		{events.KindDeviceFlagged, custody},
		{events.KindDeviceCleared, []string{events.RoleOperator}},
		{events.KindDeviceEnrolled, []string{events.RoleGate}},
		{events.KindDeviceDecommissioned, []string{events.RoleOperator}},
	} {
		for _, role := range events.Roles {
			want := false
			for _, r := range tc.may {
				want = want || r == role
			}
			if got := roleMay(role, tc.kind); got != want {
				t.Errorf("roleMay(%s, %s) = %v, want %v", role, tc.kind, got, want)
			}
		}
	}
	if roleMay(events.RoleOperator, "no.such-kind") {
		t.Error("an unknown kind is publishable")
	}
}

// TestCheckCounters: TPM clock and reset counters never go backwards
// (events.CodeCounters); a device's first quote has nothing to compare with.
func TestCheckCounters(t *testing.T) {
	last := &QuoteCounters{Clock: 1000, ResetCount: 2, RestartCount: 3}
	for _, tc := range []struct {
		name string
		last *QuoteCounters
		qi   attest.QuoteInfo
		want events.Code
	}{
		{"first quote", nil, attest.QuoteInfo{Clock: 1}, ""},
		{"clock forward", last, attest.QuoteInfo{Clock: 1001, ResetCount: 2, RestartCount: 3}, ""},
		{"clock backwards (replayed quote)", last, attest.QuoteInfo{Clock: 999, ResetCount: 2, RestartCount: 3}, events.CodeCounters},
		{"reset count backwards (rolled-back TPM)", last, attest.QuoteInfo{Clock: 5000, ResetCount: 1, RestartCount: 3}, events.CodeCounters},
		{"restart count backwards", last, attest.QuoteInfo{Clock: 5000, ResetCount: 2, RestartCount: 2}, events.CodeCounters},
		{"after a reset the clock starts again", last, attest.QuoteInfo{Clock: 10, ResetCount: 3, RestartCount: 0}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := checkCounters(tc.last, &tc.qi)
			if (re == nil) != (tc.want == "") || (re != nil && re.Code != tc.want) {
				t.Fatalf("checkCounters = %v, want %q", re, tc.want)
			}
		})
	}
}

// TestRuleErrorSentinels: every refusal matches ErrRejected, and the
// families callers test for match their sentinels.
func TestRuleErrorSentinels(t *testing.T) {
	for code, sentinel := range map[events.Code]error{
		events.CodeUnknownDevice: ErrUnknownDevice, events.CodeNotCustodian: ErrNotCustodian,
		events.CodeEquivocation: ErrEquivocation, events.CodeUnknownPartner: ErrUnknownPartner,
	} {
		re := reject(code, "because")
		if !isErr(re, ErrRejected) || !isErr(re, sentinel) {
			t.Errorf("%s does not match its sentinels", code)
		}
		if re.Error() != string(code)+": because" {
			t.Errorf("%s: Error() = %q", code, re.Error())
		}
	}
	if re := reject(events.CodeSchema, "x"); !isErr(re, ErrRejected) || isErr(re, ErrNotCustodian) {
		t.Error("a schema refusal matches the wrong sentinels")
	}
}

func isErr(re *RuleError, target error) bool {
	for _, e := range re.Unwrap() {
		if e == target {
			return true
		}
	}
	return false
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// sameDevice compares two device states field by field.
func sameDevice(a, b *Device) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestProofErrorsPrintHex: a proof that leads to another root names both
// roots in hex (the Merkle library prints them as lists of decimal bytes),
// for inclusion and consistency proofs alike, and still matches the
// library's error.
func TestProofErrorsPrintHex(t *testing.T) {
	a, b := []byte("leaf a"), []byte("leaf b")
	ha, hb := LeafHash(a), LeafHash(b)
	root2 := Hasher.HashChildren(ha, hb)
	wrong := bytes.Repeat([]byte{0xee}, 32)
	for name, err := range map[string]error{
		"inclusion":   VerifyInclusion(a, 0, 2, [][]byte{hb}, wrong),
		"consistency": VerifyConsistency(1, 2, [][]byte{hb}, ha, wrong),
	} {
		var rm proof.RootMismatchError
		if err == nil || !errors.As(err, &rm) {
			t.Fatalf("%s: %v, want a root mismatch", name, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, hex.EncodeToString(wrong)) || !strings.Contains(msg, hex.EncodeToString(root2)) || strings.Contains(msg, "[") {
			t.Errorf("%s: %q does not name both roots in hex", name, msg)
		}
	}
	if err := VerifyInclusion(a, 0, 2, [][]byte{hb}, root2); err != nil {
		t.Fatalf("a good proof: %v", err)
	}
}
