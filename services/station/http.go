package station

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/custodyledger/custody/events"
)

// Request is the body of every station API call.
type Request struct {
	// Agent is the base URL of the device's factory API.
	Agent string `json:"agent"`
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
}

// Response is a station's answer: the receipt, or the refusal and its rule.
type Response struct {
	Device  string          `json:"device,omitempty"`
	Receipt *events.Receipt `json:"receipt,omitempty"`
	Code    string          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// Handler serves the station's factory-floor API:
//
//	POST /v1/manufacture  {agent}              TPM vendor: birth record
//	POST /v1/stage        {agent, stage, note} record assembly or test-passed
//	POST /v1/firmware     {agent, image}       program firmware and record it
//	POST /v1/offer        {agent, to}          offer the device to a partner
//	POST /v1/accept       {agent}              accept the pending offer
//	POST /v1/flag         {agent, reason}      flag the device
//	POST /v1/clear        {agent, reason}      clear a flag (operators)
//	GET  /v1/pending                           offers waiting for this partner
//	GET  /v1/unconfirmed                       events published, not yet answered
//
// Answers are JSON Responses: 200 with the receipt when the event is
// logged; 409 with the ledger's code and reason when it refused the event
// (or logged it as evidence); 400 for a bad request.
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
			if !strings.HasPrefix(req.Agent, "http://") && !strings.HasPrefix(req.Agent, "https://") {
				reply(w, http.StatusBadRequest, &Response{Code: "bad-request", Error: "agent must be the device agent's http(s) URL"})
				return
			}
			if msg := check(path, &req); msg != "" {
				reply(w, http.StatusBadRequest, &Response{Code: "bad-request", Error: msg})
				return
			}
			res, err := fn(r.Context(), &req)
			var rej *RejectedError
			switch {
			case errors.As(err, &rej):
				reply(w, http.StatusConflict, &Response{Device: res.Device, Receipt: rej.Receipt, Code: rej.Receipt.Code, Error: rej.Receipt.Reason})
			case err != nil:
				reply(w, http.StatusBadGateway, &Response{Code: "station", Error: err.Error()})
			default:
				reply(w, http.StatusOK, &Response{Device: res.Device, Receipt: res.Receipt})
			}
		})
	}
	route("/v1/manufacture", func(ctx context.Context, r *Request) (*Result, error) { return s.Manufacture(ctx, r.Agent) })
	route("/v1/stage", func(ctx context.Context, r *Request) (*Result, error) {
		return s.RecordStage(ctx, r.Agent, r.Stage, r.Note)
	})
	route("/v1/firmware", func(ctx context.Context, r *Request) (*Result, error) {
		return s.ProgramFirmware(ctx, r.Agent, r.Image)
	})
	route("/v1/offer", func(ctx context.Context, r *Request) (*Result, error) { return s.Offer(ctx, r.Agent, r.To) })
	route("/v1/accept", func(ctx context.Context, r *Request) (*Result, error) { return s.Accept(ctx, r.Agent) })
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

// check names the rule a request breaks before anything is sent to the
// device or the ledger, or returns "".
func check(path string, r *Request) string {
	switch path {
	case "/v1/stage":
		if r.Stage != events.StageAssembly && r.Stage != events.StageTestPassed {
			return "stage must be assembly or test-passed (firmware is recorded by /v1/firmware)"
		}
	case "/v1/firmware":
		if len(r.Image) == 0 {
			return "firmware needs the image to program"
		}
	case "/v1/offer":
		if !events.ValidPartnerName(r.To) {
			return "offer needs the recipient partner's name in \"to\""
		}
	case "/v1/flag", "/v1/clear":
		if r.Reason == "" {
			return "flag and clear need a reason (lost, stolen, rma, compromised, …)"
		}
	}
	return ""
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
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("station %s: %s", op, resp.Status)
	}
	switch {
	case resp.StatusCode == http.StatusConflict && out.Receipt != nil:
		return &out, &RejectedError{Receipt: out.Receipt}
	case resp.StatusCode != http.StatusOK:
		return &out, fmt.Errorf("station %s: %s: %s", op, out.Code, out.Error)
	}
	return &out, nil
}
