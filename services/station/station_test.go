package station_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/station"
)

// A station's rules with state in memory: the ledger's answers come from a
// map, the transport records what would have been published, and the
// device agent is a stub that only tells its identity (anything needing a
// real quote stops at the agent, where the end-to-end tests take over).

const (
	devID = "2222222222222222222222222222222222222222222222222222222222222222"
	offer = "cccc000000000000000000000000000000000000000000000000000000000000"
)

// states is the ledger's custody state, in memory.
type states struct {
	devices map[string]*ledger.Device
	offered map[string][]string
	err     error
}

func (s *states) Device(id string) (*ledger.Device, error) {
	if s.err != nil {
		return nil, s.err
	}
	d, ok := s.devices[id]
	if !ok {
		return nil, ledger.ErrNotFound
	}
	return d.Clone(), nil
}

func (s *states) PendingOffers(to string) ([]string, error) { return s.offered[to], s.err }

// transport records publishes; nothing in these tests may reach it.
type transport struct {
	mu        sync.Mutex
	published int
}

func (t *transport) Publish(context.Context, []byte) (*events.Receipt, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.published++
	return nil, errors.New("test transport: nothing may be published")
}

func (t *transport) Resend(context.Context, ...string) (map[string]*events.Receipt, error) {
	return nil, nil
}

// agent is a device agent stub: its identity, and a count of the requests
// that would need its TPM.
type agent struct {
	*httptest.Server
	mu     sync.Mutex
	tpmUse int
}

