package tpm

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
)

// maxNonce is the largest qualifying data a TPM accepts (sizeof(TPMT_HA)
// for SHA-512 less its algorithm ID).
const maxNonce = 64

// Quote has the TPM sign, with the IAK, its clock and counters, nonce and
// the SHA-256 digest of the given SHA-256 PCRs, and returns the PCR values
// read right after under the same lock (so they are the quoted ones unless
// another process extends PCRs meanwhile; attest.VerifyQuote would
// notice). The nonce must be 1..64 bytes.
func (t *TPM) Quote(nonce []byte, pcrs []int) (*attest.Quote, error) {
	if len(nonce) == 0 {
		return nil, attest.ErrEmptyNonce
	}
	if len(nonce) > maxNonce {
		return nil, fmt.Errorf("attest: quote: nonce of %d bytes, at most %d", len(nonce), maxNonce)
	}
	sorted, err := attest.SortedPCRs(pcrs)
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	objs, err := t.ensure(objIAK)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Quote{
		SignHandle:     objs[0].authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      pcrSelection(sorted),
	}.Execute(t.tp)
	if err != nil {
		return nil, fmt.Errorf("attest: quote: %w", err)
	}
	values, err := t.readPCRs(sorted)
	if err != nil {
		return nil, err
	}
	return &attest.Quote{
		Attest:    bytes.Clone(rsp.Quoted.Bytes()),
		Signature: tpm2.Marshal(rsp.Signature),
		PCRs:      values,
	}, nil
}
