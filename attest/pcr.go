package attest

import (
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// NumPCRs is the number of PCRs of a PC Client TPM (0..23).
const NumPCRs = 24

// SortedPCRs checks PCR indices (each in 0..NumPCRs-1, none twice) and
// returns them sorted.
func SortedPCRs(indices []int) ([]int, error) {
	out := slices.Clone(indices)
	slices.Sort(out)
	for i, p := range out {
		if p < 0 || p >= NumPCRs {
			return nil, fmt.Errorf("attest: PCR %d out of range 0..%d", p, NumPCRs-1)
		}
		if i > 0 && out[i-1] == p {
			return nil, fmt.Errorf("attest: PCR %d selected twice", p)
		}
	}
	return out, nil
}

// SelectedPCRs lists, in ascending order, the SHA-256 PCRs a
// TPML_PCR_SELECTION names. Selections of other banks are left out.
func SelectedPCRs(sel tpm2.TPMLPCRSelection) []int {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			continue
		}
		for byteIdx, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					out = append(out, byteIdx*8+bit)
				}
			}
		}
	}
	return out
}
