package dps

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// serviceAPI authenticates a service API request (SAS token, api-version)
// and runs next.
func (e *Emulator) serviceAPI(w http.ResponseWriter, r *http.Request, next func()) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, "the Authorization header with a SharedAccessSignature token is required")
		return
	}
	tok, err := parseSAS(auth)
	if err != nil {
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, err.Error())
		return
	}
	host := e.cfg.ServiceHost
	if host == "" {
		host = r.Host
	}
	if err := tok.verify(e.cfg.SASKeyName, e.cfg.SASKey, host, e.now()); err != nil {
		e.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, err.Error())
		return
	}
	if _, ok := e.apiVersion(w, r); !ok {
		return
	}
	next()
}

// ifMatch applies an If-Match header to a resource whose current etag is
// current (exists false: there is none). It writes the 412 itself. put
// marks a create-or-update: as in DPS, one without If-Match only creates,
// and is refused with 409 when the resource exists (send its etag, or *,
// to replace it).
func (e *Emulator) ifMatch(w http.ResponseWriter, r *http.Request, current string, exists, put bool) bool {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		if put && exists {
			e.fail(w, r, http.StatusConflict, CodeConflict, "the resource already exists: to replace it, send If-Match with its etag (or *)")
			return false
		}
		return true
	}
	if h == "*" {
		if exists {
			return true
		}
		e.fail(w, r, http.StatusPreconditionFailed, CodePreconditionFailed, "If-Match: * but the resource does not exist")
		return false
	}
	for _, t := range strings.Split(h, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if exists && strings.Trim(t, `"`) == current {
			return true
		}
	}
	if !exists {
		e.fail(w, r, http.StatusPreconditionFailed, CodePreconditionFailed, "If-Match names an etag but the resource does not exist")
	} else {
		e.fail(w, r, http.StatusPreconditionFailed, CodePreconditionFailed,
			fmt.Sprintf("If-Match %s does not match the current etag %q: the resource changed since it was read", h, current))
	}
	return false
}

func setETag(w http.ResponseWriter, etag string) {
	w.Header().Set("ETag", `"`+etag+`"`)
}

// parseAttestation validates an enrollment's attestation and parses its
// certificates. group selects the enrollment-group rules (signing
// certificates only). It fills the certificates' info in place.
func (e *Emulator) parseAttestation(a *AttestationMechanism, group bool) (client, signing []*x509.Certificate, msg string) {
	switch a.Type {
	case AttestationX509:
	case AttestationTPM, AttestationSymmetricKey:
		return nil, nil, fmt.Sprintf("attestation type %q is not supported by this emulator; use \"x509\"", a.Type)
	default:
		return nil, nil, fmt.Sprintf("attestation type %q is unknown (want \"x509\")", a.Type)
	}
	if a.X509 == nil {
		return nil, nil, "attestation type x509 needs an x509 object"
	}
	if a.X509.CAReferences != nil {
		return nil, nil, "x509.caReferences are not supported by this emulator; give the certificate in signingCertificates"
	}
	parse := func(set *X509Certificates, field string) ([]*x509.Certificate, string) {
		if set == nil {
			return nil, ""
		}
		if set.Primary == nil {
			return nil, fmt.Sprintf("x509.%s needs a primary certificate", field)
		}
		var out []*x509.Certificate
		for _, slot := range []struct {
			name string
			c    *X509CertificateWithInfo
		}{{"primary", set.Primary}, {"secondary", set.Secondary}} {
			if slot.c == nil {
				continue
			}
			c, err := ParseCertificate(slot.c.Certificate)
			if err != nil {
				return nil, fmt.Sprintf("x509.%s.%s.certificate: %v", field, slot.name, err)
			}
			slot.c.Info = CertificateInfo(c)
			out = append(out, c)
		}
		return out, ""
	}
	if group {
		if a.X509.ClientCertificates != nil {
			return nil, nil, "an enrollment group takes x509.signingCertificates, not clientCertificates"
		}
		if a.X509.SigningCertificates == nil {
			return nil, nil, "an enrollment group needs x509.signingCertificates"
		}
	} else if a.X509.ClientCertificates == nil && a.X509.SigningCertificates == nil {
		return nil, nil, "an individual enrollment needs x509.clientCertificates (or signingCertificates)"
	}
	client, msg = parse(a.X509.ClientCertificates, "clientCertificates")
	if msg != "" {
		return nil, nil, msg
	}
	signing, msg = parse(a.X509.SigningCertificates, "signingCertificates")
	if msg != "" {
		return nil, nil, msg
	}
	for _, c := range signing {
		if !c.IsCA {
			return nil, nil, fmt.Sprintf("signing certificate %q is not a CA certificate", c.Subject.String())
		}
	}
	return client, signing, ""
}