func newAgent(t *testing.T) *agent {
	a := &agent{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/identity" {
			_ = json.NewEncoder(w).Encode(map[string]any{"deviceId": devID})
			return
		}
		a.mu.Lock()
		a.tpmUse++
		a.mu.Unlock()
		http.Error(w, `{"error":"stub agent: no TPM"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *agent) tpmRequests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tpmUse
}

func newStation(t *testing.T, name string, st *states) (*station.Station, *transport) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tr := &transport{}
	s, err := station.New(station.Config{Name: name, Role: events.RoleEMS, Key: key, Ledger: st, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return s, tr
}

func TestNewValidates(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ok := station.Config{Name: "delta-ems", Role: events.RoleEMS, Key: key, Ledger: &states{}, Transport: &transport{}}
	for _, tc := range []struct {
		name string
		edit func(*station.Config)
		want string
	}{
		{"bad partner name", func(c *station.Config) { c.Name = "Delta EMS" }, "invalid partner name"},
		{"no key", func(c *station.Config) { c.Key = nil }, "required"},
		{"no ledger", func(c *station.Config) { c.Ledger = nil }, "required"},
		{"no NATS and no transport", func(c *station.Config) { c.Transport = nil }, "required"},
		{"NATS without a receipt verifier", func(c *station.Config) { c.Transport, c.NATS = nil, &nats.Conn{} }, "ReceiptVerifier"},
		{"vendor without its CA", func(c *station.Config) { c.Role = events.RoleTPMVendor }, "manufacturing CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			if _, err := station.New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := station.New(ok); err != nil {
		t.Fatal(err)
	}
}

func TestRequestCheck(t *testing.T) {
	const a = "http://127.0.0.1:1"
	for _, tc := range []struct {
		op    string
		req   station.Request
		field string // "" valid
	}{
		{"manufacture", station.Request{Agent: a}, ""},
		{"manufacture", station.Request{Agent: "file:///etc/passwd"}, "agent"},
		{"manufacture", station.Request{Agent: "127.0.0.1:1"}, "agent"},
		{"manufacture", station.Request{Agent: a + "/"}, ""},
		{"manufacture", station.Request{Agent: a + "/admin/reset"}, "agent"},
		{"manufacture", station.Request{Agent: a + "?next=http://10.0.0.1/"}, "agent"},
		{"manufacture", station.Request{Agent: "http://user:pw@127.0.0.1:1"}, "agent"},
		{"manufacture", station.Request{Agent: "http://"}, "agent"},
		{"manufacture", station.Request{Agent: "gopher://127.0.0.1:1"}, "agent"},
		{"stage", station.Request{Agent: a, Stage: events.StageAssembly}, ""},
		{"stage", station.Request{Agent: a, Stage: events.StageTestPassed}, ""},
		{"stage", station.Request{Agent: a, Stage: events.StageFirmwareProgrammed}, "stage"},
		{"stage", station.Request{Agent: a}, "stage"},
		{"stages", station.Request{Agents: []string{a, "http://127.0.0.1:2"}, Stage: events.StageTestPassed}, ""},
		{"stages", station.Request{Agents: []string{a, a + "/"}, Stage: events.StageTestPassed}, "agents"},
		{"stages", station.Request{Agents: []string{a, "file:///etc/passwd"}, Stage: events.StageTestPassed}, "agents"},
		{"stages", station.Request{Agent: a, Stage: events.StageTestPassed}, "agent"},
		{"stages", station.Request{Stage: events.StageTestPassed}, "agents"},
		{"stages", station.Request{Agents: make([]string, station.MaxBatchAgents+1), Stage: events.StageTestPassed}, "agents"},
		{"stages", station.Request{Agents: []string{a}, Stage: events.StageFirmwareProgrammed}, "stage"},
		{"stage", station.Request{Agent: a, Agents: []string{a}, Stage: events.StageAssembly}, "agents"},
		{"ship", station.Request{Agents: []string{a}, Shipment: "S-1", To: "orbit-odm", Manifest: &events.Manifest{Containers: []events.Container{{Path: "P", Devices: []string{strings.Repeat("a", 64)}}}}}, "agent"},
		{"firmware", station.Request{Agent: a, Image: []byte{1}}, ""},
		{"firmware", station.Request{Agents: []string{a, "http://127.0.0.1:2"}, Image: []byte{1}}, ""},
		{"firmware", station.Request{Agents: []string{a}}, "image"},
		{"firmware", station.Request{Agent: a, Agents: []string{a}, Image: []byte{1}}, "agent"},
		{"firmware", station.Request{Agent: a}, "image"},
		{"offer", station.Request{Agent: a, To: "blue-operator"}, ""},
		{"offer", station.Request{Agent: a, To: "blue-operator", Equivocate: true}, ""},
		{"offer", station.Request{Agent: a}, "to"},
		{"offer", station.Request{Agent: a, To: "Blue Operator"}, "to"},
		{"offer", station.Request{Agent: a, To: "custody.v1.>"}, "to"},
		{"withdraw", station.Request{Agent: a}, ""},
		{"withdraw", station.Request{Agent: a, Equivocate: true}, "equivocate"},
		{"accept", station.Request{Agent: a}, ""},
		{"accept", station.Request{Agent: a, Equivocate: true}, "equivocate"},
		{"flag", station.Request{Agent: a, Reason: events.FlagLost}, ""},
		{"flag", station.Request{Agent: a}, "reason"},
		{"clear", station.Request{Agent: a, Reason: "found"}, ""},
		{"clear", station.Request{Agent: a}, "reason"},
	} {
		field, rule := tc.req.Check(tc.op)
		if field != tc.field || (field != "") != (rule != "") {
			t.Errorf("%s %+v: Check = (%q, %q), want field %q", tc.op, tc.req, field, rule, tc.field)
		}
	}
	if field, rule := (&station.Request{Agent: a}).Check("ofer"); field != "" || !strings.Contains(rule, "unknown operation") {
		t.Errorf("unknown operation: Check = (%q, %q)", field, rule)
	}
}

// post calls the station's API and decodes the answer.
func post(t *testing.T, h http.Handler, op, body string) (int, *station.Response) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/"+op, strings.NewReader(body)))
	var r station.Response
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
		t.Fatalf("%s: answer %d %q: %v", op, w.Code, w.Body.String(), err)
	}
	return w.Code, &r
}

func TestHandlerRefusesBadRequests(t *testing.T) {
	s, tr := newStation(t, "delta-ems", &states{})
	ag := newAgent(t)
	h := s.Handler()
	for _, tc := range []struct {
		name, op, body string
	}{
		{"not JSON", "offer", `{"agent":`},
		{"unknown field", "offer", `{"agent":"` + ag.URL + `","to":"blue-operator","price":1}`},
		{"agent not a URL", "offer", `{"agent":"10.0.0.1:22","to":"blue-operator"}`},
		{"offer without recipient", "offer", `{"agent":"` + ag.URL + `"}`},
		{"stage not allowed", "stage", `{"agent":"` + ag.URL + `","stage":"firmware-programmed"}`},
		{"equivocate outside an offer", "accept", `{"agent":"` + ag.URL + `","equivocate":true}`},
		{"flag without reason", "flag", `{"agent":"` + ag.URL + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := post(t, h, tc.op, tc.body)
			if code != http.StatusBadRequest || r.Code != "bad-request" || r.Error == "" {
				t.Fatalf("answer %d %+v, want 400 bad-request with a sentence", code, r)
			}
		})
	}
	if tr.published != 0 || ag.tpmRequests() != 0 {
		t.Fatalf("a refused request reached the transport (%d) or the device's TPM (%d)", tr.published, ag.tpmRequests())
	}
}

