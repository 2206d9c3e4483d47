package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/internal/logging"
	"github.com/custodyledger/custody/services/node"
)

// TestParseWithConfig reads a config file beneath the command line: the
// file's settings apply, the command line's win, and values are read as
// written (quotes for empty values and spaces, a # inside a value kept).
func TestParseWithConfig(t *testing.T) {
	conf := writeFile(t, "custodyd.conf", `
  # comment
http=127.0.0.1:9000
nats = ""
	hubs = " x , y "   
ledger-cache-mb = 512
v = true
origin = a#b
log-format = json
`)
	var s settings
	if err := parseWithConfig(quiet(newFlagSet(&s)), []string{"--http", "127.0.0.1:0", "--config", conf}, &s.config); err != nil {
		t.Fatal(err)
	}
	want := settings{
		config: conf, http: "127.0.0.1:0", nats: "", hubs: " x , y ", origin: "a#b", cacheMiB: 512, verbose: true,
		// defaults
		data: ".custody", dps: "127.0.0.1:8443", idScope: "0ne00C057D1", gcPercent: node.GCPercent, deviceNets: "127.0.0.0/8,::1/128", role: "all", natsURL: "tls://127.0.0.1:4222",
		replicas: 3, lease: 3 * time.Second, logFormat: s.logFormat,
	}
	if s != want || *s.logFormat != logging.JSON {
		t.Errorf("settings\n%+v (log format %s); want\n%+v (json)", s, *s.logFormat, want)
	}

	s = settings{}
	if err := parseWithConfig(quiet(newFlagSet(&s)), []string{"--http", "127.0.0.1:1"}, &s.config); err != nil || s.http != "127.0.0.1:1" {
		t.Errorf("without --config: %v, http %q", err, s.http)
	}
}

// quiet silences the flag package's own error messages.
func quiet(fs *flag.FlagSet) *flag.FlagSet {
	fs.SetOutput(io.Discard)
	return fs
}

// TestConfigExample reads deploy/custodyd.conf.example as custodyd would.
func TestConfigExample(t *testing.T) {
	var s settings
	if err := parseWithConfig(quiet(newFlagSet(&s)), []string{"--config", "../../deploy/custodyd.conf.example"}, &s.config); err != nil {
		t.Fatal(err)
	}
	if s.data != "/var/lib/custody" || s.nats != "0.0.0.0:4222" || s.dps != "0.0.0.0:8443" || s.http != "0.0.0.0:8480" || s.deviceNets != "127.0.0.0/8,::1/128" {
		t.Errorf("%+v; want the systemd unit's settings", s)
	}
}

// TestParseWithConfigRefused checks that a config file's error is a
// configError naming the file, the line and the key, and that a flag on
// the command line does not hide a bad value in the file.
func TestParseWithConfigRefused(t *testing.T) {
	conf := writeFile(t, "custodyd.conf", "http = 127.0.0.1:0\nledger-cache-mb = -1x\n")
	var s settings
	err := parseWithConfig(quiet(newFlagSet(&s)), []string{"--config", conf, "--ledger-cache-mb", "64"}, &s.config)
	var ce configError
	want := "config file " + conf + `, line 2: key "ledger-cache-mb": bad value "-1x": parse error`
	if !errors.As(err, &ce) || err.Error() != want {
		t.Fatalf("%v; want the configError %q", err, want)
	}
	s = settings{}
	err = parseWithConfig(quiet(newFlagSet(&s)), []string{"--config", conf, "--no-such-flag"}, &s.config)
	if err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("%v; want the flag package's error", err)
	}
}
