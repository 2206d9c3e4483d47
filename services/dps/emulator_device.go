package dps

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"
)

// deviceAuth runs the checks every device API call shares and returns the
// client's certificate chain (leaf first).
func (e *Emulator) deviceAuth(w http.ResponseWriter, r *http.Request, scope, regID string) ([]*x509.Certificate, bool) {
	if scope != e.cfg.IDScope {
		e.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("ID scope %q is not served here", scope))
		return nil, false
	}
	if _, ok := e.apiVersion(w, r); !ok {
		return nil, false
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized,
			"a TLS client certificate is required: this service authenticates devices by X.509 only")
		return nil, false
	}
	if !ValidRegistrationID(regID) {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRegistrationID,
			fmt.Sprintf("registration ID %q is invalid: 1 to %d lowercase letters, digits and - . _ :, starting and ending with a letter or digit", regID, maxRegistrationID))
		return nil, false
	}
	chain := r.TLS.PeerCertificates
	if cn := chain[0].Subject.CommonName; cn != regID {
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized,
			fmt.Sprintf("the client certificate's subject CN %q does not equal the registration ID %q", cn, regID))
		return nil, false
	}
	return chain, true
}

// match is the enrollment that admitted a device.
type match struct {
	individual *enrollmentRecord
	group      *groupRecord
	signing    *x509.Certificate // the CA the device chained to, nil for an exact certificate match
}

func (m *match) provisioningStatus() string {
	if m.individual != nil {
		return m.individual.e.ProvisioningStatus
	}
	return m.group.g.ProvisioningStatus
}

func (m *match) name() string {
	if m.individual != nil {
		return "individual enrollment " + m.individual.e.RegistrationID
	}
	return "enrollment group " + m.group.g.EnrollmentGroupID
}

