package attest

// The file formats of tpm2-tools (tpm2_createak, tpm2_readpublic,
// tpm2_quote, tpm2_pcrread, tpm2_checkquote, version 5.x), so that a quote
// made by tpm2-tools verifies here and a quote made here passes
// tpm2_checkquote. tpm2-tools writes the attestation message (-m) as a
// bare TPMS_ATTEST and the signature (-s, default "tss" format) as a
// TPMT_SIGNATURE, exactly the Attest and Signature of a Quote; only public
// keys and PCR files need converting.

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// PublicArea returns the TPMT_PUBLIC inside b, which may be a TPM2B_PUBLIC
// (tpm2-tools' default "tss" format, as tpm2_createak -u and
// tpm2_readpublic -o write it) or a bare TPMT_PUBLIC ("-f tpmt"). It only
// unwraps: ParseAttestationKey or PublicKeyFromTPMT check the result. A
// PEM or DER public key is refused: it has lost the TPM attributes a
// verifier must check.
func PublicArea(b []byte) ([]byte, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: public area of %d bytes", ErrMalformed, len(b))
	}
	if bytes.HasPrefix(b, []byte("-----BEGIN")) || b[0] == 0x30 {
		return nil, fmt.Errorf("%w: a PEM or DER public key carries no TPM attributes; give the TPM2B_PUBLIC (tpm2-tools' default tss format) or TPMT_PUBLIC", ErrMalformed)
	}
	// A TPMT_PUBLIC starts with its type (0x0001 RSA, 0x0008 keyedhash,
	// 0x0023 ECC, 0x0025 symcipher); a TPM2B_PUBLIC with its size, which
	// for any real key is none of those.
	if int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		return b[2:], nil
	}
	return b, nil
}

// Layout of tpm2-tools' "serialized" PCR file (tpm2_quote -o,
// tpm2_pcrread -o, tpm2_checkquote -f): the C structures of tpm2-tss as
// they lie in memory on a little-endian host, padding included:
// TPML_PCR_SELECTION (UINT32 count; 16 × TPMS_PCR_SELECTION of UINT16
// hash, UINT8 sizeofSelect, BYTE pcrSelect[4], 1 byte of padding), a
// UINT32 count of the TPML_DIGEST structures that follow, then each
// TPML_DIGEST (UINT32 count; 8 × TPM2B_DIGEST of UINT16 size, BYTE
// buffer[64]).
const (
	t2tBanks          = 16
	t2tSelectMax      = 4
	t2tSelectionSize  = 8
	t2tSelectionList  = 4 + t2tBanks*t2tSelectionSize // 132
	t2tDigestsPerList = 8
	t2tDigestSize     = 2 + 64
	t2tDigestList     = 4 + t2tDigestsPerList*t2tDigestSize // 532
	t2tMaxLists       = 64
)

// ParseTPM2ToolsPCRs decodes a PCR file written by tpm2-tools into SHA-256
// PCR values by index. Two formats are read:
//
//   - "serialized" (the default of tpm2_quote -o and tpm2_pcrread -o in
//     tpm2-tools 5.x), which names its PCRs;
//   - "values" (-F values): the digests alone, concatenated; sel then
//     names the PCRs they belong to, in order (for a quote, its own
//     selection: see QuoteFromTPM2Tools).
//
// PCRs of banks other than SHA-256 are refused, as VerifyQuote refuses
// them. The values are untrusted until a quote over them verifies.
func ParseTPM2ToolsPCRs(b []byte, sel []int) (map[int][]byte, error) {
	if len(b) >= t2tSelectionList+4 && (len(b)-t2tSelectionList-4)%t2tDigestList == 0 {
		return parseSerializedPCRs(b)
	}
	if len(b) != 32*len(sel) {
		return nil, fmt.Errorf("%w: PCR file of %d bytes is neither tpm2-tools' serialized format nor %d SHA-256 values", ErrMalformed, len(b), len(sel))
	}
	out := make(map[int][]byte, len(sel))
	for i, p := range sel {
		if p < 0 || p >= NumPCRs {
			return nil, fmt.Errorf("attest: PCR %d out of range 0..%d", p, NumPCRs-1)
		}
		if _, dup := out[p]; dup {
			return nil, fmt.Errorf("attest: PCR %d selected twice", p)
		}
		out[p] = bytes.Clone(b[32*i : 32*i+32])
	}
	return out, nil
}

