package events

// The catalogue of rejection codes: every refusal a partner or a device sees
// names one, with a sentence about the case. The ledger refuses events
// ([Receipt].Code, on the rejections subject); an operator's gate refuses
// enrollments ([Refused].Rule in enrollment.refused, and the gate's
// registrationState.errorCode). [Rejections] is the one table of them:
// the ledger, the gate, the CLI and the tables in docs/design are read
// from it (TestDocTables checks the docs; go test ./events -update
// rewrites them).

// Code is a rejection code of the ledger.
type Code string

// The ledger's rejection codes.
const (
	CodeMalformed      Code = "malformed"
	CodeSchema         Code = "schema"
	CodeSubject        Code = "subject-mismatch"
	CodeUnknownPartner Code = "unknown-partner"
	CodePartnerRevoked Code = "partner-revoked"
	CodeBadSignature   Code = "bad-signature"
	CodeWrongRole      Code = "wrong-role"
	CodeBadCertificate Code = "bad-certificate"
	CodeAlreadyExists  Code = "already-exists"
	CodeUnknownDevice  Code = "unknown-device"
	CodeEKChain        Code = "ek-chain"
	CodeIAKCertificate Code = "iak-certificate"
	CodeDeviceID       Code = "device-id"
	CodeNotCustodian   Code = "not-custodian"
	CodeRecipient      Code = "unregistered-recipient"
	CodeNoPendingOffer Code = "no-pending-offer"
	CodeNotRecipient   Code = "not-recipient"
	CodeEquivocation   Code = "equivocation"
	CodeEvidence       Code = "bad-evidence"
	CodeCounters       Code = "counters-backwards"
	CodeFlagged        Code = "device-flagged"
	CodeDecommissioned Code = "device-decommissioned"
	CodeNotFlagged     Code = "not-flagged"
	CodeFlagReport     Code = "flag-report"
	CodeDuplicateID    Code = "duplicate-event-id"
	CodeManifest       Code = "manifest"
	CodeInternal       Code = "internal"
)

// The gate's rules, in the order it checks them: a refusal names the first
// that failed ([Refused].Rule).
const (
	RuleChallenge      = "challenge"
	RuleEKIdentity     = "ek-identity"
	RuleCustodyChain   = "custody-chain"
	RuleEKChain        = "ek-chain"
	RuleActivation     = "activation"
	RuleQuote          = "quote"
	RuleCounters       = "counters"
	RuleDecommissioned = "decommissioned"
	RuleFlagged        = "flagged"
	RuleStages         = "stages"
	RulePCRPolicy      = "pcr-policy"
	RuleReenrollment   = "reenrollment"
	RuleLDevID         = "ldevid"
	RuleCSR            = "csr"
	RuleDPS            = "dps"
	RuleLedger         = "ledger"
)

// Parts that refuse.
const (
	ByLedger = "ledger" // refuses events: Receipt.Code
	ByGate   = "gate"   // refuses enrollments: Refused.Rule, registrationState.errorCode
)

// Rejection is one row of the catalogue.
type Rejection struct {
	By   string `json:"by"`   // ByLedger or ByGate
	Code string `json:"code"` // a ledger Code, or a gate rule
	// ErrorCode is the gate's DPS-shaped registrationState.errorCode (six
	// digits, the first three an HTTP status); 0 for the ledger.
	ErrorCode int    `json:"errorCode,omitempty"`
	Meaning   string `json:"meaning"` // one line: what was wrong
}

