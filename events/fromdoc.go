package events

import (
	"encoding/base64"

	"github.com/custodyledger/custody/attest"
)

// statementFromDoc is ParseStatement for a payload decoded generically by
// schemas.DecodeSimple, which the ledger needs anyway (for the schema and
// the binding digest), so that the payload is parsed once: it builds the
// statement from the generic form instead of decoding the bytes again with
// encoding/json. (DecodeSimple refuses repeated keys, which encoding/json
// would merge into one struct.)
//
// It takes only the common case, and says so (ok false) otherwise: exactly
// the fields Statement names (keys matched exactly, no null, no unknown
// key), one of the kinds below, and every check of ParseStatement passing.
// Anything else, including every statement ParseStatement refuses, is left
// to ParseStatement, whose answer stands. FuzzStatementFromDoc holds the
// two to the same statement.
func statementFromDoc(doc any) (st *Statement, ok bool) {
	top, _ := doc.(map[string]any)
	if top == nil {
		return nil, false
	}
	s := &Statement{}
	for k, v := range top {
		switch k {
		case "_type":
			s.Type, ok = v.(string)
		case "predicateType":
			s.PredicateType, ok = v.(string)
		case "subject":
			s.Subject, ok = subjectsFromDoc(v)
		case "predicate":
			ok = predicateFromDoc(v, &s.Predicate)
		default:
			ok = false
		}
		if !ok {
			return nil, false
		}
	}
	// ParseStatement's checks, all of which must pass.
	p := &s.Predicate
	if s.Type != StatementType || s.PredicateType != PredicateTypePrefix+p.Kind || len(s.Subject) != 1 {
		return nil, false
	}
	isPartnerEvent := p.Kind == KindPartnerRegistered || p.Kind == KindPartnerRevoked
	if isPartnerEvent {
		if p.PartnerInfo == nil || s.Subject[0].Name != "partner:"+p.PartnerInfo.Name {
			return nil, false
		}
	} else if d := s.Device(); !ValidDeviceID(d) || s.Subject[0].Digest["sha256"] != d {
		return nil, false
	}
	var has bool
	switch p.Kind {
	case KindTPMManufactured:
		has = p.Manufactured != nil
	case KindStageRecorded:
		has = p.Stage != nil
	case KindHandoffOffered, KindHandoffAccepted, KindHandoffWithdrawn:
		has = p.Handoff != nil
	case KindDeviceFlagged, KindDeviceCleared, KindDeviceDecommissioned:
		has = p.Flag != nil
	case KindDeviceEnrolled:
		has = p.Enrolled != nil
	case KindEnrollmentRefused:
		has = p.Refused != nil
	case KindPartnerRegistered, KindPartnerRevoked:
		has = p.PartnerInfo != nil
	}
	if !has || !ValidPartnerName(p.Partner) {
		return nil, false
	}
	if !isPartnerEvent && p.Kind != KindEnrollmentRefused && p.Evidence == nil {
		return nil, false
	}
	return s, true
}

func subjectsFromDoc(v any) ([]Subject, bool) {
	a, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]Subject, len(a))
	for i, e := range a {
		m, _ := e.(map[string]any)
		if m == nil {
			return nil, false
		}
		for k, v := range m {
			switch k {
			case "name":
				out[i].Name, ok = v.(string)
			case "digest":
				out[i].Digest, ok = stringMap(v)
			default:
				ok = false
			}
			if !ok {
				return nil, false
			}
		}
	}
	return out, true
}

// fields calls set for each key of v, an object; false if v is not one or
// set refuses a key.
func fields(v any, set func(k string, v any) bool) bool {
	m, _ := v.(map[string]any)
	if m == nil {
		return false
	}
	for k, e := range m {
		if !set(k, e) {
			return false
		}
	}
	return true
}