// checkAllocation validates an enrollment's allocation settings.
func (e *Emulator) checkAllocation(policy, hostName string, iotHubs []string, status string) string {
	switch status {
	case ProvisioningEnabled, ProvisioningDisabled:
	default:
		return fmt.Sprintf("provisioningStatus %q is neither \"enabled\" nor \"disabled\"", status)
	}
	for _, h := range iotHubs {
		if !slices.Contains(e.hubs, h) {
			return fmt.Sprintf("iotHubs lists %q, which is not linked to this service (linked: %s)", h, strings.Join(e.hubs, ", "))
		}
	}
	if hostName != "" && !slices.Contains(e.hubs, hostName) {
		return fmt.Sprintf("iotHubHostName %q is not linked to this service", hostName)
	}
	switch policy {
	case "", AllocationHashed, AllocationGeoLatency:
	case AllocationStatic:
		if hostName == "" && len(iotHubs) != 1 {
			return "allocationPolicy static needs iotHubHostName or exactly one hub in iotHubs"
		}
	case AllocationCustom:
		return "allocationPolicy custom (webhooks) is not supported by this emulator"
	default:
		return fmt.Sprintf("allocationPolicy %q is unknown", policy)
	}
	return ""
}

// enrollmentFields are the fields that a PUT of an individual enrollment
// and of an enrollment group share.
type enrollmentFields struct {
	idName       string // the ID's JSON name, for messages
	id, status   *string
	att          *AttestationMechanism
	policy, host string
	hubs         []string
	group        bool
}

// checkEnrollment validates a written enrollment or group against the path's
// ID, filling in the ID and the provisioning status when absent, and parses
// its attestation. It answers the request itself when the body is refused.
func (e *Emulator) checkEnrollment(w http.ResponseWriter, r *http.Request, pathID string, f enrollmentFields) (client, signing []*x509.Certificate, ok bool) {
	if *f.id == "" {
		*f.id = pathID
	}
	if *f.id != pathID {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRequest,
			fmt.Sprintf("the body's %s %q differs from the path's %q", f.idName, *f.id, pathID))
		return nil, nil, false
	}
	if *f.status == "" {
		*f.status = ProvisioningEnabled
	}
	client, signing, msg := e.parseAttestation(f.att, f.group)
	if msg == "" {
		msg = e.checkAllocation(f.policy, f.host, f.hubs, *f.status)
	}
	if msg != "" {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRequest, msg)
		return nil, nil, false
	}
	return client, signing, true
}

// enrollment serves /enrollments/{registrationId}.
func (e *Emulator) enrollment(w http.ResponseWriter, r *http.Request, id string) {
	if !ValidRegistrationID(id) {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRegistrationID, fmt.Sprintf("registration ID %q is invalid", id))
		return
	}
	switch r.Method {
	case http.MethodGet:
		e.mu.Lock()
		rec := e.enrollments[id]
		var out IndividualEnrollment
		if rec != nil {
			out = e.enrollmentView(rec)
		}
		e.mu.Unlock()
		if rec == nil {
			e.fail(w, r, http.StatusNotFound, CodeEnrollmentNotFound, fmt.Sprintf("individual enrollment %q not found", id))
			return
		}
		setETag(w, out.ETag)
		writeJSON(w, http.StatusOK, out)

	case http.MethodPut:
		var in IndividualEnrollment
		if !e.readJSON(w, r, maxServiceBody, &in) {
			return
		}
		client, signing, ok := e.checkEnrollment(w, r, id, enrollmentFields{
			idName: "registrationId", id: &in.RegistrationID, status: &in.ProvisioningStatus, att: &in.Attestation,
			policy: in.AllocationPolicy, host: in.IoTHubHostName, hubs: in.IoTHubs,
		})
		if !ok {
			return
		}
		now := e.now().UTC()
		e.mu.Lock()
		old := e.enrollments[id]
		var oldETag string
		if old != nil {
			oldETag = old.e.ETag
		}
		if !e.ifMatch(w, r, oldETag, old != nil, true) {
			e.mu.Unlock()
			return
		}
		in.RegistrationState = nil
		in.CreatedDateTimeUTC, in.LastUpdatedDateTimeUTC = now, now
		if old != nil {
			in.CreatedDateTimeUTC = old.e.CreatedDateTimeUTC
		}
		in.ETag = newETag()
		rec := &enrollmentRecord{e: in, client: client, signing: signing}
		e.enrollments[id] = rec
		out := e.enrollmentView(rec)
		e.mu.Unlock()
		e.log.Info("dps: individual enrollment written", "registrationId", id, "provisioningStatus", in.ProvisioningStatus, "created", old == nil)
		setETag(w, out.ETag)
		writeJSON(w, http.StatusOK, out)

	case http.MethodDelete:
		e.mu.Lock()
		old := e.enrollments[id]
		if old == nil {
			e.mu.Unlock()
			e.fail(w, r, http.StatusNotFound, CodeEnrollmentNotFound, fmt.Sprintf("individual enrollment %q not found", id))
			return
		}
		if !e.ifMatch(w, r, old.e.ETag, true, false) {
			e.mu.Unlock()
			return
		}
		delete(e.enrollments, id)
		if reg := e.registrations[id]; reg != nil && reg.groupID == "" {
			delete(e.registrations, id)
		}
		e.mu.Unlock()
		e.log.Info("dps: individual enrollment deleted", "registrationId", id)
		w.WriteHeader(http.StatusNoContent)

	default:
		e.method(w, r, http.MethodGet, http.MethodPut, http.MethodDelete)
	}
}

