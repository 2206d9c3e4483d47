package events

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The authorisation matrix: which identity may do what, over HTTP and NATS,
// as one table (Permissions). custodyd's HTTP router admits each route by
// its row (services/node), the NATS users' permissions are written from
// the same rows (services/node.PartnerPermissions), and the ledger's
// custody rules decide what only the ledger's state can (who holds a
// device). docs/design/threat-model.md shows the table, generated from it.

// Action is something a caller asks of Custody.
type Action string

// Actions.
const (
	ActReadProofs       Action = "read-proofs"        // checkpoints, inclusion and consistency proofs, leaves, the Rekor API, CRL, OCSP
	ActEnrollDevice     Action = "enroll-device"      // a device's first-boot registration at the gate
	ActCallStation      Action = "call-station"       // any call of a partner's station API
	ActCallAgent        Action = "call-agent"         // any call of a device agent's factory API (custody-agent serve)
	ActPublishEvent     Action = "publish-event"      // publish an event of a kind (KindRoles) on the partner's own subject
	ActReadReceipt      Action = "read-receipt"       // the ledger's answer to an event
	ActReadHistory      Action = "read-history"       // a device's envelopes, ID, kinds and counterparties
	ActReadPending      Action = "read-pending"       // offers waiting for a partner
	ActReadDecisions    Action = "read-decisions"     // a gate's enrollment decisions
	ActRevokeLDevID     Action = "revoke-ldevid"      // revoke an LDevID the gate issued
	ActRegisterPartner  Action = "register-partner"   // partner.registered, partner.revoked
	ActReadCheckpoints  Action = "read-checkpoints"   // the checkpoint feed and bucket on NATS
	ActChangeDeviceFlag Action = "change-device-flag" // device.flagged / device.cleared that change a device's state
)

// Who names whose identity an action needs.
type Who string

// Who may act.
const (
	// WhoAnyone admits every caller, anonymous ones included.
	WhoAnyone Who = "anyone"
	// WhoDevice admits anonymous TLS callers: a device at first boot has no
	// partner identity and proves itself with its TPM (credential
	// activation and a quote), which the gate checks.
	WhoDevice Who = "device"
	// WhoSelf admits only the partner the resource belongs to: a station's
	// own partner, an event's publisher, an offer's recipient (or the
	// recipient operator's gate).
	WhoSelf Who = "self"
	// WhoCustodyParty admits a party of the device's custody: its
	// custodian, the recipient of its pending offer, the operator
	// enrolling it (through its gate). Partners that published earlier
	// entries of the device read those entries only.
	WhoCustodyParty Who = "custody-party"
	// WhoGateOperator admits a gate's operator and the gate itself.
	WhoGateOperator Who = "gate-operator"
	// WhoRoles admits a partner whose registered role is in Roles.
	WhoRoles Who = "roles"
	// WhoConsortium admits only the consortium CA's key.
	WhoConsortium Who = "consortium"
)

// Permission is one row of the authorisation matrix.
type Permission struct {
	Action Action
	Who    Who
	// Roles restricts the row to partners of these roles (nil: any role).
	Roles []string
	// HTTP and NATS say where the row is enforced ("" for nowhere).
	HTTP, NATS string
	// Publish and Subscribe are the NATS subjects the row grants a
	// partner it admits; {partner} stands for the partner's own name.
	// services/node writes each partner's NATS permissions from them
	// (PartnerPermissions), so the NATS users are this table.
	Publish, Subscribe []string
	// Rule is the sentence a refusal names.
	Rule string
}

