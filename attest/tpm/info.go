package tpm

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
)

// Info reads the TPM's manufacturer, vendor string and firmware version
// with TPM2_GetCapability, formatted as an EK certificate carries them. It
// is what the TPM says about itself, for a vendor filling in an EK
// certificate; it proves nothing to a remote party.
func (t *TPM) Info() (attest.TPMInfo, error) {
	if err := t.lock(); err != nil {
		return attest.TPMInfo{}, err
	}
	defer t.mu.Unlock()
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTManufacturer),
		PropertyCount: 16,
	}.Execute(t.tp)
	if err != nil {
		return attest.TPMInfo{}, fmt.Errorf("attest: TPM properties: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return attest.TPMInfo{}, fmt.Errorf("attest: TPM properties: %w", err)
	}
	var manufacturer, fw1 uint32
	vendor := make([]byte, 0, 16)
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTManufacturer:
			manufacturer = p.Value
		case tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4:
			vendor = append(vendor, byte(p.Value>>24), byte(p.Value>>16), byte(p.Value>>8), byte(p.Value))
		case tpm2.TPMPTFirmwareVersion1:
			fw1 = p.Value
		}
	}
	model := string(bytes.TrimRight(bytes.TrimRight(vendor, "\x00"), " "))
	if model == "" {
		model = "TPM 2.0"
	}
	return attest.TPMInfo{
		Manufacturer: fmt.Sprintf("id:%08X", manufacturer),
		Model:        model,
		Version:      fmt.Sprintf("id:%08X", fw1),
	}, nil
}
