package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NV indices of EK certificates (TCG EK Credential Profile, section 2.2.1.5).
const (
	NVIndexRSAEKCert = 0x01C00002
	NVIndexECCEKCert = 0x01C0000A
)

// nvChunk bounds one NV read or write; TPMs accept at least 1024 bytes
// (TPM_PT_NV_BUFFER_MAX), the reference simulator exactly 1024.
const nvChunk = 1024

func ekCertIndex(alg KeyAlg) (tpm2.TPMHandle, error) {
	switch alg {
	case RSA2048:
		return NVIndexRSAEKCert, nil
	case ECCP256:
		return NVIndexECCEKCert, nil
	}
	return 0, fmt.Errorf("attest: unknown EK algorithm %v", alg)
}

// WriteEKCertificate stores der (an EK certificate, normally DER) in the NV
// index for alg, as a TPM vendor does at manufacture: 0x01C00002 for RSA,
// 0x01C0000A for ECC. An existing index is undefined first, so the call is
// idempotent. The index is created with platform authorization when the
// platform hierarchy is enabled (as on the simulator), with the TCG
// attributes PPWRITE|PPREAD|OWNERREAD|AUTHREAD|NO_DA|PLATFORMCREATE;
// otherwise with owner authorization (OWNERWRITE|OWNERREAD|AUTHREAD|PPREAD|
// NO_DA). Nothing is checked about der: the TPM stores what it is given.
func (t *TPM) WriteEKCertificate(alg KeyAlg, der []byte) error {
	idx, err := ekCertIndex(alg)
	if err != nil {
		return err
	}
	if len(der) == 0 || len(der) > 0xFFFF {
		return fmt.Errorf("attest: EK certificate of %d bytes", len(der))
	}
	if err := t.lock(); err != nil {
		return err
	}
	defer t.mu.Unlock()

	// Undefine an existing index with the hierarchy that created it.
	if rsp, err := (tpm2.NVReadPublic{NVIndex: idx}).Execute(t.tp); err == nil {
		pub, err := rsp.NVPublic.Contents()
		if err != nil {
			return fmt.Errorf("attest: NV public of %#x: %w", uint32(idx), err)
		}
		auth := tpm2.TPMRHOwner
		if pub.Attributes.PlatformCreate {
			auth = tpm2.TPMRHPlatform
		}
		if _, err := (tpm2.NVUndefineSpace{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: rsp.NVName},
		}).Execute(t.tp); err != nil {
			return fmt.Errorf("attest: undefine NV %#x: %w", uint32(idx), err)
		}
	}

	platform := tpm2.TPMSNVPublic{
		NVIndex: idx,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			PPWrite:        true,
			PPRead:         true,
			OwnerRead:      true,
			AuthRead:       true,
			NoDA:           true,
			PlatformCreate: true,
			NT:             tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(len(der)),
	}
	owner := platform
	owner.Attributes = tpm2.TPMANV{
		OwnerWrite: true,
		OwnerRead:  true,
		AuthRead:   true,
		PPRead:     true,
		NoDA:       true,
		NT:         tpm2.TPMNTOrdinary,
	}
	writer := tpm2.TPMRHPlatform
	_, err = tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHPlatform, PublicInfo: tpm2.New2B(platform)}.Execute(t.tp)
	if err != nil {
		writer = tpm2.TPMRHOwner
		_, oerr := tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHOwner, PublicInfo: tpm2.New2B(owner)}.Execute(t.tp)
		if oerr != nil {
			return fmt.Errorf("attest: define NV %#x: with platform auth: %v; with owner auth: %w", uint32(idx), err, oerr)
		}
	}
	for off := 0; off < len(der); off += nvChunk {
		end := min(off+nvChunk, len(der))
		name, err := t.nvName(idx)
		if err != nil {
			return err
		}
		if _, err := (tpm2.NVWrite{
			AuthHandle: writer,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: der[off:end]},
			Offset:     uint16(off),
		}).Execute(t.tp); err != nil {
			return fmt.Errorf("attest: write NV %#x at %d: %w", uint32(idx), off, err)
		}
	}
	return nil
}

func (t *TPM) nvName(idx tpm2.TPMHandle) (tpm2.TPM2BName, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.tp)
	if err != nil {
		return tpm2.TPM2BName{}, fmt.Errorf("attest: read NV public %#x: %w", uint32(idx), err)
	}
	return rsp.NVName, nil
}

// ReadEKCertificate returns the raw contents of the EK certificate NV index
// for alg, which may carry padding after the certificate (see
// TrimEKCertificate and ParseEKCertificate). It returns an error wrapping
// ErrNoEKCertificate when the index is not defined. The bytes are
// unverified.
func (t *TPM) ReadEKCertificate(alg KeyAlg) ([]byte, error) {
	idx, err := ekCertIndex(alg)
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	rsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.tp)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, fmt.Errorf("%w (index %#x)", ErrNoEKCertificate, uint32(idx))
		}
		return nil, fmt.Errorf("attest: read NV public %#x: %w", uint32(idx), err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("attest: NV public %#x: %w", uint32(idx), err)
	}
	if !pub.Attributes.Written {
		return nil, fmt.Errorf("%w (index %#x defined but never written)", ErrNoEKCertificate, uint32(idx))
	}
	size := int(pub.DataSize)
	out := make([]byte, 0, size)
	for off := 0; off < size; off += nvChunk {
		n := min(nvChunk, size-off)
		read := func(auth tpm2.AuthHandle) (*tpm2.NVReadResponse, error) {
			return tpm2.NVRead{
				AuthHandle: auth,
				NVIndex:    tpm2.NamedHandle{Handle: idx, Name: rsp.NVName},
				Size:       uint16(n),
				Offset:     uint16(off),
			}.Execute(t.tp)
		}
		r, err := read(tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)})
		if err != nil && pub.Attributes.AuthRead {
			r, err = read(tpm2.AuthHandle{Handle: idx, Name: rsp.NVName, Auth: tpm2.PasswordAuth(nil)})
		}
		if err != nil {
			return nil, fmt.Errorf("attest: read NV %#x at %d: %w", uint32(idx), off, err)
		}
		out = append(out, r.Data.Buffer...)
	}
	return out, nil
}
