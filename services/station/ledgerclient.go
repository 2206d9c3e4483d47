package station

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// LedgerClient reads custody state from a ledger's HTTP API, for stations
// that run apart from custodyd. Device histories are private: the client
// proves its partner with the mTLS client certificate of its HTTP client
// (pki.Demo.HTTPClient) or, the alternative, signs read tokens as its
// partner (WithIdentity).
type LedgerClient struct {
	base string
	hc   *http.Client

	partner string
	key     crypto.Signer
	mu      sync.Mutex
	token   string
	renew   time.Time
}

// WithIdentity makes the client read as partner, signing read tokens with
// its consortium key.
func (c *LedgerClient) WithIdentity(partner string, key crypto.Signer) *LedgerClient {
	c.partner, c.key = partner, key
	return c
}

// get sends an authenticated GET.
func (c *LedgerClient) get(path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.key != nil {
		c.mu.Lock()
		if time.Now().After(c.renew) {
			if c.token, err = ledger.NewReadToken(c.partner, c.key, 5*time.Minute); err != nil {
				c.mu.Unlock()
				return nil, err
			}
			c.renew = time.Now().Add(4 * time.Minute)
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		c.mu.Unlock()
	}
	return c.hc.Do(req)
}

// statusError names what the ledger refused.
func statusError(resp *http.Response) error {
	var e struct{ Code, Message string }
	if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
		return fmt.Errorf("ledger: %s: %s: %s", resp.Status, e.Code, e.Message)
	}
	return fmt.Errorf("ledger: %s", resp.Status)
}

// NewLedgerClient returns a client for the ledger API at base (for example
// https://127.0.0.1:8480/ledger).
func NewLedgerClient(base string, hc *http.Client) *LedgerClient {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &LedgerClient{base: strings.TrimRight(base, "/"), hc: hc}
}

// Provenance reads a device's history with its proofs, as the client's
// partner sees it (unverified: see ledger.VerifyProvenance).
// ledger.ErrNotFound: the ledger has no record of the device.
func (c *LedgerClient) Provenance(id string) (*ledger.Provenance, error) {
	var p ledger.Provenance
	if err := c.provenance(id, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Device implements DeviceState. It decodes only the state from the
// device's provenance, not its entries and proofs.
func (c *LedgerClient) Device(id string) (*ledger.Device, error) {
	var p struct {
		Device *ledger.Device `json:"device"`
	}
	if err := c.provenance(id, &p); err != nil {
		return nil, err
	}
	if p.Device == nil {
		return nil, ledger.ErrNotFound
	}
	return p.Device, nil
}

// ShipmentOffer implements ShipmentReader: the shipment offer with that
// digest and its manifest, for its sender or recipient.
func (c *LedgerClient) ShipmentOffer(digest string) (*ledger.Shipment, error) {
	if !events.ValidDeviceID(digest) { // 64 lowercase hex digits, as a digest
		return nil, fmt.Errorf("station: %q is not a digest", digest)
	}
	resp, err := c.get("/v1/shipments/" + digest)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var sh ledger.Shipment
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4*events.MaxMessageSize)).Decode(&sh); err != nil {
		return nil, err
	}
	return &sh, nil
}

// provenance reads a device's provenance into out.
func (c *LedgerClient) provenance(id string, out any) error {
	resp, err := c.get("/v1/devices/" + id + "/provenance")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return ledger.ErrNotFound
	default:
		return statusError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// PendingOffers implements DeviceState.
func (c *LedgerClient) PendingOffers(to string) ([]string, error) {
	resp, err := c.get("/v1/partners/" + to + "/pending")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var out struct {
		Devices []string `json:"devices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}
