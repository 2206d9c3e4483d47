package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// BindingDigest is the qualifyingData of the TPM quote that binds one event:
// SHA-256 of the RFC 8785 (JCS) canonical form of the statement payload with
// predicate.evidence removed. Publishers compute it before asking the device
// for a quote; the ledger recomputes it from the signed payload.
func BindingDigest(payload []byte) ([]byte, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if pred, ok := doc["predicate"].(map[string]any); ok {
		delete(pred, "evidence")
	}
	return canonicalDigest(doc)
}

// BindingDigestOf is BindingDigest of a payload already decoded into
// generic JSON (maps, slices, strings, json.Number); doc is not modified.
func BindingDigestOf(doc any) ([]byte, error) {
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the statement is not a JSON object", ErrMalformed)
	}
	c := make(map[string]any, len(top))
	for k, v := range top {
		c[k] = v
	}
	if pred, ok := top["predicate"].(map[string]any); ok {
		p := make(map[string]any, len(pred))
		for k, v := range pred {
			if k != "evidence" {
				p[k] = v
			}
		}
		c["predicate"] = p
	}
	return canonicalDigest(c)
}

func canonicalDigest(doc any) ([]byte, error) {
	canon, err := AppendCanonical(make([]byte, 0, 1024), doc)
	if err != nil {
		return nil, fmt.Errorf("%w: canonicalising: %v", ErrMalformed, err)
	}
	sum := sha256.Sum256(canon)
	return sum[:], nil
}

// AppendCanonical appends the RFC 8785 (JCS) form of a generic JSON value,
// as encoding/json decodes it with UseNumber (map[string]any, []any,
// string, json.Number, float64, bool, nil), to b. It writes the value
// directly instead of marshalling and re-parsing it; numbers are formatted
// by the reference implementation's ES6 formatter, and the tests hold it
// byte-for-byte to that implementation's Transform.
func AppendCanonical(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendCanonicalString(b, v), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s: %v", v, err)
		}
		return appendCanonicalNumber(b, f)
	case float64:
		return appendCanonicalNumber(b, v)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = AppendCanonical(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonicalString(b, k)
			b = append(b, ':')
			var err error
			if b, err = AppendCanonical(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("%T is not a JSON value", v)
}

func appendCanonicalNumber(b []byte, f float64) ([]byte, error) {
	s, err := jsoncanonicalizer.NumberToJSON(f)
	if err != nil {
		return nil, err
	}
	return append(b, s...), nil
}

// appendCanonicalString quotes s as JCS does: the two-character escapes
// for \b \t \n \f \r \" and \\, \u00xx for other control
// characters, every other character as itself.
func appendCanonicalString(b []byte, s string) []byte {
	const digits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', digits[c>>4], digits[c&0xf])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// compareUTF16 orders object keys by their UTF-16 code units (RFC 8785
// section 3.2.3).
func compareUTF16(a, b string) int {
	ascii := true
	for i := 0; i < len(a) && ascii; i++ {
		ascii = a[i] < utf8.RuneSelf
	}
	for i := 0; i < len(b) && ascii; i++ {
		ascii = b[i] < utf8.RuneSelf
	}
	if ascii {
		return strings.Compare(a, b)
	}
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

// StatementBindingDigest is BindingDigest of a statement built in memory.
func StatementBindingDigest(s *Statement) ([]byte, error) {
	payload, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return BindingDigest(payload)
}

// Digest is the event digest: SHA-256 of the DSSE pre-authentication encoding
// of the payload. It is what the ledger's hashedrekord leaf commits to.
func Digest(payloadType string, payload []byte) [32]byte {
	return sha256.Sum256(dsse.PAE(payloadType, payload))
}

// RawDigest is how the ledger names bytes that are not an envelope when it
// rejects them: lowercase hex SHA-256 of the message.
func RawDigest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}