func TestOfferWhilePending(t *testing.T) {
	pendingFrom := func(from, to string) *states {
		return &states{devices: map[string]*ledger.Device{devID: {
			ID: devID, Custodian: from, Pending: &ledger.Offer{Digest: offer, From: from, To: to, Index: 9},
		}}}
	}
	t.Run("retried offer answers with the pending offer", func(t *testing.T) {
		s, tr := newStation(t, "delta-ems", pendingFrom("delta-ems", "blue-operator"))
		ag := newAgent(t)
		res, err := s.Offer(context.Background(), ag.URL, "blue-operator")
		if err != nil || res.Existing == nil || res.Existing.Digest != offer || res.Existing.Index != 9 || res.Device != devID || res.Receipt != nil {
			t.Fatalf("Offer = %+v, %v; want success carrying the pending offer", res, err)
		}
		if tr.published != 0 || ag.tpmRequests() != 0 {
			t.Fatalf("the retried offer was quoted (%d) or published (%d)", ag.tpmRequests(), tr.published)
		}
	})
	t.Run("retried offer over HTTP is a 200", func(t *testing.T) {
		s, tr := newStation(t, "delta-ems", pendingFrom("delta-ems", "blue-operator"))
		ag := newAgent(t)
		code, r := post(t, s.Handler(), "offer", `{"agent":"`+ag.URL+`","to":"blue-operator"}`)
		if code != http.StatusOK || r.Existing == nil || r.Existing.Digest != offer || r.Code != "" {
			t.Fatalf("answer %d %+v, want 200 with the existing offer", code, r)
		}
		if tr.published != 0 || ag.tpmRequests() != 0 {
			t.Fatal("the retried offer reached the TPM or the transport")
		}
	})
	t.Run("offer to another recipient while pending is refused unsigned", func(t *testing.T) {
		s, tr := newStation(t, "delta-ems", pendingFrom("delta-ems", "blue-operator"))
		ag := newAgent(t)
		_, err := s.Offer(context.Background(), ag.URL, "grey-operator")
		var pe *station.PendingOfferError
		if !errors.As(err, &pe) || pe.Device != devID || pe.Pending.To != "blue-operator" || !strings.Contains(err.Error(), "equivocation") {
			t.Fatalf("Offer = %v, want a PendingOfferError naming equivocation", err)
		}
		if tr.published != 0 || ag.tpmRequests() != 0 {
			t.Fatalf("the refused offer was quoted (%d) or published (%d)", ag.tpmRequests(), tr.published)
		}
	})
	t.Run("mistyped recipient over HTTP", func(t *testing.T) {
		s, tr := newStation(t, "delta-ems", pendingFrom("delta-ems", "blue-operator"))
		ag := newAgent(t)
		code, r := post(t, s.Handler(), "offer", `{"agent":"`+ag.URL+`","to":"grey-operator"}`)
		if code != http.StatusConflict || r.Code != station.CodeWouldEquivocate || r.Receipt != nil {
			t.Fatalf("answer %d %+v, want 409 %s without a receipt", code, r, station.CodeWouldEquivocate)
		}
		if tr.published != 0 || ag.tpmRequests() != 0 {
			t.Fatal("the refused offer reached the TPM or the transport")
		}
	})
	for _, tc := range []struct {
		name       string
		st         *states
		equivocate bool
	}{
		{"deliberate double offer", pendingFrom("delta-ems", "blue-operator"), true},
		{"another partner's pending offer is the ledger's to judge", pendingFrom("nova-oem", "delta-ems"), false},
		{"device unknown to the ledger", &states{}, false},
		{"no pending offer", &states{devices: map[string]*ledger.Device{devID: {ID: devID, Custodian: "delta-ems"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStation(t, "delta-ems", tc.st)
			ag := newAgent(t)
			offerFn := s.Offer
			if tc.equivocate {
				offerFn = s.Equivocate
			}
			_, err := offerFn(context.Background(), ag.URL, "grey-operator")
			var pe *station.PendingOfferError
			if errors.As(err, &pe) {
				t.Fatalf("refused: %v", err)
			}
			// It went on to quote the device (which the stub cannot).
			if ag.tpmRequests() != 1 || err == nil {
				t.Fatalf("Offer = %v after %d TPM requests, want it to ask the device for a quote", err, ag.tpmRequests())
			}
		})
	}
	t.Run("ledger unreachable", func(t *testing.T) {
		s, tr := newStation(t, "delta-ems", &states{err: errors.New("connection refused")})
		ag := newAgent(t)
		if _, err := s.Offer(context.Background(), ag.URL, "blue-operator"); err == nil || !strings.Contains(err.Error(), "pending offer") {
			t.Fatalf("Offer = %v, want the ledger error named", err)
		}
		if tr.published != 0 || ag.tpmRequests() != 0 {
			t.Fatal("an offer the station could not check went ahead")
		}
	})
}

func TestAcceptNeedsOfferToThisPartner(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  *ledger.Device
	}{
		{"no offer", &ledger.Device{ID: devID, Custodian: "nova-oem"}},
		{"offer to someone else", &ledger.Device{ID: devID, Custodian: "nova-oem", Pending: &ledger.Offer{Digest: offer, From: "nova-oem", To: "grey-operator"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tr := newStation(t, "delta-ems", &states{devices: map[string]*ledger.Device{devID: tc.dev}})
			ag := newAgent(t)
			if _, err := s.Accept(context.Background(), ag.URL); err == nil || !strings.Contains(err.Error(), "no pending offer to delta-ems") {
				t.Fatalf("Accept = %v", err)
			}
			if tr.published != 0 || ag.tpmRequests() != 0 {
				t.Fatal("a refused acceptance reached the TPM or the transport")
			}
		})
	}
}

// TestWithdraw: only this partner's own pending offer is withdrawn; with
// none, nothing reaches the device or the ledger.
func TestWithdraw(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  *ledger.Device
		ok   bool
	}{
		{"no offer", &ledger.Device{ID: devID, Custodian: "delta-ems"}, false},
		{"another partner's offer", &ledger.Device{ID: devID, Custodian: "nova-oem", Pending: &ledger.Offer{Digest: offer, From: "nova-oem", To: "delta-ems"}}, false},
		{"its own offer", &ledger.Device{ID: devID, Custodian: "delta-ems", Pending: &ledger.Offer{Digest: offer, From: "delta-ems", To: "blue-operator"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tr := newStation(t, "delta-ems", &states{devices: map[string]*ledger.Device{devID: tc.dev}})
			ag := newAgent(t)
			_, err := s.Withdraw(context.Background(), ag.URL)
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "no pending offer from delta-ems") || tr.published != 0 || ag.tpmRequests() != 0 {
					t.Fatalf("Withdraw = %v (TPM %d, published %d)", err, ag.tpmRequests(), tr.published)
				}
				return
			}
			// It went on to quote the device (which the stub cannot).
			if err == nil || ag.tpmRequests() != 1 {
				t.Fatalf("Withdraw = %v after %d TPM requests, want a quote asked for", err, ag.tpmRequests())
			}
		})
	}
}