func predicateFromDoc(v any, p *Predicate) bool {
	return fields(v, func(k string, v any) (ok bool) {
		switch k {
		case "kind":
			p.Kind, ok = v.(string)
		case "partner":
			p.Partner, ok = v.(string)
		case "eventId":
			p.EventID, ok = v.(string)
		case "time":
			var s string
			if s, ok = v.(string); ok {
				ok = p.Time.UnmarshalText([]byte(s)) == nil
			}
		case "manufactured":
			m := &Manufactured{}
			p.Manufactured, ok = m, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "ekCertificate":
					m.EKCertificate, ok = bytesOf(v)
				case "ekPublic":
					m.EKPublic, ok = bytesOf(v)
				case "iakPublic":
					m.IAKPublic, ok = bytesOf(v)
				case "iakCertificate":
					m.IAKCertificate, ok = bytesOf(v)
				case "tpm":
					ok = tpmInfoFromDoc(v, &m.TPM)
				}
				return ok
			})
		case "stage":
			st := &Stage{}
			p.Stage, ok = st, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "name":
					st.Name, ok = v.(string)
				case "firmwareDigest":
					st.FirmwareDigest, ok = v.(string)
				case "pcrs":
					st.PCRs, ok = stringMap(v)
				case "note":
					st.Note, ok = v.(string)
				}
				return ok
			})
		case "handoff":
			h := &Handoff{}
			p.Handoff, ok = h, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "from":
					h.From, ok = v.(string)
				case "to":
					h.To, ok = v.(string)
				case "offer":
					h.Offer, ok = v.(string)
				}
				return ok
			})
		case "flag":
			f := &Flag{}
			p.Flag, ok = f, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "reason":
					f.Reason, ok = v.(string)
				case "note":
					f.Note, ok = v.(string)
				}
				return ok
			})
		case "enrolled":
			e := &Enrolled{}
			p.Enrolled, ok = e, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "operator":
					e.Operator, ok = v.(string)
				case "registrationId":
					e.RegistrationID, ok = v.(string)
				case "idScope":
					e.IDScope, ok = v.(string)
				case "challenge":
					e.Challenge, ok = bytesOf(v)
				case "ldevidCertificate":
					e.LDevIDCertificate, ok = bytesOf(v)
				}
				return ok
			})
		case "refused":
			r := &Refused{}
			p.Refused, ok = r, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "operator":
					r.Operator, ok = v.(string)
				case "registrationId":
					r.RegistrationID, ok = v.(string)
				case "idScope":
					r.IDScope, ok = v.(string)
				case "rule":
					r.Rule, ok = v.(string)
				case "message":
					r.Message, ok = v.(string)
				case "challenge":
					r.Challenge, ok = bytesOf(v)
				}
				return ok
			})
		case "partnerInfo":
			pi := &PartnerInfo{}
			p.PartnerInfo, ok = pi, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "name":
					pi.Name, ok = v.(string)
				case "role":
					pi.Role, ok = v.(string)
				case "certificate":
					pi.Certificate, ok = bytesOf(v)
				case "operator":
					pi.Operator, ok = v.(string)
				}
				return ok
			})
		case "evidence":
			ev := &Evidence{}
			p.Evidence, ok = ev, fields(v, func(k string, v any) (ok bool) {
				switch k {
				case "attest":
					ev.Attest, ok = bytesOf(v)
				case "signature":
					ev.Signature, ok = bytesOf(v)
				case "pcrs":
					m, _ := v.(map[string]any)
					if m == nil {
						return false
					}
					ev.PCRs = make(map[string][]byte, len(m))
					for k, e := range m {
						b, ok := bytesOf(e)
						if !ok {
							return false
						}
						ev.PCRs[k] = b
					}
					ok = true
				}
				return ok
			})
		}
		return ok
	})
}

func tpmInfoFromDoc(v any, t *attest.TPMInfo) bool {
	return fields(v, func(k string, v any) (ok bool) {
		switch k {
		case "manufacturer":
			t.Manufacturer, ok = v.(string)
		case "model":
			t.Model, ok = v.(string)
		case "version":
			t.Version, ok = v.(string)
		}
		return ok
	})
}

func stringMap(v any) (map[string]string, bool) {
	m, _ := v.(map[string]any)
	if m == nil {
		return nil, false
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		s, ok := e.(string)
		if !ok {
			return nil, false
		}
		out[k] = s
	}
	return out, true
}

// bytesOf decodes a []byte field as encoding/json does: standard base64.
func bytesOf(v any) ([]byte, bool) {
	s, ok := v.(string)
	if !ok {
		return nil, false
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, []byte(s))
	if err != nil {
		return nil, false
	}
	return b[:n], true
}
