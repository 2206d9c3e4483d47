package gate_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/natstest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/gate"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/pki"
)

// noDevices is a ledger that has no record of any device.
type noDevices struct{}

func (noDevices) Device(id string) (*ledger.Device, error) {
	return nil, fmt.Errorf("device %s: %w", id, ledger.ErrNotFound)
}

// noRegistry is a DPS the gate must never reach: no device can be enrolled
// against a ledger without devices. It counts the calls.
type noRegistry struct{ calls atomic.Int64 }

func (r *noRegistry) Enroll(context.Context, string, *x509.Certificate) error {
	r.calls.Add(1)
	return errors.New("no registry")
}

func (r *noRegistry) SetEnabled(context.Context, string, bool) error {
	r.calls.Add(1)
	return errors.New("no registry")
}

// FuzzRegisterBody feeds untrusted bodies (and registration IDs and
// api-versions) to the gate's DPS-style PUT …/register, the way a device
// calls it. Seeds are the bodies services/device sends from a simulated
// TPM: the unauthorised first call and the authorised call with a quote,
// LDevID evidence and a CSR, for an RSA and an ECC EK. The gate's ledger
// knows no device. The gate must never panic nor fail internally, and:
//   - a refused call gets DPS's error body (a known errorCode, a message);
//   - a challenged call (401) carried a registration: it decodes, its
//     registration ID is the path's and the SHA-256 of its EK, it names an
//     IAK (tpm.storageRootKey), and a
//     CSR only with 2025-07-01-preview; the challenge is a credential and a
//     32-byte nonce;
//   - the request re-encoded (as a device's encoder writes it) is a fixed
//     point of decode∘encode and is challenged too;
//   - the same body, authorised with a token not keyed by any challenge's
//     secret, is always accepted for decision (202 "assigning"), and its
//     operation is refused by activation, without the operator's decision.
func FuzzRegisterBody(f *testing.F) {
	const idScope = "0ne00CUSTODY"
	tpmCA, err := pki.NewRootCA("TPM Vendor", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	trust, err := attest.ParseBundle(pki.EncodeCertsPEM(tpmCA.Cert))
	if err != nil {
		f.Fatal(err)
	}
	ldevidCA, err := pki.NewRootCA("LDevID CA", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	consortium, err := pki.NewRootCA("Consortium", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	me, err := consortium.NewPartner("blue-gate", events.RoleGate, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	logKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rv, err := ledger.NewReceiptVerifier(&logKey.PublicKey, me.Cert.Raw)
	if err != nil {
		f.Fatal(err)
	}
	reg := &noRegistry{}
	g, err := gate.New(gate.Config{
		Name: "blue-gate", Operator: "blue-operator", IDScope: idScope, Key: me.Key, NATS: natstest.Connect(f), ReceiptVerifier: rv,
		Ledger: noDevices{}, TPMTrust: trust, LDevIDCA: ldevidCA, Registry: reg,
		RefusalsPerDevice: 1 << 30, RefusalsPerSource: 1 << 30, // the fuzzer refuses one device often
	})
	if err != nil {
		f.Fatal(err)
	}
	h := g.Handler()

	// Seeds: what services/device.Enroll sends.
	tp, err := tpm.Open("sim:seed=4343")
	if err != nil {
		f.Fatal(err)
	}
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	for _, alg := range []tpm.KeyAlg{tpm.RSA2048, tpm.ECCP256} {
		ek, err := tp.EK(alg)
		if err != nil {
			f.Fatal(err)
		}
		id, err := attest.DeviceID(ek.PublicKey)
		if err != nil {
			f.Fatal(err)
		}
		iak, err := tp.IAK()
		if err != nil {
			f.Fatal(err)
		}
		req := &gatewire.RegisterRequest{RegistrationID: id, TPM: &gatewire.TPMAttestation{EndorsementKey: ek.Public, StorageRootKey: iak.Public}}
		first, _ := json.Marshal(req)
		for v := range gatewire.SupportedAPIVersions {
			f.Add(id, first, uint8(v))
		}
		q, err := tp.Quote(nonce, []int{0})
		if err != nil {
			f.Fatal(err)
		}
		_, certify, err := tp.NewLDevID(nonce)
		if err != nil {
			f.Fatal(err)
		}
		signer, err := tp.LDevIDSigner()
		if err != nil {
			f.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, signer)
		if err != nil {
			f.Fatal(err)
		}
		req.Payload = &gatewire.Evidence{Quote: events.NewEvidence(q), LDevID: certify}
		req.CSR = base64.StdEncoding.EncodeToString(csr)
		second, _ := json.Marshal(req)
		f.Add(id, second, uint8(3)) // APIVersion2025
		f.Add(id, second, uint8(0)) // a CSR with an older api-version
	}
	if err := tp.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(strings.Repeat("ab", 32), []byte(`{"registrationId":"`+strings.Repeat("ab", 32)+`","tpm":{"endorsementKey":"AAE="}}`), uint8(2))
	f.Add("x", []byte(`{"registrationId":"x"}`), uint8(1))
	f.Add("x", []byte(`null`), uint8(1))

	sas := gatewire.SASToken(idScope, "any", []byte("not the activated secret"), time.Now().Add(time.Hour))
	call := func(t *testing.T, method, target, auth string, body []byte) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, target, bytes.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	decode := func(t *testing.T, w *httptest.ResponseRecorder, v any) {
		t.Helper()
		dec := json.NewDecoder(w.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%d answer %T: %v", w.Code, v, err)
		}
	}

	f.Fuzz(func(t *testing.T, regID string, body []byte, version uint8) {
		if regID == "" || regID == "." || regID == ".." || strings.Contains(regID, "/") {
			return // not one path segment: the router's business, not the body's
		}
		v := gatewire.SupportedAPIVersions[int(version)%len(gatewire.SupportedAPIVersions)]
		base := "/" + idScope + "/registrations/" + url.PathEscape(regID)
		register := base + "/register?api-version=" + v
		defer func() {
			if n := reg.calls.Load(); n != 0 {
				t.Fatalf("the gate called DPS %d times for devices the ledger does not know", n)
			}
		}()
		w := call(t, http.MethodPut, register, "", body)
		switch w.Code {
		case http.StatusBadRequest:
			var e struct {
				ErrorCode    int    `json:"errorCode"`
				TrackingID   string `json:"trackingId"`
				Message      string `json:"message"`
				TimestampUTC string `json:"timestampUtc"`
			}
			decode(t, w, &e)
			if e.ErrorCode != gatewire.CodeBadRequest || e.Message == "" || e.TrackingID == "" {
				t.Fatalf("refusal without DPS's error body: %+v", e)
			}
			return
		case http.StatusUnauthorized:
		default:
			t.Fatalf("unauthorised registration: %d %s", w.Code, w.Body)
		}
		var ch gatewire.Challenge
		decode(t, w, &ch)
		var cred attest.Credential
		if err := json.Unmarshal(ch.AuthenticationKey, &cred); err != nil || len(cred.IDObject) == 0 || len(cred.EncryptedSecret) == 0 || len(ch.Nonce) != 32 {
			t.Fatalf("challenge %+v is not a credential and a nonce (%v)", ch, err)
		}
		var req gatewire.RegisterRequest
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
			t.Fatalf("challenged a body that is not a registration: %v", err)
		}
		idOK := false
		if req.TPM != nil {
			if pub, _, err := attest.PublicKeyFromTPMT(req.TPM.EndorsementKey); err == nil {
				id, err := attest.DeviceID(pub)
				idOK = err == nil && id == regID
			}
		}
		if req.RegistrationID != regID || !idOK || len(req.TPM.StorageRootKey) == 0 ||
			(req.CSR != "" && v != gatewire.APIVersion2025) {
			t.Fatalf("challenged registration %+v at %s", req, register)
		}
		enc, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		var back gatewire.RegisterRequest
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatalf("the encoded request does not decode: %v", err)
		}
		if again, _ := json.Marshal(&back); !bytes.Equal(again, enc) {
			t.Fatalf("decode∘encode is not a fixed point:\n%s\n%s", enc, again)
		}
		if w := call(t, http.MethodPut, register, "", enc); w.Code != http.StatusUnauthorized {
			t.Fatalf("the re-encoded request got %d %s", w.Code, w.Body)
		}

		w = call(t, http.MethodPut, register, sas, body)
		if w.Code != http.StatusAccepted {
			t.Fatalf("authorised call of a challenged registration: %d %s", w.Code, w.Body)
		}
		var op gatewire.Outcome
		decode(t, w, &op)
		if op.Status != gatewire.StatusAssigning || op.OperationID == "" {
			t.Fatalf("authorised call: %+v", op)
		}
		w = call(t, http.MethodGet, base+"/operations/"+url.PathEscape(op.OperationID)+"?api-version="+v, sas, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("operation: %d %s", w.Code, w.Body)
		}
		var out gatewire.Outcome
		decode(t, w, &out)
		// Challenges are live, none keyed the token: activation. The
		// decision stays the operator's.
		want := events.RuleActivation
		st := out.RegistrationState
		if out.Status != gatewire.StatusFailed || st == nil || st.Decision != nil ||
			st.ErrorCode != events.RuleErrorCode(want) || !strings.HasPrefix(st.ErrorMessage, want+": ") {
			t.Fatalf("registration state %+v, want refused by %s", st, want)
		}
	})
}
