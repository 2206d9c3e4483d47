package schemas

import (
	"encoding/json"
	"unicode/utf8"
)

// DecodeSimple is the single pass Decode tries first (below): ok only when
// it decoded payload, and then the value is what Decode returns. Callers
// that build typed values from the result rely on its refusing repeated
// keys.
func DecodeSimple(payload []byte) (doc any, ok bool) { return decodeSimple(payload) }

// decodeSimple decodes the JSON documents custody events are made of in
// one pass over the bytes, into exactly what Decode's general decoder
// (encoding/json with UseNumber) returns for them: map[string]any, []any,
// string, json.Number, bool, nil. It handles the common subset only and
// says so (ok false) otherwise, and the caller then decodes with the
// general decoder: strings with a backslash escape, a control character or
// invalid UTF-8, an object with a repeated key, nesting deeper than
// maxSimpleDepth, and anything that is not valid JSON. FuzzDecode holds it to the general decoder.
func decodeSimple(b []byte) (v any, ok bool) {
	once.Do(load) // internKeys
	d := simpleDecoder{b: b}
	v, ok = d.value(0)
	if !ok {
		return nil, false
	}
	d.space()
	return v, d.i == len(d.b)
}

const maxSimpleDepth = 100

type simpleDecoder struct {
	b []byte
	i int
}

func (d *simpleDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *simpleDecoder) value(depth int) (any, bool) {
	d.space()
	if d.i >= len(d.b) || depth > maxSimpleDepth {
		return nil, false
	}
	switch c := d.b[d.i]; {
	case c == '{':
		d.i++
		m := map[string]any{}
		d.space()
		if d.i < len(d.b) && d.b[d.i] == '}' {
			d.i++
			return m, true
		}
		for {
			d.space()
			k, ok := d.key()
			if !ok {
				return nil, false
			}
			d.space()
			if d.i >= len(d.b) || d.b[d.i] != ':' {
				return nil, false
			}
			d.i++
			v, ok := d.value(depth + 1)
			if !ok {
				return nil, false
			}
			if _, dup := m[k]; dup {
				// encoding/json keeps the last, but decoding into a struct
				// merges repeated objects: callers that build typed values
				// from this (events.Open) must not see repeated keys.
				return nil, false
			}
			m[k] = v
			if end, ok := d.sep('}'); !ok {
				return nil, false
			} else if end {
				return m, true
			}
		}
	case c == '[':
		d.i++
		a := []any{}
		d.space()
		if d.i < len(d.b) && d.b[d.i] == ']' {
			d.i++
			return a, true
		}
		for {
			v, ok := d.value(depth + 1)
			if !ok {
				return nil, false
			}
			a = append(a, v)
			if end, ok := d.sep(']'); !ok {
				return nil, false
			} else if end {
				return a, true
			}
		}
	case c == '"':
		return d.string()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return d.number()
	}
	return nil, false
}

func (d *simpleDecoder) literal(s string) bool {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

// key reads an object key: a string, as string does, without allocating
// when it is one of the names the schemas know (internKeys).
func (d *simpleDecoder) key() (string, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return "", false
	}
	for j := d.i + 1; j < len(d.b) && j-d.i <= maxInternKey; j++ {
		if c := d.b[j]; c == '"' {
			if k, ok := internKeys[string(d.b[d.i+1:j])]; ok {
				d.i = j + 1
				return k, true
			}
			break
		} else if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
	}
	return d.string()
}

// internKeys holds the object keys the decoder returns without allocating:
// the DSSE envelope's and every property name of the schemas (added by
// load, which decodeSimple runs first); read-only after that.
var internKeys = map[string]string{"payload": "payload", "payloadType": "payloadType", "signatures": "signatures", "keyid": "keyid", "sig": "sig"}

// maxInternKey bounds the keys looked up in internKeys.
const maxInternKey = 32

// string reads a string without escapes, control characters or invalid
// UTF-8.
func (d *simpleDecoder) string() (string, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return "", false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			d.i = j + 1
			return string(s), true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// number reads a JSON number (RFC 8259 grammar) as json.Number.
func (d *simpleDecoder) number() (any, bool) {
	b, i := d.b, d.i
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	d.i = i
	return json.Number(b[start:i]), true
}

// sep reads the separator after a member of an object or an element of an
// array: ',' (more follow) or the closing bracket (end). Anything else is
// not JSON this decoder takes.
func (d *simpleDecoder) sep(closing byte) (end, ok bool) {
	d.space()
	if d.i >= len(d.b) {
		return false, false
	}
	switch d.b[d.i] {
	case ',':
		d.i++
		return false, true
	case closing:
		d.i++
		return true, true
	}
	return false, false
}
