package station

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/device"
)

// Request is the body of every station API call.
type Request struct {
	// Agent is the base URL of the device's factory API.
	Agent string `json:"agent"`
	// Agents are the devices of /v1/stages, or of /v1/firmware instead of
	// Agent (one station batch), each once, 1 to MaxBatchAgents of them.
	Agents []string `json:"agents,omitempty"`
	// Stage names the stage for /v1/stage.
	Stage string `json:"stage,omitempty"`
	// Note is free text for stages and flags.
	Note string `json:"note,omitempty"`
	// Image is the firmware image for /v1/firmware.
	Image []byte `json:"image,omitempty"`
	// To names the recipient for /v1/offer.
	To string `json:"to,omitempty"`
	// Reason is the flag reason for /v1/flag and /v1/clear.
	Reason string `json:"reason,omitempty"`
	// Equivocate asks /v1/offer to publish the offer even while the device
	// has a pending offer from this partner, which the ledger logs as
	// equivocation evidence and which flags the device (see
	// Station.Equivocate). Without it such an offer is refused unsigned.
	Equivocate bool `json:"equivocate,omitempty"`
	// Shipment is the shipment ID for /v1/ship.
	Shipment string `json:"shipment,omitempty"`
	// Offer is the digest of the shipment offer for /v1/accept-shipment
	// and /v1/withdraw-shipment.
	Offer string `json:"offer,omitempty"`
	// Manifest lists the devices of a shipment operation, in their
	// containers (all of the offer's, or part of them). accept-shipment
	// and withdraw-shipment without one act on the whole shipment, its
	// manifest read from the ledger.
	Manifest *events.Manifest `json:"manifest,omitempty"`
}

// Operations are the station API's calls (POST /v1/<op>), in the order of
// a device's life.
var Operations = []string{"manufacture", "stage", "stages", "firmware", "offer", "withdraw", "accept", "flag", "clear", "ship", "accept-shipment", "withdraw-shipment"}

// shipmentOps are the operations on shipments: they contact no device
// (boxed devices are not powered), so they take no agent.
var shipmentOps = []string{"ship", "accept-shipment", "withdraw-shipment"}

// CodeWouldEquivocate is the API's code for an offer refused before it was
// signed because the ledger would log it as equivocation (a
// *PendingOfferError).
const CodeWouldEquivocate = "would-equivocate"

// CodeAgentNetwork is the API's code for an agent address outside the
// station's device networks (DeviceNetworks), refused before anything is
// contacted.
const CodeAgentNetwork = "agent-network"

// CodeBadReceipt is the API's code for an event whose answer from the
// ledger did not verify (an *events.BadReceiptError: another event's
// digest, a proof or checkpoint that does not prove it logged). The event
// is not logged as far as the station knows; it stays in the outbox
// (GET /v1/unconfirmed) and is re-sent when the station restarts.
const CodeBadReceipt = "bad-receipt"