func TestPendingOffers(t *testing.T) {
	other := "3333333333333333333333333333333333333333333333333333333333333333"
	gone := "4444444444444444444444444444444444444444444444444444444444444444"
	st := &states{
		devices: map[string]*ledger.Device{
			devID: {ID: devID, Custodian: "nova-oem", Pending: &ledger.Offer{Digest: offer, From: "nova-oem", To: "delta-ems", Index: 4}},
			// The index is behind: the offer now names someone else, or
			// was accepted.
			other: {ID: other, Custodian: "nova-oem", Pending: &ledger.Offer{Digest: offer, From: "nova-oem", To: "grey-operator"}},
			gone:  {ID: gone, Custodian: "delta-ems"},
		},
		offered: map[string][]string{"delta-ems": {devID, other, gone}},
	}
	s, _ := newStation(t, "delta-ems", st)
	ps, err := s.PendingOffers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0] != (station.Pending{Device: devID, From: "nova-oem", Offer: offer, Index: 4}) {
		t.Fatalf("PendingOffers = %+v", ps)
	}
	st.err = errors.New("ledger down")
	if _, err := s.PendingOffers(); err == nil {
		t.Fatal("a ledger error was swallowed")
	}
}

// TestClientWrongURL: a URL that is not a station's says so and how a
// station's URL looks, instead of a bare "404 Not Found".
func TestClientWrongURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := station.NewClient(srv.URL+"/stations", nil).Call(context.Background(), "offer", &station.Request{Agent: "http://127.0.0.1:1", To: "blue-operator"})
	if err == nil || !strings.Contains(err.Error(), "no station API there") || !strings.Contains(err.Error(), "/stations/delta-ems") {
		t.Fatalf("Call = %v", err)
	}
}