func parseSerializedPCRs(b []byte) (map[int][]byte, error) {
	le := binary.LittleEndian
	banks := le.Uint32(b)
	if banks > t2tBanks {
		return nil, fmt.Errorf("%w: PCR file selects %d banks", ErrMalformed, banks)
	}
	var sel []int
	for i := range int(banks) {
		e := b[4+i*t2tSelectionSize:]
		hash, size := tpm2.TPMIAlgHash(le.Uint16(e)), int(e[2])
		if size > t2tSelectMax {
			return nil, fmt.Errorf("%w: PCR file: sizeofSelect %d", ErrMalformed, size)
		}
		for byteIdx, bits := range e[3 : 3+size] {
			for bit := range 8 {
				if bits&(1<<bit) == 0 {
					continue
				}
				if hash != tpm2.TPMAlgSHA256 {
					return nil, fmt.Errorf("%w: PCR file has PCRs of bank %v; only SHA-256 is used", ErrPCRSelectionMismatch, hash)
				}
				p := byteIdx*8 + bit
				if p >= NumPCRs {
					return nil, fmt.Errorf("attest: PCR file: PCR %d out of range 0..%d", p, NumPCRs-1)
				}
				sel = append(sel, p)
			}
		}
	}
	rest := b[t2tSelectionList:]
	lists := le.Uint32(rest)
	rest = rest[4:]
	if lists > t2tMaxLists || len(rest) != int(lists)*t2tDigestList {
		return nil, fmt.Errorf("%w: PCR file: %d digest lists in %d bytes", ErrMalformed, lists, len(rest))
	}
	out := make(map[int][]byte, len(sel))
	next := 0
	for l := range int(lists) {
		list := rest[l*t2tDigestList:]
		n := le.Uint32(list)
		if n > t2tDigestsPerList {
			return nil, fmt.Errorf("%w: PCR file: digest list of %d", ErrMalformed, n)
		}
		for d := range int(n) {
			e := list[4+d*t2tDigestSize:]
			if size := le.Uint16(e); size != 32 {
				return nil, fmt.Errorf("%w: PCR file: SHA-256 digest of %d bytes", ErrMalformed, size)
			}
			if next >= len(sel) {
				return nil, fmt.Errorf("%w: PCR file has more digests than selected PCRs (%d)", ErrMalformed, len(sel))
			}
			p := sel[next]
			if _, dup := out[p]; dup {
				return nil, fmt.Errorf("%w: PCR file selects PCR %d twice", ErrMalformed, p)
			}
			out[p] = bytes.Clone(e[2:34])
			next++
		}
	}
	if next != len(sel) {
		return nil, fmt.Errorf("%w: PCR file has %d digests for %d selected PCRs", ErrMalformed, next, len(sel))
	}
	return out, nil
}

// FormatTPM2ToolsPCRs encodes SHA-256 PCR values in tpm2-tools'
// "serialized" PCR file format, as tpm2_quote -o writes it and
// tpm2_checkquote -f reads it.
func FormatTPM2ToolsPCRs(pcrs map[int][]byte) ([]byte, error) {
	idx := make([]int, 0, len(pcrs))
	for p, v := range pcrs {
		if p < 0 || p >= NumPCRs {
			return nil, fmt.Errorf("attest: PCR %d out of range 0..%d", p, NumPCRs-1)
		}
		if len(v) != 32 {
			return nil, fmt.Errorf("attest: PCR %d value of %d bytes, want 32", p, len(v))
		}
		idx = append(idx, p)
	}
	sorted, err := SortedPCRs(idx)
	if err != nil {
		return nil, err
	}
	lists := (len(sorted) + t2tDigestsPerList - 1) / t2tDigestsPerList
	out := make([]byte, t2tSelectionList+4+lists*t2tDigestList)
	le := binary.LittleEndian
	le.PutUint32(out, 1)
	le.PutUint16(out[4:], uint16(tpm2.TPMAlgSHA256))
	out[6] = 3 // sizeofSelect: PCRs 0..23
	for _, p := range sorted {
		out[7+p/8] |= 1 << (p % 8)
	}
	le.PutUint32(out[t2tSelectionList:], uint32(lists))
	for i, p := range sorted {
		list := out[t2tSelectionList+4+(i/t2tDigestsPerList)*t2tDigestList:]
		n := i % t2tDigestsPerList
		le.PutUint32(list, uint32(n+1))
		e := list[4+n*t2tDigestSize:]
		le.PutUint16(e, 32)
		copy(e[2:], pcrs[p])
	}
	return out, nil
}

// QuoteFromTPM2Tools assembles a Quote from tpm2_quote's output files: the
// message (-m, a TPMS_ATTEST), the signature (-s, a TPMT_SIGNATURE in the
// default "tss" format) and the PCR file (-o, in either format
// ParseTPM2ToolsPCRs reads; a "values" file is matched with the SHA-256
// PCRs the message itself selects). Nothing is verified: pass the result
// to VerifyQuote.
func QuoteFromTPM2Tools(message, signature, pcrFile []byte) (*Quote, error) {
	att, err := decodeAttest(message)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAQuote, err)
	}
	if att.typ != tpm2.TPMSTAttestQuote {
		return nil, fmt.Errorf("%w: attestation type %#x", ErrNotAQuote, uint16(att.typ))
	}
	sel, other := att.selectedSHA256PCRs(nil)
	if other != 0 {
		return nil, fmt.Errorf("%w: quote covers PCRs of bank %v", ErrPCRSelectionMismatch, other)
	}
	pcrs, err := ParseTPM2ToolsPCRs(pcrFile, sel)
	if err != nil {
		return nil, err
	}
	return &Quote{Attest: bytes.Clone(message), Signature: bytes.Clone(signature), PCRs: pcrs}, nil
}
