package schemas

import "github.com/santhosh-tekuri/jsonschema/v6"

// FastValidator reports whether kind has a fast validator, and why not.
func FastValidator(kind string) (bool, error) {
	once.Do(load)
	if fast[kind] != nil {
		return true, nil
	}
	_, err := compileFast(compiled[kind], map[*jsonschema.Schema]*fastSchema{})
	return false, err
}

// FastValid is the fast validator's verdict on doc as kind.
func FastValid(kind string, doc any) bool {
	once.Do(load)
	return fast[kind].valid(doc, 0)
}

// GeneralValid is the general validator's verdict on doc as kind.
func GeneralValid(kind string, doc any) error {
	once.Do(load)
	return compiled[kind].Validate(doc)
}
