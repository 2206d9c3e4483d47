package ledger

import (
	"errors"
	"fmt"

	"github.com/custodyledger/custody/events"
)

// Sentinel errors, one family per rule; a *RuleError wraps one.
var (
	ErrRejected       = errors.New("event rejected")
	ErrUnknownDevice  = errors.New("unknown device")
	ErrNotCustodian   = errors.New("not the current custodian")
	ErrEquivocation   = errors.New("equivocation")
	ErrUnknownPartner = errors.New("unknown partner")
)

// RuleError is a refusal: which rule (a code of the catalogue,
// [events.Rejections]), and a sentence for the publisher.
type RuleError struct {
	Code   events.Code
	Reason string
	err    error
}

func (e *RuleError) Error() string { return string(e.Code) + ": " + e.Reason }

// Unwrap lets errors.Is match the rule's sentinel and ErrRejected.
func (e *RuleError) Unwrap() []error {
	if e.err != nil {
		return []error{ErrRejected, e.err}
	}
	return []error{ErrRejected}
}

func reject(code events.Code, format string, args ...any) *RuleError {
	return &RuleError{Code: code, Reason: fmt.Sprintf(format, args...), err: sentinel(code)}
}

func sentinel(c events.Code) error {
	switch c {
	case events.CodeUnknownDevice:
		return ErrUnknownDevice
	case events.CodeNotCustodian:
		return ErrNotCustodian
	case events.CodeEquivocation:
		return ErrEquivocation
	case events.CodeUnknownPartner:
		return ErrUnknownPartner
	}
	return nil
}
