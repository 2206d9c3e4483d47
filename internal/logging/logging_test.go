package logging

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want Format
		err  bool
	}{
		{nil, Text, false},
		{[]string{"--log-format", "text"}, Text, false},
		{[]string{"--log-format", "json"}, JSON, false},
		{[]string{"--log-format", "JSON"}, "", true},
		{[]string{"--log-format", ""}, "", true},
		{[]string{"--log-format", "logfmt"}, "", true},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var out bytes.Buffer
		fs.SetOutput(&out)
		f := Flag(fs)
		err := fs.Parse(tc.args)
		if tc.err {
			if err == nil {
				t.Errorf("%q: accepted as %q", tc.args, *f)
			} else if !strings.Contains(out.String(), "the log format is text or json") {
				t.Errorf("%q: the refusal does not say the formats:\n%s", tc.args, &out)
			}
			continue
		}
		if err != nil || *f != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.args, *f, err, tc.want)
		}
	}
}

func TestNew(t *testing.T) {
	var b bytes.Buffer
	New(&b, JSON, nil).Info("hello", "k", 1)
	New(&b, JSON, nil).Debug("hidden")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "hello" || m["k"] != 1.0 {
		t.Fatalf("json: %q: %v", &b, err)
	}
	b.Reset()
	New(&b, Text, slog.LevelDebug).Debug("hello", "k", 1)
	if got := b.String(); !strings.Contains(got, "level=DEBUG msg=hello k=1") {
		t.Fatalf("text: %q", got)
	}
	New(io.Discard, "", nil).Info("the zero Format is text")
}