// authenticate finds the enrollment for regID that the client chain satisfies.
// An individual enrollment for regID takes precedence over all groups. The
// caller holds e.mu.
func (e *Emulator) authenticate(regID string, chain []*x509.Certificate, now time.Time) (*match, string) {
	leaf := chain[0]
	opts := x509.VerifyOptions{
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	chainsTo := func(ca *x509.Certificate) bool {
		o := opts
		o.Roots = x509.NewCertPool()
		o.Roots.AddCert(ca)
		_, err := leaf.Verify(o)
		return err == nil
	}

	if rec, ok := e.enrollments[regID]; ok {
		for _, c := range rec.client {
			if bytes.Equal(c.Raw, leaf.Raw) {
				if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
					return nil, fmt.Sprintf("the client certificate of individual enrollment %q is outside its validity period", regID)
				}
				return &match{individual: rec}, ""
			}
		}
		for _, c := range append(slices.Clone(rec.client), rec.signing...) {
			if c.IsCA && chainsTo(c) {
				return &match{individual: rec, signing: c}, ""
			}
		}
		return nil, fmt.Sprintf("the client certificate does not match individual enrollment %q: it is neither the enrollment's certificate nor issued under a CA certificate of it", regID)
	}

	ids := make([]string, 0, len(e.groups))
	for id := range e.groups {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var disabled *match
	for _, id := range ids {
		g := e.groups[id]
		for _, c := range g.signing {
			if !chainsTo(c) {
				continue
			}
			m := &match{group: g, signing: c}
			if g.g.ProvisioningStatus != ProvisioningDisabled {
				return m, ""
			}
			if disabled == nil {
				disabled = m
			}
		}
	}
	if disabled != nil {
		return disabled, ""
	}
	return nil, fmt.Sprintf("no enrollment admits this device: there is no individual enrollment for %q and the client certificate chains to no enrollment group's signing certificate (present the intermediates with the certificate)", regID)
}

// allowedHubs returns the hubs an enrollment may use, sorted.
func (e *Emulator) allowedHubs(policy, hostName string, iotHubs []string) []string {
	if policy == AllocationStatic {
		if hostName != "" {
			if slices.Contains(e.hubs, hostName) {
				return []string{hostName}
			}
			return nil
		}
	}
	if len(iotHubs) == 0 {
		return e.hubs
	}
	var out []string
	for _, h := range iotHubs {
		if slices.Contains(e.hubs, h) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

// hashHub picks a hub for regID: SHA-256 of the ID over the sorted hubs, so
// devices spread evenly and a device always hashes to the same hub.
func hashHub(regID string, hubs []string) string {
	h := sha256.Sum256([]byte(regID))
	return hubs[binary.BigEndian.Uint64(h[:8])%uint64(len(hubs))]
}

// assign decides the outcome of a registration for a matched device and
// records it. The caller holds e.mu.
func (e *Emulator) assign(m *match, regID string, leaf *x509.Certificate, now time.Time) RegistrationOperationStatus {
	state := RegistrationState{
		RegistrationID:         regID,
		CreatedDateTimeUTC:     now,
		LastUpdatedDateTimeUTC: now,
		ETag:                   newETag(),
		X509:                   &X509RegistrationResult{CertificateInfo: CertificateInfo(leaf)},
	}
	if m.group != nil {
		state.X509.EnrollmentGroupID = m.group.g.EnrollmentGroupID
	}
	if m.signing != nil {
		state.X509.SigningCertificateInfo = CertificateInfo(m.signing)
	}
	prev := e.registrations[regID]
	if prev != nil {
		state.CreatedDateTimeUTC = prev.state.CreatedDateTimeUTC
	}

	if m.provisioningStatus() == ProvisioningDisabled {
		state.Status = StatusDisabled
		state.ErrorCode = CodeEnrollmentDisabled
		state.ErrorMessage = m.name() + " is disabled"
		return RegistrationOperationStatus{Status: StatusDisabled, RegistrationState: &state}
	}

	var (
		policy, hostName, deviceID string
		iotHubs                    []string
		reprovision                *ReprovisionPolicy
	)
	if m.individual != nil {
		ie := m.individual.e
		policy, hostName, iotHubs, reprovision, deviceID = ie.AllocationPolicy, ie.IoTHubHostName, ie.IoTHubs, ie.ReprovisionPolicy, ie.DeviceID
	} else {
		g := m.group.g
		policy, hostName, iotHubs, reprovision = g.AllocationPolicy, g.IoTHubHostName, g.IoTHubs, g.ReprovisionPolicy
	}
	if deviceID == "" {
		deviceID = regID
	}
	if reprovision == nil {
		reprovision = &ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	}
	hubs := e.allowedHubs(policy, hostName, iotHubs)
	if len(hubs) == 0 {
		state.Status = StatusFailed
		state.ErrorCode = CodeNoHubAvailable
		state.ErrorMessage = m.name() + " allows no IoT hub linked to this service"
		return RegistrationOperationStatus{Status: StatusFailed, RegistrationState: &state}
	}

	switch {
	case prev == nil || prev.state.Status != StatusAssigned || prev.state.AssignedHub == "":
		state.AssignedHub, state.Substatus = hashHub(regID, hubs), SubstatusInitialAssignment
	case slices.Contains(hubs, prev.state.AssignedHub) || !reprovision.UpdateHubAssignment:
		state.AssignedHub, state.Substatus = prev.state.AssignedHub, SubstatusReprovisionedToInitialAssignment
	default:
		state.AssignedHub = hashHub(regID, hubs)
		state.Substatus = SubstatusDeviceDataReset
		if reprovision.MigrateDeviceData {
			state.Substatus = SubstatusDeviceDataMigrated
		}
	}
	state.DeviceID = deviceID
	state.Status = StatusAssigned
	rec := &registrationRecord{state: state}
	if m.group != nil {
		rec.groupID = m.group.g.EnrollmentGroupID
	}
	e.registrations[regID] = rec
	return RegistrationOperationStatus{Status: StatusAssigned, RegistrationState: &state}
}

// register serves PUT /{idScope}/registrations/{registrationId}/register.
func (e *Emulator) register(w http.ResponseWriter, r *http.Request, scope, regID string) {
	chain, ok := e.deviceAuth(w, r, scope, regID)
	if !ok {
		return
	}
	var body DeviceRegistration
	if !e.readJSON(w, r, maxDeviceBody, &body) {
		return
	}
	switch {
	case body.RegistrationID != "" && body.RegistrationID != regID:
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRequest,
			fmt.Sprintf("the body's registrationId %q differs from the path's %q", body.RegistrationID, regID))
		return
	case body.TPM != nil:
		e.fail(w, r, http.StatusBadRequest, CodeUnsupportedFeature, "TPM attestation is not supported by this emulator; authenticate with an X.509 client certificate")
		return
	case body.CSR != "":
		e.fail(w, r, http.StatusBadRequest, CodeUnsupportedFeature, "certificate issuance (csr) is not supported by this emulator")
		return
	}

	now := e.now().UTC()
	e.mu.Lock()
	m, why := e.authenticate(regID, chain, now)
	if m == nil {
		e.mu.Unlock()
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, why)
		return
	}
	result := e.assign(m, regID, chain[0], now)
	op := &operation{id: newOperationID(), registrationID: regID, leaf: chain[0].Raw, status: result}
	op.status.OperationID = op.id
	e.ops[op.id] = op
	e.opOrder = append(e.opOrder, op.id)
	if len(e.opOrder) > maxOperations {
		delete(e.ops, e.opOrder[0])
		e.opOrder = e.opOrder[1:]
	}
	e.mu.Unlock()

	st := result.RegistrationState
	e.log.Info("dps: registration", "registrationId", regID, "enrollment", m.name(), "status", result.Status,
		"assignedHub", st.AssignedHub, "substatus", st.Substatus, "operationId", op.id)
	writeJSON(w, http.StatusAccepted, RegistrationOperationStatus{OperationID: op.id, Status: StatusAssigning})
}

// operationStatus serves GET
// /{idScope}/registrations/{registrationId}/operations/{operationId}.
func (e *Emulator) operationStatus(w http.ResponseWriter, r *http.Request, scope, regID, opID string) {
	chain, ok := e.deviceAuth(w, r, scope, regID)
	if !ok {
		return
	}
	e.mu.Lock()
	op := e.ops[opID]
	var status RegistrationOperationStatus
	if op != nil {
		status = op.status
	}
	e.mu.Unlock()
	switch {
	case op == nil || op.registrationID != regID:
		e.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("operation %q of registration %q not found", opID, regID))
	case !bytes.Equal(op.leaf, chain[0].Raw):
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, "the operation was started with a different client certificate")
	default:
		writeJSON(w, http.StatusOK, status)
	}
}

// registrationStatus serves POST /{idScope}/registrations/{registrationId}
// (device registration status lookup).
func (e *Emulator) registrationStatus(w http.ResponseWriter, r *http.Request, scope, regID string) {
	chain, ok := e.deviceAuth(w, r, scope, regID)
	if !ok {
		return
	}
	var body DeviceRegistration
	if !e.readJSON(w, r, maxDeviceBody, &body) {
		return
	}
	now := e.now().UTC()
	e.mu.Lock()
	m, why := e.authenticate(regID, chain, now)
	var state RegistrationState
	rec := e.registrations[regID]
	if rec != nil {
		state = rec.state
	}
	e.mu.Unlock()
	switch {
	case m == nil:
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, why)
	case rec == nil:
		e.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("registration %q has no registration record", regID))
	default:
		writeJSON(w, http.StatusOK, state)
	}
}
