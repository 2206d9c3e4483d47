package schemas

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The fast validator answers one question, "does this document match?",
// for the documents the ledger validates on every event. It is compiled
// from the same compiled schemas ValidateDocument uses (so the schema files
// stay the only source of the rules) into a plain tree of checks, without
// the general validator's bookkeeping (instance and keyword locations,
// scopes, error values), which was most of its cost.
//
// Only an acceptance is final. When the fast validator rejects a document,
// ValidateDocument runs the general validator, whose error (naming the
// rule) is what the publisher is told; a document is never rejected on the
// fast validator's word alone. Leaf checks (pattern, format, content
// encoding) call the compiled schema's own functions. A schema using any
// keyword the fast validator does not implement is not compiled: its kind
// is validated by the general validator only. FuzzFastValidator holds the
// fast validator to the general one.

// fastSchema is one compiled schema (or subschema).
type fastSchema struct {
	boolean *bool   // a boolean schema: true or false
	types   uint8   // allowed types (0: any)
	consts  *string // const (string consts only)
	enum    []string
	format  func(any) error
	ref     *fastSchema
	allOf   []*fastSchema
	if_     *fastSchema
	then    *fastSchema
	else_   *fastSchema

	props     map[string]*fastSchema
	required  []string
	addlFalse bool        // additionalProperties: false
	addl      *fastSchema // additionalProperties: a schema
	propNames *fastSchema
	minProps  int // -1: none
	maxProps  int

	items    *fastSchema
	minItems int
	maxItems int

	minLen  int
	maxLen  int
	pattern jsonschema.Regexp
	content func(string) ([]byte, error)
}

// JSON types, as bits.
const (
	tNull uint8 = 1 << iota
	tBool
	tNumber
	tString
	tArray
	tObject
)

// maxFastDepth bounds the fast validator's recursion (the schemas nest a
// few levels; a $ref loop without progress ends here, as a rejection,
// which the general validator then explains).
const maxFastDepth = 64

// compileFast compiles s; an error means s uses something the fast
// validator does not implement.
func compileFast(s *jsonschema.Schema, memo map[*jsonschema.Schema]*fastSchema) (*fastSchema, error) {
	if s == nil {
		return nil, nil
	}
	if f, ok := memo[s]; ok {
		return f, nil
	}
	f := &fastSchema{minProps: -1, maxProps: -1, minItems: -1, maxItems: -1, minLen: -1, maxLen: -1}
	memo[s] = f
	if s.Bool != nil {
		f.boolean = s.Bool
		return f, nil
	}
	switch {
	case s.DraftVersion < 2019:
		return nil, fmt.Errorf("draft %d", s.DraftVersion)
	case s.RecursiveRef != nil, s.DynamicRef != nil, s.Not != nil, s.AnyOf != nil, s.OneOf != nil,
		s.PatternProperties != nil, s.Dependencies != nil, s.DependentRequired != nil, s.DependentSchemas != nil,
		s.UnevaluatedProperties != nil, s.UniqueItems, s.Contains != nil, s.MinContains != nil, s.MaxContains != nil,
		s.Items != nil, s.AdditionalItems != nil, s.PrefixItems != nil, s.UnevaluatedItems != nil,
		s.ContentMediaType != nil, s.ContentSchema != nil,
		s.Maximum != nil, s.Minimum != nil, s.ExclusiveMaximum != nil, s.ExclusiveMinimum != nil, s.MultipleOf != nil,
		len(s.Extensions) > 0:
		return nil, fmt.Errorf("%s: a keyword the fast validator does not implement", s.Location)
	}
	if s.Types != nil {
		for _, t := range s.Types.ToStrings() {
			switch t {
			case "null":
				f.types |= tNull
			case "boolean":
				f.types |= tBool
			case "number":
				f.types |= tNumber
			case "string":
				f.types |= tString
			case "array":
				f.types |= tArray
			case "object":
				f.types |= tObject
			default: // integer
				return nil, fmt.Errorf("%s: type %s", s.Location, t)
			}
		}
	}
	if s.Const != nil {
		c, ok := (*s.Const).(string)
		if !ok {
			return nil, fmt.Errorf("%s: a const that is not a string", s.Location)
		}
		f.consts = &c
	}
	if s.Enum != nil {
		f.enum = make([]string, 0, len(s.Enum.Values))
		for _, v := range s.Enum.Values {
			c, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%s: an enum value that is not a string", s.Location)
			}
			f.enum = append(f.enum, c)
		}
	}
	if s.Format != nil {
		if s.Format.Name == "regex" {
			return nil, fmt.Errorf("%s: format regex", s.Location)
		}
		f.format = s.Format.Validate
	}
	var err error
	if f.ref, err = compileFast(s.Ref, memo); err != nil {
		return nil, err
	}
	for _, a := range s.AllOf {
		c, err := compileFast(a, memo)
		if err != nil {
			return nil, err
		}
		f.allOf = append(f.allOf, c)
	}
	if f.if_, err = compileFast(s.If, memo); err != nil {
		return nil, err
	}
	if f.then, err = compileFast(s.Then, memo); err != nil {
		return nil, err
	}
	if f.else_, err = compileFast(s.Else, memo); err != nil {
		return nil, err
	}
	if s.Properties != nil {
		f.props = make(map[string]*fastSchema, len(s.Properties))
		for k, p := range s.Properties {
			if f.props[k], err = compileFast(p, memo); err != nil {
				return nil, err
			}
		}
	}
	f.required = s.Required
	switch a := s.AdditionalProperties.(type) {
	case nil:
	case bool:
		f.addlFalse = !a
	case *jsonschema.Schema:
		if f.addl, err = compileFast(a, memo); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: additionalProperties %T", s.Location, a)
	}
	if f.propNames, err = compileFast(s.PropertyNames, memo); err != nil {
		return nil, err
	}
	if s.MinProperties != nil {
		f.minProps = *s.MinProperties
	}
	if s.MaxProperties != nil {
		f.maxProps = *s.MaxProperties
	}
	if f.items, err = compileFast(s.Items2020, memo); err != nil {
		return nil, err
	}
	if s.MinItems != nil {
		f.minItems = *s.MinItems
	}
	if s.MaxItems != nil {
		f.maxItems = *s.MaxItems
	}
	if s.MinLength != nil {
		f.minLen = *s.MinLength
	}
	if s.MaxLength != nil {
		f.maxLen = *s.MaxLength
	}
	f.pattern = s.Pattern
	if s.ContentEncoding != nil {
		f.content = s.ContentEncoding.Decode
	}
	return f, nil
}

