package device

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
)

// Config configures a Device.
type Config struct {
	// TPM is the device's TPM. Required. The Device does not close it.
	TPM *tpm.TPM
	// StateDir holds the device's persistent state (the programmed
	// firmware image, firmware.bin). Required; created if missing.
	StateDir string
	// FirmwarePCR is the SHA-256 PCR that firmware is measured into
	// (0..23; default 0, the PC Client PCR for platform firmware code).
	FirmwarePCR int
	// EKAlg is the EK the device identifies with and activates credentials
	// with (default tpm.ECCP256).
	EKAlg tpm.KeyAlg
}

// firmwareFile is the programmed firmware image inside StateDir.
const firmwareFile = "firmware.bin"

// Device is a device's factory API over its TPM. It is safe for concurrent
// use: firmware programming and reboots are serialised with the requests
// that read TPM state.
type Device struct {
	cfg Config

	mu       sync.RWMutex // write: reboot, firmware; read: everything else
	fwDigest []byte       // SHA-256 of the programmed firmware, nil if none
}

// New starts a device: it validates cfg and, like a boot ROM at power-on,
// measures the programmed firmware (if StateDir/firmware.bin exists) by
// extending FirmwarePCR with its SHA-256. Each New is a boot: call it once
// per TPM power cycle.
func New(cfg Config) (*Device, error) {
	if cfg.TPM == nil {
		return nil, errors.New("device: Config.TPM is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("device: Config.StateDir is required")
	}
	if cfg.FirmwarePCR < 0 || cfg.FirmwarePCR >= attest.NumPCRs {
		return nil, fmt.Errorf("device: Config.FirmwarePCR %d out of range 0..%d", cfg.FirmwarePCR, attest.NumPCRs-1)
	}
	switch cfg.EKAlg {
	case 0:
		cfg.EKAlg = tpm.ECCP256
	case tpm.RSA2048, tpm.ECCP256:
	default:
		return nil, fmt.Errorf("device: unknown Config.EKAlg %v", cfg.EKAlg)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("device: state directory: %w", err)
	}
	d := &Device{cfg: cfg}
	if err := d.measureFirmware(); err != nil {
		return nil, err
	}
	return d, nil
}

// TPM returns the device's TPM.
func (d *Device) TPM() *tpm.TPM { return d.cfg.TPM }

// Reboot reboots the TPM (PCRs cleared, resetCount incremented) and then
// measures the programmed firmware again, as the boot ROM would.
func (d *Device) Reboot() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.cfg.TPM.Reboot(); err != nil {
		return fmt.Errorf("device: reboot: %w", err)
	}
	return d.measureFirmwareLocked()
}

func (d *Device) measureFirmware() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.measureFirmwareLocked()
}

// measureFirmwareLocked extends the firmware PCR with the programmed
// image's digest, if there is an image. d.mu must be held for writing.
func (d *Device) measureFirmwareLocked() error {
	img, err := os.ReadFile(filepath.Join(d.cfg.StateDir, firmwareFile))
	if errors.Is(err, os.ErrNotExist) {
		d.fwDigest = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("device: read firmware: %w", err)
	}
	sum := sha256.Sum256(img)
	if err := d.cfg.TPM.ExtendPCR(d.cfg.FirmwarePCR, sum[:]); err != nil {
		return fmt.Errorf("device: measure firmware: %w", err)
	}
	d.fwDigest = sum[:]
	return nil
}

// programFirmware stores a new firmware image and measures it.
func (d *Device) programFirmware(image []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	path := filepath.Join(d.cfg.StateDir, firmwareFile)
	if err := writeFileAtomic(path, image); err != nil {
		return nil, fmt.Errorf("device: store firmware: %w", err)
	}
	sum := sha256.Sum256(image)
	if err := d.cfg.TPM.ExtendPCR(d.cfg.FirmwarePCR, sum[:]); err != nil {
		return nil, fmt.Errorf("device: measure firmware: %w", err)
	}
	d.fwDigest = sum[:]
	return sum[:], nil
}

// writeFileAtomic writes data to path through a synced temporary file and
// a rename, so a crash leaves the old or the new image, never half of one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".firmware-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

// identity gathers the device's identity.
func (d *Device) identity() (*Identity, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	dev := d.cfg.TPM
	ek, err := dev.EK(d.cfg.EKAlg)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(ek.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	id, err := attest.DeviceID(ek.PublicKey)
	if err != nil {
		return nil, err
	}
	iak, err := dev.IAK()
	if err != nil {
		return nil, fmt.Errorf("IAK: %w", err)
	}
	out := &Identity{
		DeviceID:    id,
		EKPublic:    ek.Public,
		EKPublicKey: spki,
		IAKPublic:   iak.Public,
		IAKName:     iak.Name,
	}
	raw, err := dev.ReadEKCertificate(d.cfg.EKAlg)
	switch {
	case errors.Is(err, tpm.ErrNoEKCertificate):
	case err != nil:
		return nil, fmt.Errorf("EK certificate: %w", err)
	default:
		if der, terr := attest.TrimEKCertificate(raw); terr == nil {
			out.EKCertificate = der
		} else {
			out.EKCertificate = raw
		}
	}
	if d.fwDigest != nil {
		out.FirmwareDigest = hex.EncodeToString(d.fwDigest)
	}
	return out, nil
}