// Permissions is the authorisation matrix.
var Permissions = []Permission{
	{Action: ActReadProofs, Who: WhoAnyone,
		HTTP: "/ledger/v1/log/*, /api/v1/* (Rekor), /gate/v1/crl, /gate/v1/ocsp, /healthz",
		Rule: "proofs are public: they disclose no device, partner or kind beyond what a leaf holds"},
	{Action: ActEnrollDevice, Who: WhoDevice,
		HTTP: "/gate/{idScope}/registrations/*",
		Rule: "a device enrolls anonymously over TLS and proves itself with its TPM"},
	{Action: ActCallStation, Who: WhoSelf,
		HTTP: "/stations/{partner}/*",
		Rule: "a station's API answers only its own partner's identities"},
	{Action: ActCallAgent, Who: WhoRoles, Roles: StationRoles,
		HTTP: "custody-agent serve: /v1/* (the device's factory API, its own listener)",
		Rule: "a device agent answers only the stations of the supply chain's partners"},
	{Action: ActPublishEvent, Who: WhoRoles, Roles: []string{RoleTPMVendor, RoleODM, RoleOEM, RoleEMS, RoleOperator, RoleGate},
		NATS:    "publish custody.v1.events.{partner}.> (own subject only); the kind by role (KindRoles, checked by the ledger)",
		Publish: []string{EventsPrefix + ".{partner}.>"},
		Rule:    "a partner publishes only on its own subject, only the kinds its role may"},
	{Action: ActReadReceipt, Who: WhoSelf,
		HTTP:      "/ledger/v1/events/{digest}",
		NATS:      "subscribe custody.v1.receipts.{partner}.>, custody.v1.rejects.{partner}.>, its own inbox",
		Publish:   []string{StatusSubject},
		Subscribe: []string{ReceiptsPrefix + ".{partner}.>", RejectPrefix + ".{partner}.>", InboxPrefix("{partner}") + ".>"},
		Rule:      "only an event's publisher reads the ledger's answer to it"},
	{Action: ActReadHistory, Who: WhoCustodyParty,
		HTTP:    "/ledger/v1/devices/{id}/provenance, envelopes in /ledger/v1/log/entries/{index}, a shipment's manifest in /ledger/v1/shipments/{digest} (its sender and recipient)",
		NATS:    "custody.v1.ledger.provenance, custody.v1.ledger.shipment (with a read token)",
		Publish: []string{LedgerAPIPrefix + ".>"},
		Rule:    "only a party of the device's custody reads its history"},
	{Action: ActReadPending, Who: WhoSelf,
		HTTP: "/ledger/v1/partners/{name}/pending",
		Rule: "only the recipient (or its operator's gate) reads its pending offers"},
	{Action: ActReadDecisions, Who: WhoGateOperator,
		HTTP: "/gate/v1/decisions, /gate/v1/policy",
		Rule: "only the gate's operator and the gate read its enrollment decisions and policy"},
	{Action: ActRevokeLDevID, Who: WhoGateOperator,
		HTTP: "/gate/v1/revocations",
		Rule: "only the gate's operator revokes an LDevID it issued"},
	{Action: ActRegisterPartner, Who: WhoConsortium,
		NATS:    "publish custody.v1.events.consortium.> (the consortium's user); signed by the consortium CA key",
		Publish: []string{EventsPrefix + ".{partner}.>"},
		Rule:    "only the consortium registers and revokes partners"},
	{Action: ActReadCheckpoints, Who: WhoRoles, Roles: []string{RoleTPMVendor, RoleODM, RoleOEM, RoleEMS, RoleOperator, RoleGate, RoleConsortium},
		NATS:      "subscribe custody.v1.checkpoints; read (never write) the CUSTODY_CHECKPOINTS bucket (stream info and direct gets only)",
		Publish:   []string{"$JS.API.STREAM.INFO.KV_" + CheckpointBucket, "$JS.API.DIRECT.GET.KV_" + CheckpointBucket + ".>"},
		Subscribe: []string{CheckpointTopic},
		Rule:      "partners read checkpoints; only the ledger writes them"},
	{Action: ActChangeDeviceFlag, Who: WhoCustodyParty,
		NATS: "device.flagged, device.cleared (checked by the ledger)",
		Rule: "only a party of the device's custody changes its state; anyone else's flag is a report"},
}

// Admits reports whether the row admits some partner of role at all
// (before any owner check): what a partner's NATS user is granted.
func (p Permission) Admits(role string) bool {
	switch p.Who {
	case WhoDevice:
		return false
	case WhoConsortium:
		return role == RoleConsortium
	}
	return len(p.Roles) == 0 || slices.Contains(p.Roles, role)
}

// NATSSubjects returns what the matrix lets partner, of role, publish and
// subscribe to on NATS.
func NATSSubjects(partner, role string) (publish, subscribe []string) {
	for _, p := range Permissions {
		if !p.Admits(role) {
			continue
		}
		for _, s := range p.Publish {
			publish = append(publish, strings.ReplaceAll(s, "{partner}", partner))
		}
		for _, s := range p.Subscribe {
			subscribe = append(subscribe, strings.ReplaceAll(s, "{partner}", partner))
		}
	}
	return publish, subscribe
}

// PermissionFor returns the matrix row of an action.
func PermissionFor(a Action) (Permission, bool) {
	i := slices.IndexFunc(Permissions, func(p Permission) bool { return p.Action == a })
	if i < 0 {
		return Permission{}, false
	}
	return Permissions[i], true
}