// valid reports whether v (decoded as Decode does) matches f.
func (f *fastSchema) valid(v any, depth int) bool {
	if f.boolean != nil {
		return *f.boolean
	}
	if depth > maxFastDepth {
		return false
	}
	depth++
	var t uint8
	switch v.(type) {
	case nil:
		t = tNull
	case bool:
		t = tBool
	case json.Number, float64:
		t = tNumber
	case string:
		t = tString
	case []any:
		t = tArray
	case map[string]any:
		t = tObject
	default:
		return false
	}
	if f.types != 0 && f.types&t == 0 {
		return false
	}
	if f.consts != nil {
		if s, ok := v.(string); !ok || s != *f.consts {
			return false
		}
	}
	if f.enum != nil {
		s, ok := v.(string)
		if !ok {
			return false
		}
		found := false
		for _, e := range f.enum {
			if s == e {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.format != nil && f.format(v) != nil {
		return false
	}
	if f.ref != nil && !f.ref.valid(v, depth) {
		return false
	}
	switch v := v.(type) {
	case map[string]any:
		if !f.validObject(v, depth) {
			return false
		}
	case []any:
		if f.minItems >= 0 && len(v) < f.minItems || f.maxItems >= 0 && len(v) > f.maxItems {
			return false
		}
		if f.items != nil {
			for _, e := range v {
				if !f.items.valid(e, depth) {
					return false
				}
			}
		}
	case string:
		if f.minLen >= 0 || f.maxLen >= 0 {
			n := utf8.RuneCountInString(v)
			if f.minLen >= 0 && n < f.minLen || f.maxLen >= 0 && n > f.maxLen {
				return false
			}
		}
		if f.pattern != nil && !f.pattern.MatchString(v) {
			return false
		}
		if f.content != nil {
			if _, err := f.content(v); err != nil {
				return false
			}
		}
	}
	for _, a := range f.allOf {
		if !a.valid(v, depth) {
			return false
		}
	}
	if f.if_ != nil {
		if f.if_.valid(v, depth) {
			if f.then != nil && !f.then.valid(v, depth) {
				return false
			}
		} else if f.else_ != nil && !f.else_.valid(v, depth) {
			return false
		}
	}
	return true
}

func (f *fastSchema) validObject(m map[string]any, depth int) bool {
	if f.minProps >= 0 && len(m) < f.minProps || f.maxProps >= 0 && len(m) > f.maxProps {
		return false
	}
	for _, r := range f.required {
		if _, ok := m[r]; !ok {
			return false
		}
	}
	for k, e := range m {
		if f.propNames != nil && !f.propNames.valid(k, depth) {
			return false
		}
		if p, ok := f.props[k]; ok {
			if !p.valid(e, depth) {
				return false
			}
		} else if f.addlFalse {
			return false
		} else if f.addl != nil && !f.addl.valid(e, depth) {
			return false
		}
	}
	return true
}