// TestDeviceAnswersStayInTheStation: the station calls only the agent's own
// API paths, follows no redirect, and tells its caller that the device
// failed without repeating what the device said or whether anything
// listens at the address (no oracle for probing ports or services).
func TestDeviceAnswersStayInTheStation(t *testing.T) {
	var elsewhere sync.Mutex
	hits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Lock()
		hits++
		elsewhere.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"deviceId": devID})
	}))
	defer target.Close()
	redirecting := httptest.NewServer(http.RedirectHandler(target.URL+"/v1/identity", http.StatusFound))
	defer redirecting.Close()
	talkative := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":"SECRET-INTERNAL-DETAIL"}`))
	}))
	defer talkative.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	s, tr := newStation(t, "delta-ems", &states{})
	h := s.Handler()
	var answers []string
	for _, agentURL := range []string{redirecting.URL, talkative.URL, closedURL} {
		code, r := post(t, h, "offer", `{"agent":"`+agentURL+`","to":"blue-operator"}`)
		if code != http.StatusBadGateway || r.Code != "device" {
			t.Fatalf("agent %s: answer %d %+v, want 502 device", agentURL, code, r)
		}
		if strings.Contains(r.Error, "SECRET") || strings.Contains(r.Error, "refused") || strings.Contains(r.Error, "500") {
			t.Errorf("agent %s: the answer repeats the device's side: %q", agentURL, r.Error)
		}
		answers = append(answers, r.Error)
	}
	if answers[1] != answers[2] {
		t.Errorf("an answering and a closed address differ: %q, %q", answers[1], answers[2])
	}
	elsewhere.Lock()
	defer elsewhere.Unlock()
	if hits != 0 || tr.published != 0 {
		t.Fatalf("the station followed a redirect (%d requests elsewhere) or published (%d)", hits, tr.published)
	}
}
