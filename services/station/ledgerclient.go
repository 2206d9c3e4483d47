package station

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/custodyledger/custody/ledger"
)

// LedgerClient reads custody state from a ledger's HTTP API, for stations
// that run apart from custodyd.
type LedgerClient struct {
	base string
	hc   *http.Client
}

// NewLedgerClient returns a client for the ledger API at base (for example
// http://127.0.0.1:8480/ledger).
func NewLedgerClient(base string, hc *http.Client) *LedgerClient {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &LedgerClient{base: strings.TrimRight(base, "/"), hc: hc}
}

// Device implements DeviceState.
func (c *LedgerClient) Device(id string) (*ledger.Device, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, c.base+"/v1/devices/"+id+"/provenance", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, ledger.ErrNotFound
	default:
		return nil, fmt.Errorf("ledger: %s", resp.Status)
	}
	var p struct {
		Device *ledger.Device `json:"device"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return nil, err
	}
	if p.Device == nil {
		return nil, ledger.ErrNotFound
	}
	return p.Device, nil
}

// PendingOffers implements DeviceState.
func (c *LedgerClient) PendingOffers(to string) ([]string, error) {
	resp, err := c.hc.Get(c.base + "/v1/partners/" + to + "/pending")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ledger: %s", resp.Status)
	}
	var out struct {
		Devices []string `json:"devices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}