// enrollmentView is an enrollment as the service returns it, with its
// registration state. The caller holds e.mu.
func (e *Emulator) enrollmentView(rec *enrollmentRecord) IndividualEnrollment {
	out := rec.e
	if reg := e.registrations[out.RegistrationID]; reg != nil && reg.groupID == "" {
		st := reg.state
		st.X509 = nil
		out.RegistrationState = &st
	}
	return out
}

// enrollmentGroup serves /enrollmentGroups/{enrollmentGroupId}.
func (e *Emulator) enrollmentGroup(w http.ResponseWriter, r *http.Request, id string) {
	if !groupIDRE.MatchString(id) {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRegistrationID, fmt.Sprintf("enrollment group ID %q is invalid", id))
		return
	}
	switch r.Method {
	case http.MethodGet:
		e.mu.Lock()
		rec := e.groups[id]
		e.mu.Unlock()
		if rec == nil {
			e.fail(w, r, http.StatusNotFound, CodeEnrollmentNotFound, fmt.Sprintf("enrollment group %q not found", id))
			return
		}
		setETag(w, rec.g.ETag)
		writeJSON(w, http.StatusOK, rec.g)

	case http.MethodPut:
		var in EnrollmentGroup
		if !e.readJSON(w, r, maxServiceBody, &in) {
			return
		}
		_, signing, ok := e.checkEnrollment(w, r, id, enrollmentFields{
			idName: "enrollmentGroupId", id: &in.EnrollmentGroupID, status: &in.ProvisioningStatus, att: &in.Attestation,
			policy: in.AllocationPolicy, host: in.IoTHubHostName, hubs: in.IoTHubs, group: true,
		})
		if !ok {
			return
		}
		now := e.now().UTC()
		e.mu.Lock()
		old := e.groups[id]
		var oldETag string
		if old != nil {
			oldETag = old.g.ETag
		}
		if !e.ifMatch(w, r, oldETag, old != nil, true) {
			e.mu.Unlock()
			return
		}
		in.CreatedDateTimeUTC, in.LastUpdatedDateTimeUTC = now, now
		if old != nil {
			in.CreatedDateTimeUTC = old.g.CreatedDateTimeUTC
		}
		in.ETag = newETag()
		e.groups[id] = &groupRecord{g: in, signing: signing}
		e.mu.Unlock()
		e.log.Info("dps: enrollment group written", "enrollmentGroupId", id, "provisioningStatus", in.ProvisioningStatus, "created", old == nil)
		setETag(w, in.ETag)
		writeJSON(w, http.StatusOK, in)

	case http.MethodDelete:
		e.mu.Lock()
		old := e.groups[id]
		if old == nil {
			e.mu.Unlock()
			e.fail(w, r, http.StatusNotFound, CodeEnrollmentNotFound, fmt.Sprintf("enrollment group %q not found", id))
			return
		}
		if !e.ifMatch(w, r, old.g.ETag, true, false) {
			e.mu.Unlock()
			return
		}
		delete(e.groups, id)
		for regID, reg := range e.registrations {
			if reg.groupID == id {
				delete(e.registrations, regID)
			}
		}
		e.mu.Unlock()
		e.log.Info("dps: enrollment group deleted", "enrollmentGroupId", id)
		w.WriteHeader(http.StatusNoContent)

	default:
		e.method(w, r, http.MethodGet, http.MethodPut, http.MethodDelete)
	}
}

// registrationState serves /registrations/{registrationId}.
func (e *Emulator) registrationState(w http.ResponseWriter, r *http.Request, id string) {
	if !ValidRegistrationID(id) {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRegistrationID, fmt.Sprintf("registration ID %q is invalid", id))
		return
	}
	switch r.Method {
	case http.MethodGet:
		e.mu.Lock()
		rec := e.registrations[id]
		var st RegistrationState
		if rec != nil {
			st = rec.state
		}
		e.mu.Unlock()
		if rec == nil {
			e.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("registration %q not found", id))
			return
		}
		st.X509 = nil // DeviceRegistrationState has no x509
		setETag(w, st.ETag)
		writeJSON(w, http.StatusOK, st)

	case http.MethodDelete:
		e.mu.Lock()
		rec := e.registrations[id]
		if rec == nil {
			e.mu.Unlock()
			e.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("registration %q not found", id))
			return
		}
		if !e.ifMatch(w, r, rec.state.ETag, true, false) {
			e.mu.Unlock()
			return
		}
		delete(e.registrations, id)
		e.mu.Unlock()
		e.log.Info("dps: registration deleted", "registrationId", id)
		w.WriteHeader(http.StatusNoContent)

	default:
		e.method(w, r, http.MethodGet, http.MethodDelete)
	}
}