// Rejections is the catalogue: the ledger's codes, then the gate's rules in
// the order it checks them.
var Rejections = []Rejection{
	{ByLedger, string(CodeMalformed), 0, "not a well-formed custody envelope/statement (also: a gate registered without an operator)"},
	{ByLedger, string(CodeSchema), 0, "fails its kind's JSON Schema"},
	{ByLedger, string(CodeSubject), 0, "the NATS subject does not name the signer and target"},
	{ByLedger, string(CodeUnknownPartner), 0, "signer, or the partner to revoke, is not in the registry"},
	{ByLedger, string(CodePartnerRevoked), 0, "signer revoked before this event (or already revoked)"},
	{ByLedger, string(CodeBadSignature), 0, "the signature does not verify with the registered key (the consortium CA's for registry events)"},
	{ByLedger, string(CodeWrongRole), 0, "the signer's role may not publish this kind; a gate not enrolling for that operator"},
	{ByLedger, string(CodeBadCertificate), 0, "a partner certificate does not chain to the consortium CA, is not valid at the event's integrated time, or does not match the event"},
	{ByLedger, string(CodeAlreadyExists), 0, "a harmless repeat: device already manufactured, partner already registered, the same offer while it is pending (names its log index), offer already accepted by its recipient"},
	{ByLedger, string(CodeUnknownDevice), 0, "no `tpm.manufactured` for the device"},
	{ByLedger, string(CodeEKChain), 0, "EK certificate does not parse, chain, or certify the EK"},
	{ByLedger, string(CodeIAKCertificate), 0, "IAK certificate does not chain, match the EK, or certify the IAK"},
	{ByLedger, string(CodeDeviceID), 0, "device ID is not SHA-256 of the EK; refusal names another registration"},
	{ByLedger, string(CodeNotCustodian), 0, "signer is not the current custodian (or may not clear, or withdraw an offer it did not make)"},
	{ByLedger, string(CodeRecipient), 0, "offer to a party not registered, revoked, or a gate"},
	{ByLedger, string(CodeNoPendingOffer), 0, "acceptance or withdrawal without a matching pending offer"},
	{ByLedger, string(CodeNotRecipient), 0, "acceptance by someone other than the named recipient (also of an offer its recipient already accepted)"},
	{ByLedger, string(CodeEquivocation), 0, "an offer to another recipient while one is pending (a double hand-off): logged as evidence and the device flagged, not rejected"},
	{ByLedger, string(CodeEvidence), 0, "quote missing, not by the IAK, not over this event, or PCRs differ from the recorded ones"},
	{ByLedger, string(CodeCounters), 0, "TPM resetCount, restartCount or clock behind the device's history"},
	{ByLedger, string(CodeFlagged), 0, "`device.enrolled` for a flagged device"},
	{ByLedger, string(CodeDecommissioned), 0, "any event after `device.decommissioned`"},
	{ByLedger, string(CodeNotFlagged), 0, "`device.cleared` for a device without a flag"},
	{ByLedger, string(CodeFlagReport), 0, "`device.flagged` by a registered partner outside the device's custody: logged as evidence (a report the parties see), the device's state unchanged, not rejected"},
	{ByLedger, string(CodeDuplicateID), 0, "the signer already logged another event with this event ID (the same envelope again is answered from the log)"},
	{ByLedger, string(CodeManifest), 0, "a shipment's manifest does not hash to the root its statement signs, lists a device twice, or holds more than 10,000 devices; an acceptance or withdrawal lists devices its offer did not"},
	{ByLedger, string(CodeInternal), 0, "in the catalogue, unused by ingest: a storage failure retries the batch instead"},

	{ByGate, RuleChallenge, 401101, "no live challenge for this registration (one try per challenge, 2 minutes)"},
	{ByGate, RuleEKIdentity, 401102, "the EK is not the one the challenge was encrypted to, or not the one the TPM vendor recorded (the registration ID is SHA-256(EK): checked by the first call)"},
	{ByGate, RuleCustodyChain, 403103, "the ledger does not know the device (`tpm.manufactured`), its last custodian is not this operator, or a hand-off is pending"},
	{ByGate, RuleEKChain, 401103, "the recorded EK certificate does not chain to the TPM trust bundle (cross-signed paths)"},
	{ByGate, RuleActivation, 401104, "the SAS token is not keyed with the secret of a live challenge, which only the TPM holding the EK *and* the IAK it named could recover; or that IAK is not the recorded one"},
	{ByGate, RuleQuote, 401105, "no fresh quote by the IAK over the challenge's nonce"},
	{ByGate, RuleCounters, 401106, "the quote's clock, resetCount or restartCount is behind the device's history"},
	{ByGate, RuleDecommissioned, 403101, "the device was decommissioned"},
	{ByGate, RuleFlagged, 403102, "the device is flagged (lost, stolen, RMA, compromised, equivocation)"},
	{ByGate, RuleStages, 403104, "a stage the policy requires was not recorded"},
	{ByGate, RulePCRPolicy, 403105, "a policy PCR neither equals the EMS-recorded value nor is on the operator's allow-list"},
	{ByGate, RuleReenrollment, 403106, "(only with `refuseReenrollment`) the device is enrolled already"},
	{ByGate, RuleLDevID, 401107, "the LDevID key is not a TPM key certified by the IAK (TPM2_Certify over the nonce)"},
	{ByGate, RuleCSR, 400101, "(2025-07-01-preview) the CSR is not signed by that key, or its CN is not the registration ID"},
	{ByGate, RuleDPS, 503101, "DPS did not accept the individual enrollment"},
	{ByGate, RuleLedger, 503102, "the ledger did not accept `device.enrolled` (the LDevID is revoked and the DPS enrollment disabled at once)"},
}

// LookupRejection returns the catalogue's row for code as refused by by
// (ByLedger or ByGate; the two parts share the name ek-chain).
func LookupRejection(by, code string) (Rejection, bool) {
	for _, r := range Rejections {
		if r.By == by && r.Code == code {
			return r, true
		}
	}
	return Rejection{}, false
}

// RuleErrorCode returns the gate's DPS-shaped errorCode for rule, or 0 for a
// rule not in the catalogue.
func RuleErrorCode(rule string) int {
	r, _ := LookupRejection(ByGate, rule)
	return r.ErrorCode
}