// Authorisation errors: ErrAuthRequired for an anonymous caller where an
// identity is needed (HTTP 401), ErrNotPermitted for an identity the row
// does not admit (HTTP 403).
var (
	ErrAuthRequired = errors.New("this call needs a partner identity (mTLS client certificate)")
	ErrNotPermitted = errors.New("the caller's identity may not do this")
)

// StationRoles are the roles that run stations and so call device agents:
// the TPM vendor, ODMs, OEMs, EMSs and operators. A gate never calls an
// agent (the device calls the gate at first boot), nor does the
// consortium.
var StationRoles = []string{RoleTPMVendor, RoleODM, RoleOEM, RoleEMS, RoleOperator}

// Principal is a caller as the matrix sees it: a proven partner's name
// and registered role ("" and "" for anonymous).
type Principal struct {
	Name, Role string
}

// Admit decides what can be decided before a resource is read. owners are
// the partners the resource belongs to when the route names them (a
// station's partner; a gate and its operator); none when only the resource
// itself tells (an event's publisher, a device's custodians), which the
// handler then checks. The error wraps ErrAuthRequired or ErrNotPermitted
// and names the row's rule.
func (p Permission) Admit(c Principal, owners ...string) error {
	switch p.Who {
	case WhoAnyone, WhoDevice:
		return nil
	}
	if c.Name == "" {
		return fmt.Errorf("%w: %s", ErrAuthRequired, p.Rule)
	}
	if len(p.Roles) > 0 && !slices.Contains(p.Roles, c.Role) {
		return fmt.Errorf("%w: %s (role %s)", ErrNotPermitted, p.Rule, c.Role)
	}
	switch p.Who {
	case WhoSelf, WhoGateOperator, WhoCustodyParty:
		if len(owners) > 0 && !slices.Contains(owners, c.Name) {
			return fmt.Errorf("%w: %s", ErrNotPermitted, p.Rule)
		}
	case WhoConsortium:
		if c.Name != ConsortiumPartner {
			return fmt.Errorf("%w: %s", ErrNotPermitted, p.Rule)
		}
	}
	return nil
}

// AdmitCertificate admits the caller of an mTLS connection by row p, for a
// server that has the consortium roots but no partner registry (a
// standalone station, a device agent): the caller is the partner its
// client certificate names if the certificate passes VerifyPartner at now,
// else anonymous. A certificate that does not verify is refused as
// unauthenticated, never served as anonymous. The error wraps
// ErrAuthRequired or ErrNotPermitted (see AdmitStatus).
func (p Permission) AdmitCertificate(cs *tls.ConnectionState, consortium *x509.CertPool, now time.Time, owners ...string) error {
	var who Principal
	if cs != nil && len(cs.PeerCertificates) > 0 {
		id, err := VerifyPartner(cs.PeerCertificates[0], consortium, now)
		if err != nil {
			return fmt.Errorf("%w: the client certificate is not a consortium partner's: %s", ErrAuthRequired, p.Rule)
		}
		who = Principal{Name: id.Name, Role: id.Role}
	}
	return p.Admit(who, owners...)
}

// AdmitStatus is the HTTP answer to an Admit error: 401 and
// "unauthenticated" for ErrAuthRequired, 403 and "forbidden" otherwise.
func AdmitStatus(err error) (status int, code string) {
	if errors.Is(err, ErrAuthRequired) {
		return 401, "unauthenticated"
	}
	return 403, "forbidden"
}

// KindRoles are the roles that may publish each kind of device event (the
// signer's registered role): the publish-event row of the matrix, by kind.
// The ledger refuses any other (code role). Partner registry events are
// the consortium's (register-partner); enrollment.refused is a gate's.
var KindRoles = map[string][]string{
	KindTPMManufactured:      {RoleTPMVendor},
	KindStageRecorded:        StationRoles,
	KindHandoffOffered:       StationRoles,
	KindHandoffAccepted:      StationRoles,
	KindHandoffWithdrawn:     StationRoles,
	KindShipmentOffered:      StationRoles,
	KindShipmentAccepted:     StationRoles,
	KindShipmentWithdrawn:    StationRoles,
	KindDeviceFlagged:        StationRoles,
	KindDeviceCleared:        {RoleOperator},
	KindDeviceEnrolled:       {RoleGate},
	KindDeviceDecommissioned: {RoleOperator},
	// A batch may be signed by any role that publishes device events; each
	// member is held to its own kind's roles.
	KindBatchSigned: append(slices.Clone(StationRoles), RoleGate),
}

// RoleMayPublish reports whether a partner of role may publish kind
// (KindRoles).
func RoleMayPublish(role, kind string) bool { return slices.Contains(KindRoles[kind], role) }
