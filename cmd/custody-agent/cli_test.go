package main

// Tests of the built custody-agent binary as a user runs it: every command
// explains itself with --help (what it does, what it prints, its exit
// codes), command lines it cannot run are refused with a sentence and exit
// status 2, and errors about files name the flag, the file and what was
// expected.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/custodyledger/custody/internal/clitest"
)

// flagLines are the lines flag.PrintDefaults writes.
var flagLines = regexp.MustCompile(`(?m)^(  -\S.*|    \t.*)\n?`)

// sentence is prose: eight or more words ending with a full stop.
var sentence = regexp.MustCompile(`[A-Za-z]\S*(\s+\S+){7,}?\.(\s|$)`)

// commandLine is a command in the "Commands:" list of the usage.
var commandLine = regexp.MustCompile(`(?m)^  ([a-z]+)  +\S`)

func TestAgentHelp(t *testing.T) {
	t.Parallel()
	top := clitest.Run(t, "", "custody-agent", "--help")
	_, list, ok := strings.Cut(top.Output(), "Commands:\n")
	if !ok {
		t.Fatalf("--help lists no commands:\n%s", top.Output())
	}
	list, _, _ = strings.Cut(list, "\n\n")
	var commands []string
	for _, m := range commandLine.FindAllStringSubmatch(list, -1) {
		commands = append(commands, m[1])
	}
	if len(commands) < 2 {
		t.Fatalf("--help lists commands %q:\n%s", commands, top.Output())
	}
	cases := map[string][]string{ // what each usage must also say
		"--help": {"Exit codes of enroll"}, "-h": nil, "help": nil,
		"serve":  {"factory API", "Exit status: 0", "2 usage"},
		"enroll": {"Prints", "0 enrolled", "3 refused", "4 gate or DPS unavailable", "2 usage"},
	}
	for _, c := range commands {
		if _, ok := cases[c]; !ok {
			t.Errorf("command %q of --help is not covered by this test", c)
		}
	}
	for c, want := range cases {
		args := []string{c}
		if !strings.HasPrefix(c, "-") && c != "help" {
			args = append(args, "--help")
		}
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			r := clitest.Run(t, "", "custody-agent", args...)
			out := r.Output()
			if r.Code != 0 {
				t.Errorf("exit %d, want 0:\n%s", r.Code, out)
			}
			if !strings.Contains(out, "Usage:") {
				t.Errorf("no \"Usage:\" line:\n%s", out)
			}
			prose, flags, _ := strings.Cut(out, "Flags:\n")
			if !sentence.MatchString(flagLines.ReplaceAllString(prose, "")) {
				t.Errorf("the usage explains nothing beyond its flags:\n%s", out)
			}
			for _, w := range want {
				if !strings.Contains(prose, w) {
					t.Errorf("the usage does not say %q (before its flags):\n%s", w, out)
				}
			}
			if c == "serve" || c == "enroll" {
				if !strings.Contains(flags, "-tpm") {
					t.Errorf("the usage lists no flags after the explanation:\n%s", out)
				}
			}
		})
	}
}

// TestAgentUsageErrors: command lines custody-agent cannot run exit 2 with
// a sentence; serve without TLS (--pki, or --tls-cert, --tls-key and
// --client-ca) or --insecure-http is one, naming the flags.
func TestAgentUsageErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "missing the command"},
		{[]string{"bogus"}, `unknown command "bogus": want serve or enroll`},
		{[]string{"serve", "extra"}, `unexpected argument "extra": it takes flags only`},
		{[]string{"enroll", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"serve"}, "give --pki DIR (the demo PKI), or --tls-cert, --tls-key and --client-ca (--insecure-http"},
		{[]string{"serve", "--tls-cert", "a.pem"}, "--tls-cert, --tls-key and --client-ca go together"},
		{[]string{"serve", "--pki", "p", "--client-ca", "c.pem"}, "either --pki or --tls-cert, --tls-key and --client-ca, not both"},
		{[]string{"serve", "--insecure-http", "--pki", "p"}, "--insecure-http serves plain HTTP: give it without --pki"},
	} {
		t.Run(strings.Join(append([]string{"custody-agent"}, c.args...), " "), func(t *testing.T) {
			t.Parallel()
			r := clitest.Run(t, "", "custody-agent", c.args...)
			if r.Code != 2 {
				t.Errorf("exit %d, want 2:\n%s", r.Code, r.Output())
			}
			if !strings.Contains(r.Stderr, c.want) {
				t.Errorf("stderr does not say %q:\n%s", c.want, r.Stderr)
			}
		})
	}
}

// TestAgentFileErrors: a bad --dps-ca is reported with the flag, the file
// and what was expected, before the TPM is opened.
func TestAgentFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, c := range []struct{ file, why string }{{missing, "no such file"}, {notPEM, "holds no PEM certificate"}} {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			t.Parallel()
			r := clitest.Run(t, dir, "custody-agent", "enroll", "--tpm", "swtpm://127.0.0.1:1", "--dps-ca", c.file, "--retries", "0")
			if r.Code != 1 {
				t.Errorf("exit %d, want 1:\n%s", r.Code, r.Output())
			}
			for _, w := range []string{"--dps-ca " + c.file, c.why, "want PEM CERTIFICATEs", "tls/ca.pem"} {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("the error does not say %q:\n%s", w, r.Stderr)
				}
			}
		})
	}
}
