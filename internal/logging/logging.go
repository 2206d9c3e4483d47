// Package logging builds the log/slog logger of Custody's long-running
// commands (custodyd, "custody station run", "custody-agent serve") from
// their --log-format flag: text, slog's key=value lines and the default, or
// json, one JSON object a line for log collectors. Both go to stderr.
package logging

import (
	"errors"
	"flag"
	"io"
	"log/slog"
)

// Format is the value of --log-format. It is a flag.Value, so a value other
// than text or json is refused while the flags are parsed.
type Format string

// The formats.
const (
	Text Format = "text"
	JSON Format = "json"
)

// String implements flag.Value.
func (f *Format) String() string {
	if f == nil {
		return ""
	}
	return string(*f)
}

// Set implements flag.Value.
func (f *Format) Set(s string) error {
	switch Format(s) {
	case Text, JSON:
		*f = Format(s)
		return nil
	}
	return errors.New("the log format is text or json")
}

// Flag registers --log-format on fs and returns its value (default text).
func Flag(fs *flag.FlagSet) *Format {
	f := Text
	fs.Var(&f, "log-format", "the log's `format` on stderr: text (key=value lines) or json (one JSON object a line)")
	return &f
}

// New returns a logger writing to w in format f (the zero Format is text),
// at level and above (nil: info).
func New(w io.Writer, f Format, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f == JSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
