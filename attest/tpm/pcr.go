package tpm

import (
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
)

// ExtendPCR extends PCR index of the SHA-256 bank with digest (32 bytes):
// PCR := SHA-256(PCR || digest).
func (t *TPM) ExtendPCR(index int, digest []byte) error {
	if index < 0 || index >= attest.NumPCRs {
		return fmt.Errorf("attest: extend PCR %d: index out of range 0..%d", index, attest.NumPCRs-1)
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("attest: extend PCR %d: digest of %d bytes, want %d", index, len(digest), sha256.Size)
	}
	if err := t.lock(); err != nil {
		return err
	}
	defer t.mu.Unlock()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256,
			Digest:  append([]byte(nil), digest...),
		}}},
	}.Execute(t.tp)
	if err != nil {
		return fmt.Errorf("attest: extend PCR %d: %w", index, err)
	}
	return nil
}

// ReadPCRs reads PCRs of the SHA-256 bank. The values are what the TPM
// reports to this process; a remote party trusts them only through a
// verified quote.
func (t *TPM) ReadPCRs(indices []int) (map[int][]byte, error) {
	pcrs, err := attest.SortedPCRs(indices)
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	return t.readPCRs(pcrs)
}

// pcrSelection is the SHA-256 bank selection of sorted, valid PCRs.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// readPCRs reads sorted, valid PCRs; a TPM returns at most eight values per
// TPM2_PCR_Read, so it asks until all are read. t.mu must be held.
func (t *TPM) readPCRs(pcrs []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(pcrs))
	remaining := pcrs
	for len(remaining) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(remaining)}.Execute(t.tp)
		if err != nil {
			return nil, fmt.Errorf("attest: read PCRs: %w", err)
		}
		got := attest.SelectedPCRs(rsp.PCRSelectionOut)
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("attest: read PCRs: TPM returned %d values for %d PCRs", len(rsp.PCRValues.Digests), len(got))
		}
		for i, p := range got {
			if !slices.Contains(remaining, p) {
				return nil, fmt.Errorf("attest: read PCRs: TPM returned unrequested PCR %d", p)
			}
			out[p] = rsp.PCRValues.Digests[i].Buffer
		}
		next := remaining[:0:0]
		for _, p := range remaining {
			if _, ok := out[p]; !ok {
				next = append(next, p)
			}
		}
		remaining = next
	}
	return out, nil
}