// Response is a station's answer: the receipt, or the refusal and its rule.
// An offer already pending (a retry) answers with Existing instead of a
// receipt.
type Response struct {
	Device   string          `json:"device,omitempty"`
	Receipt  *events.Receipt `json:"receipt,omitempty"`
	Existing *ledger.Offer   `json:"existing,omitempty"`
	Code     string          `json:"code,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// Handler serves the station's factory-floor API:
//
//	POST /v1/manufacture  {agent}              TPM vendor: birth record
//	POST /v1/stage        {agent, stage, note} record assembly, test-passed, or a sampled receiving-inspection
//	POST /v1/stages       {agents, stage, note} the same for many devices in one station batch (one
//	                                           signature; the receipt's members hold each device's verdict)
//	POST /v1/firmware     {agent, image}       program firmware and record it; with agents instead of
//	                                           agent, a programming line: every device, one station batch
//	POST /v1/offer        {agent, to}          offer the device to a partner
//	POST /v1/withdraw     {agent}              withdraw this partner's pending offer
//	POST /v1/accept       {agent}              accept the pending offer
//	POST /v1/flag         {agent, reason}      flag the device
//	POST /v1/clear        {agent, reason}      clear a flag (operators)
//	POST /v1/ship         {shipment, to, manifest}  offer a shipment of boxed devices
//	POST /v1/accept-shipment   {offer, manifest}    take devices of a pending shipment (all, or part: a split;
//	                                                without manifest, the whole shipment as the ledger holds it)
//	POST /v1/withdraw-shipment {offer, manifest}    take back devices still pending in this partner's shipment
//	GET  /v1/pending                           offers waiting for this partner
//	GET  /v1/unconfirmed                       events published, not yet answered
//
// Answers are JSON Responses: 200 with the receipt when the event is
// logged; 200 with existing (the pending offer, its digest and log index)
// and no receipt for an offer this partner already made to the same
// recipient and which is still pending (a retry: nothing is signed); 409 with the ledger's code and reason when it refused the event
// (or logged it as evidence); 409 with code CodeWouldEquivocate, and no
// receipt, for an offer refused unsigned while the device has an offer from
// this partner to another recipient pending (unless the request sets
// equivocate: true); 400 for
// a bad request, including an agent address that is not scheme://host (see
// AgentURL); 403 with code CodeAgentNetwork for an agent address outside
// the station's device networks, refused before anything is contacted;
// 502 with code "device" when the device agent failed, saying
// no more (the detail is in the station's log: the address is the caller's
// choice, so the answer must not tell it what listens there); 502 with
// code CodeBadReceipt and the rule the ledger's answer broke when it did
// not verify.
func (s *Station) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(path string, fn func(context.Context, *Request) (*Result, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			var req Request
			dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				reply(w, http.StatusBadRequest, &Response{Code: "bad-request", Error: "request body: " + err.Error()})
				return
			}
			if field, rule := req.Check(strings.TrimPrefix(path, "/v1/")); rule != "" {
				reply(w, http.StatusBadRequest, &Response{Code: "bad-request", Error: field + ": " + rule})
				return
			}
			res, err := fn(r.Context(), &req)
			var rej *RejectedError
			var pending *PendingOfferError
			switch {
			case errors.Is(err, ErrAgentNetwork):
				reply(w, http.StatusForbidden, &Response{Code: CodeAgentNetwork, Error: "agent: " + ErrAgentNetwork.Error() + "; nothing was contacted"})
			case errors.As(err, &rej):
				reply(w, http.StatusConflict, &Response{Device: res.Device, Receipt: rej.Receipt, Code: rej.Receipt.Code, Error: rej.Receipt.Reason})
			case errors.As(err, &pending):
				reply(w, http.StatusConflict, &Response{Device: pending.Device, Code: CodeWouldEquivocate, Error: pending.Error()})
			case errors.Is(err, events.ErrBadReceipt):
				s.cfg.Logger.Error("the ledger's answer did not verify; the event stays in the outbox", "op", path, "err", err)
				reply(w, http.StatusBadGateway, &Response{Code: CodeBadReceipt, Error: err.Error()})
			case errors.As(err, new(*device.CallError)):
				// What the device said, and whether anything listens at
				// the address, stays in the station's log.
				s.cfg.Logger.Warn("device agent call failed", "op", path, "agent", req.Agent, "err", err)
				reply(w, http.StatusBadGateway, &Response{Code: "device", Error: "the device agent gave no usable answer; the station's log has the detail"})
			case err != nil:
				reply(w, http.StatusBadGateway, &Response{Code: "station", Error: err.Error()})
			default:
				reply(w, http.StatusOK, &Response{Device: res.Device, Receipt: res.Receipt, Existing: res.Existing})
			}
		})
	}
	route("/v1/manufacture", func(ctx context.Context, r *Request) (*Result, error) { return s.Manufacture(ctx, r.Agent) })
	route("/v1/stage", func(ctx context.Context, r *Request) (*Result, error) {
		return s.RecordStage(ctx, r.Agent, r.Stage, r.Note)
	})
	route("/v1/stages", func(ctx context.Context, r *Request) (*Result, error) {
		return s.RecordStages(ctx, r.Agents, r.Stage, r.Note)
	})
	route("/v1/firmware", func(ctx context.Context, r *Request) (*Result, error) {
		if len(r.Agents) > 0 {
			return s.ProgramFirmwares(ctx, r.Agents, r.Image)
		}
		return s.ProgramFirmware(ctx, r.Agent, r.Image)
	})
	route("/v1/offer", func(ctx context.Context, r *Request) (*Result, error) {
		if r.Equivocate {
			return s.Equivocate(ctx, r.Agent, r.To)
		}
		return s.Offer(ctx, r.Agent, r.To)
	})
	route("/v1/withdraw", func(ctx context.Context, r *Request) (*Result, error) { return s.Withdraw(ctx, r.Agent) })
	route("/v1/accept", func(ctx context.Context, r *Request) (*Result, error) { return s.Accept(ctx, r.Agent) })
	route("/v1/ship", func(ctx context.Context, r *Request) (*Result, error) {
		if r.Equivocate {
			return s.EquivocateShipment(ctx, r.Shipment, r.To, r.Manifest)
		}
		return s.Ship(ctx, r.Shipment, r.To, r.Manifest)
	})
	route("/v1/accept-shipment", func(ctx context.Context, r *Request) (*Result, error) {
		return s.AcceptShipment(ctx, r.Offer, r.Manifest)
	})
	route("/v1/withdraw-shipment", func(ctx context.Context, r *Request) (*Result, error) {
		return s.WithdrawShipment(ctx, r.Offer, r.Manifest)
	})
	route("/v1/flag", func(ctx context.Context, r *Request) (*Result, error) {
		return s.Flag(ctx, r.Agent, events.KindDeviceFlagged, r.Reason, r.Note)
	})
	route("/v1/clear", func(ctx context.Context, r *Request) (*Result, error) {
		return s.Flag(ctx, r.Agent, events.KindDeviceCleared, r.Reason, r.Note)
	})
	mux.HandleFunc("GET /v1/pending", func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.PendingOffers()
		if err != nil {
			reply(w, http.StatusBadGateway, &Response{Code: "ledger", Error: err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"pending": ps})
	})
	mux.HandleFunc("GET /v1/unconfirmed", func(w http.ResponseWriter, r *http.Request) {
		ds, err := s.Unconfirmed()
		if err != nil {
			reply(w, http.StatusInternalServerError, &Response{Code: "station", Error: err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"unconfirmed": ds})
	})
	return mux
}

// Check names the rule a request for operation op (one of Operations)
// breaks, before anything is sent to the device or the ledger: the request
// field at fault ("" when op is not an operation) and the rule, as a
// sentence. A good request gets "", "".
func (r *Request) Check(op string) (field, rule string) {
	if !slices.Contains(Operations, op) {
		return "", fmt.Sprintf("unknown operation %q: a station's operations are %s", op, strings.Join(Operations, ", "))
	}
	if slices.Contains(shipmentOps, op) {
		return r.checkShipment(op)
	}
	if op == "stages" || (op == "firmware" && len(r.Agents) > 0) {
		if r.Agent != "" {
			return "agent", op + " takes its devices in agents or one in agent, not both"
		}
		if len(r.Agents) < 1 || len(r.Agents) > MaxBatchAgents {
			return "agents", fmt.Sprintf("%s records 1 to %d devices in one batch, not %d", op, MaxBatchAgents, len(r.Agents))
		}
		seen := make(map[string]bool, len(r.Agents))
		for _, a := range r.Agents {
			u, err := AgentURL(a)
			if err != nil {
				return "agents", err.Error()
			}
			if seen[u] {
				return "agents", fmt.Sprintf("%s is listed twice: a batch records a device once", u)
			}
			seen[u] = true
		}
	} else if len(r.Agents) > 0 {
		return "agents", "only stages and firmware take agents (one station batch); the other operations take one agent"
	} else if _, err := AgentURL(r.Agent); err != nil {
		return "agent", err.Error()
	}
	if r.Manifest != nil || r.Shipment != "" || r.Offer != "" {
		return "manifest", "only the shipment operations (ship, accept-shipment, withdraw-shipment) take a shipment, an offer or a manifest"
	}
	switch op {
	case "stage", "stages":
		if r.Stage != events.StageAssembly && r.Stage != events.StageTestPassed && r.Stage != events.StageReceivingInspection {
			return "stage", "must be assembly, test-passed or receiving-inspection (firmware is recorded by the firmware operation)"
		}
	case "firmware":
		if len(r.Image) == 0 {
			return "image", "firmware needs the image to program"
		}
	case "offer":
		if !events.ValidPartnerName(r.To) {
			return "to", "offer needs the recipient: a partner's name, such as blue-operator"
		}
	case "flag", "clear":
		if r.Reason == "" {
			return "reason", "flag and clear need a reason (lost, stolen, rma, compromised, …)"
		}
	}
	if r.Equivocate && op != "offer" {
		return "equivocate", "only an offer or a shipment can be made as a deliberate equivocation"
	}
	return "", ""
}

// checkShipment checks the request of a shipment operation.
func (r *Request) checkShipment(op string) (field, rule string) {
	if r.Agent != "" || len(r.Agents) > 0 || r.Stage != "" || len(r.Image) > 0 || r.Reason != "" {
		return "agent", op + " contacts no device: it takes a manifest, not an agent, stage, image or reason"
	}
	if r.Equivocate && op != "ship" {
		return "equivocate", "only an offer or a shipment can be made as a deliberate equivocation"
	}
	if r.Manifest != nil || op == "ship" {
		if err := r.Manifest.Check(); err != nil {
			return "manifest", err.Error()
		}
	}
	if op == "ship" {
		if !events.ValidShipmentID(r.Shipment) {
			return "shipment", "ship needs the shipment ID: 1 to 64 letters, digits, '-' or '_'"
		}
		if !events.ValidPartnerName(r.To) {
			return "to", "ship needs the recipient: a partner's name, such as orbit-odm"
		}
		if r.Offer != "" {
			return "offer", "ship makes a new offer; accept-shipment and withdraw-shipment name one"
		}
		return "", ""
	}
	if !events.ValidDeviceID(r.Offer) { // 64 lowercase hex, as a digest
		return "offer", op + " needs the shipment offer's digest (64 hex digits)"
	}
	if r.Shipment != "" || r.To != "" {
		return "shipment", op + " takes the shipment and its parties from the offer"
	}
	return "", ""
}

func reply(w http.ResponseWriter, status int, v *Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Client calls a station's API.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the station API at base (for example
// http://127.0.0.1:8480/stations/delta-ems).
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: hc}
}

// Call posts req to the station operation op ("manufacture", "offer", …).
// A refusal by the ledger is a *RejectedError.
func (c *Client) Call(ctx context.Context, op string, req *Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/"+op, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out Response
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return nil, fmt.Errorf("station %s: %s answers %s: no station API there; a station's URL ends in its partner, such as http://127.0.0.1:8480/stations/delta-ems (custodyd) or the --listen address of custody station run", op, c.base, resp.Status)
		}
		return nil, fmt.Errorf("station %s: %s answers %s, not a station's JSON", op, c.base, resp.Status)
	}
	switch {
	case resp.StatusCode == http.StatusConflict && out.Receipt != nil:
		return &out, &RejectedError{Receipt: out.Receipt}
	case resp.StatusCode != http.StatusOK:
		return &out, fmt.Errorf("station %s: %s: %s", op, out.Code, out.Error)
	}
	return &out, nil
}

// AgentURL checks a device agent's address as a caller gave it and returns
// the base URL the station calls: scheme and host only. The station adds
// the API's paths itself, so a caller cannot aim it at another path, query
// or user of the host.
func AgentURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "":
		return "", errors.New("must be the device agent's http(s) URL (its factory API, as custody-agent serve prints it, e.g. https://127.0.0.1:41234)")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "":
		return "", errors.New("must be the device agent's base URL, scheme://host:port only: no user, path, query or fragment")
	}
	return u.Scheme + "://" + u.Host, nil
}

// RequirePartner admits to h only callers whose mTLS client certificate is
// partner's own consortium certificate (events.VerifyPartner against the
// consortium roots): the station API's row of the authorisation matrix
// (events.ActCallStation) for a station that runs apart from custodyd,
// which has no partner registry to consult; custodyd's stations are
// admitted by its router against the registry (services/node).
func RequirePartner(h http.Handler, partner string, consortium *x509.CertPool) http.Handler {
	perm, _ := events.PermissionFor(events.ActCallStation)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := perm.AdmitCertificate(r.TLS, consortium, time.Now(), partner); err != nil {
			status, code := events.AdmitStatus(err)
			reply(w, status, &Response{Code: code, Error: err.Error()})
			return
		}
		h.ServeHTTP(w, r)
	})
}
