// Package schemas holds the custody event contract as data: versioned JSON
// Schemas (draft 2020-12) of every event kind, embedded in the binary and
// enforced by publishers before signing and by the ledger on ingest. See
// README.md in this folder for the list of kinds.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed custody/v1/*.json
var files embed.FS

const v1Base = "https://custodyledger.dev/schemas/custody/v1/"

var (
	once     sync.Once
	compiled map[string]*jsonschema.Schema
	fast     map[string]*fastSchema // by kind; absent: the general validator only (fast.go)
	loadErr  error
)

func load() {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	c.UseRegexpEngine(compilePattern)
	entries, err := fs.ReadDir(files, "custody/v1")
	if err != nil {
		loadErr = err
		return
	}
	var kinds []string
	for _, e := range entries {
		b, err := files.ReadFile(path.Join("custody/v1", e.Name()))
		if err != nil {
			loadErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			loadErr = fmt.Errorf("schemas: %s: %w", e.Name(), err)
			return
		}
		addPropertyNames(doc)
		if err := c.AddResource(v1Base+e.Name(), doc); err != nil {
			loadErr = err
			return
		}
		if e.Name() != "defs.json" {
			kinds = append(kinds, strings.TrimSuffix(e.Name(), ".json"))
		}
	}
	compiled = make(map[string]*jsonschema.Schema, len(kinds))
	fast = make(map[string]*fastSchema, len(kinds))
	for _, k := range kinds {
		s, err := c.Compile(v1Base + k + ".json")
		if err != nil {
			loadErr = fmt.Errorf("schemas: compiling %s: %w", k, err)
			return
		}
		compiled[k] = s
		// A fresh memo per kind: a failed compilation leaves partial nodes.
		if f, err := compileFast(s, map[*jsonschema.Schema]*fastSchema{}); err == nil {
			fast[k] = f
		}
	}
}

// addPropertyNames adds the property names a schema document declares to
// internKeys (decode.go).
func addPropertyNames(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if props, ok := e.(map[string]any); ok && k == "properties" {
				for name := range props {
					if len(name) <= maxInternKey {
						internKeys[name] = name
					}
				}
			}
			addPropertyNames(e)
		}
	case []any:
		for _, e := range v {
			addPropertyNames(e)
		}
	}
}

// compilePattern is the schemas' regexp engine: Go's regexp, except for the
// two patterns that every event repeats on its longest strings, which are
// matched by a loop over the bytes. A device.enrolled event carries about
// 1.5 kB of base64 (the LDevID certificate, the quote) under the base64
// pattern, and matching it with regexp was a fifth of the ledger's JSON
// work per event. FuzzPatterns holds each loop to its regexp.
// The names (partner, device, event ID) every event carries are matched by
// loops too.
func compilePattern(expr string) (jsonschema.Regexp, error) {
	switch expr {
	case base64Pattern:
		return fastPattern{expr, isBase64}, nil
	case hex64Pattern:
		return fastPattern{expr, isHex64}, nil
	case hex32Pattern:
		return fastPattern{expr, func(s string) bool { return isHex(s, 32) }}, nil
	case partnerPattern:
		return fastPattern{expr, isPartnerName}, nil
	case deviceSubjectPattern:
		return fastPattern{expr, func(s string) bool {
			id, ok := strings.CutPrefix(s, "device:")
			return ok && isHex64(id)
		}}, nil
	case partnerSubjectPattern:
		return fastPattern{expr, func(s string) bool {
			name, ok := strings.CutPrefix(s, "partner:")
			return ok && isPartnerName(name)
		}}, nil
	}
	return regexp.Compile(expr)
}

// The patterns compilePattern matches without regexp.
const (
	base64Pattern         = "^[A-Za-z0-9+/]*={0,2}$"
	hex64Pattern          = "^[0-9a-f]{64}$"
	hex32Pattern          = "^[0-9a-f]{32}$"
	partnerPattern        = "^[a-z0-9][a-z0-9-]{0,63}$"
	deviceSubjectPattern  = "^device:[0-9a-f]{64}$"
	partnerSubjectPattern = "^partner:[a-z0-9][a-z0-9-]{0,63}$"
)

// fastPatterns lists them (FuzzPatterns).
var fastPatterns = []string{base64Pattern, hex64Pattern, hex32Pattern, partnerPattern, deviceSubjectPattern, partnerSubjectPattern}

// isPartnerName is ^[a-z0-9][a-z0-9-]{0,63}$.
func isPartnerName(s string) bool {
	if len(s) < 1 || len(s) > 64 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

type fastPattern struct {
	expr  string
	match func(string) bool
}

func (p fastPattern) String() string            { return p.expr }
func (p fastPattern) MatchString(s string) bool { return p.match(s) }

// isBase64 is ^[A-Za-z0-9+/]*={0,2}$: base64 characters, then at most two
// '='.
func isBase64(s string) bool {
	n := len(s)
	for range 2 {
		if n > 0 && s[n-1] == '=' {
			n--
		}
	}
	for i := 0; i < n; i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// isHex64 is ^[0-9a-f]{64}$.
func isHex64(s string) bool { return isHex(s, 64) }

// isHex is ^[0-9a-f]{n}$.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Kinds returns the event kinds that have a v1 schema.
func Kinds() ([]string, error) {
	once.Do(load)
	if loadErr != nil {
		return nil, loadErr
	}
	out := make([]string, 0, len(compiled))
	for k := range compiled {
		out = append(out, k)
	}
	return out, nil
}

// ValidationError reports a statement that breaks its kind's schema.
type ValidationError struct {
	Kind   string
	Detail string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("event does not match schema custody/v1/%s.json: %s", e.Kind, e.Detail)
}

// Decode parses a payload into the generic form ValidateDocument and
// events.BindingDigestOf take (numbers kept exact), so a verifier parses
// the payload once for both. The result is encoding/json's (with
// UseNumber); most documents are decoded by a faster single pass that
// gives the same (decode.go).
func Decode(payload []byte) (any, error) {
	if v, ok := decodeSimple(payload); ok {
		return v, nil
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(payload))
}

// ValidateDocument checks a decoded statement against the v1 schema of
// kind. The caller must have checked that kind is the predicate's kind.
func ValidateDocument(kind string, doc any) error {
	once.Do(load)
	if loadErr != nil {
		return loadErr
	}
	s, ok := compiled[kind]
	if !ok {
		return &ValidationError{Kind: kind, Detail: fmt.Sprintf("unknown event kind %q", kind)}
	}
	if f := fast[kind]; f != nil && f.valid(doc, 0) {
		return nil // fast.go: an acceptance by the fast validator is final
	}
	if err := s.Validate(doc); err != nil {
		detail := err.Error()
		if ve, ok := err.(*jsonschema.ValidationError); ok {
			detail = strings.ReplaceAll(ve.Error(), "\n", "; ")
		}
		return &ValidationError{Kind: kind, Detail: detail}
	}
	return nil
}

// Validate checks a statement payload (the DSSE payload bytes) against the
// v1 schema of its predicate's kind.
func Validate(payload []byte) error {
	doc, err := Decode(payload)
	if err != nil {
		return &ValidationError{Kind: "?", Detail: "not JSON: " + err.Error()}
	}
	kind := ""
	if top, ok := doc.(map[string]any); ok {
		if pred, ok := top["predicate"].(map[string]any); ok {
			kind, _ = pred["kind"].(string)
		}
	}
	return ValidateDocument(kind, doc)
}
