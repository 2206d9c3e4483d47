package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/internal/clitest"
	"github.com/custodyledger/custody/services/gate/gatewire"
)

// refusedWithin bounds how long custodyd may take to refuse a start. It
// is well under the 30 s custodyd once waited for an embedded NATS server
// that could not listen, and generous for a loaded CI machine.
const refusedWithin = 15 * time.Second

// healthy checks that custodyd at httpURL, with its data in data, answers
// /healthz with 200 (over TLS, trusting the PKI's CA).
func healthy(t *testing.T, data, httpURL string) {
	t.Helper()
	resp, err := clitest.Client(t, filepath.Join(data, "pki"), "").Get(httpURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/healthz: %s", httpURL, resp.Status)
	}
}

// TestListenerInUse starts custodyd with each of its listeners on a port
// another process holds: it exits at once with a sentence naming the
// address and the flag, instead of waiting 30 s for NATS ("NATS did not
// become ready").
func TestListenerInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	for _, flag := range []string{"nats", "http", "dps"} {
		t.Run(flag, func(t *testing.T) {
			dir := t.TempDir()
			addrs := map[string]string{"nats": "127.0.0.1:0", "http": "127.0.0.1:0", "dps": "127.0.0.1:0"}
			addrs[flag] = addr
			s := clitest.Start(t, dir, "custodyd", "--data", filepath.Join(dir, "data"),
				"--nats", addrs["nats"], "--http", addrs["http"], "--dps", addrs["dps"])
			if code := s.Wait(t, refusedWithin); code != 1 {
				t.Fatalf("exit %d; want 1:\n%s", code, s.Log())
			}
			want := fmt.Sprintf("custodyd: %s cannot listen on %s (--%s): address already in use\n", strings.ToUpper(flag), addr, flag)
			if !strings.Contains(s.Log(), want) {
				t.Fatalf("custodyd printed:\n%s\nwant the line %q", s.Log(), want)
			}
		})
	}
}

// TestDataInUse starts a second custodyd on a running one's data folder:
// it exits with a sentence naming the folder, the first one's process and
// --data, and the first goes on serving.
func TestDataInUse(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	first := clitest.StartCustodyd(t, data)
	second := clitest.Start(t, filepath.Dir(data), "custodyd", "--data", data,
		"--http", "127.0.0.1:0", "--dps", "127.0.0.1:0", "--nats", "127.0.0.1:0")
	if code := second.Wait(t, refusedWithin); code != 1 {
		t.Fatalf("exit %d; want 1:\n%s", code, second.Log())
	}
	want := fmt.Sprintf("custodyd: the data folder %s (--data) is in use by another custodyd (pid %d): stop it, or give this one another --data\n",
		data, first.Cmd.Process.Pid)
	if second.Log() != want {
		t.Fatalf("custodyd printed:\n%s\nwant:\n%s", second.Log(), want)
	}
	healthy(t, data, first.HTTP)
	first.Stop(t)
	if err := first.ExitErr(); err != nil {
		t.Fatalf("the first custodyd: %v", err)
	}
	// Stopped, the first leaves the folder to the next.
	healthy(t, data, clitest.StartCustodyd(t, data).HTTP)
}

// TestLogFormat runs the servers with --log-format json (custodyd, a
// standalone station, a device agent): every line each prints from start
// to stop is a JSON object with a level and a message. text is the default
// (clitest.StartCustodyd waits for its key=value ready line); another
// value is refused as a usage error.
func TestLogFormat(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		dir := t.TempDir()
		data := filepath.Join(dir, "data")
		d := clitest.Start(t, dir, "custodyd", "--log-format", "json", "--data", data,
			"--http", "127.0.0.1:0", "--dps", "127.0.0.1:0", "--nats", "127.0.0.1:0")
		m := d.WaitLine(t, regexp.MustCompile(`"msg":"custody node ready","http":"([^"]+)","dps":"[^"]+","nats":"([^"]+)"`), 2*time.Minute)
		healthy(t, data, m[1])
		st := clitest.Start(t, dir, "custody", "station", "run", "--log-format", "json", "--role", "tpm-vendor",
			"--pki", filepath.Join(data, "pki"), "--nats", m[2], "--ledger", m[1]+"/ledger",
			"--listen", "127.0.0.1:0", "--outbox", filepath.Join(dir, "outbox"))
		st.WaitLine(t, regexp.MustCompile(`"msg":"station listening"`), time.Minute)
		agent := clitest.Start(t, dir, "custody-agent", "serve", "--log-format", "json", "--tpm", "sim:seed=5",
			"--state", filepath.Join(dir, "device"), "--listen", "127.0.0.1:0", "--pki", filepath.Join(data, "pki"))
		agent.WaitLine(t, regexp.MustCompile(`"msg":"device factory API listening"`), time.Minute)
		for _, s := range []*clitest.Server{agent, st, d} {
			s.Stop(t)
			if err := s.ExitErr(); err != nil {
				t.Fatalf("%s: %v\n%s", s.Cmd.Path, err, s.Log())
			}
			lines := strings.Split(strings.TrimSuffix(s.Log(), "\n"), "\n")
			for _, l := range lines {
				var rec struct{ Msg, Level string }
				if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Msg == "" || rec.Level == "" {
					t.Errorf("%s printed a line that is not a JSON log record with msg and level: %q (%v)", s.Cmd.Path, l, err)
				}
			}
		}
	})
	t.Run("text", func(t *testing.T) {
		d := clitest.StartCustodyd(t, filepath.Join(t.TempDir(), "data"), "--log-format", "text")
		healthy(t, d.Data, d.HTTP)
	})
	t.Run("invalid", func(t *testing.T) {
		for _, args := range [][]string{
			{"custodyd", "--log-format", "logfmt"},
			{"custody", "station", "run", "--log-format", "logfmt", "--role", "tpm-vendor"},
			{"custody-agent", "serve", "--log-format", "logfmt"},
		} {
			r := clitest.Run(t, "", args[0], args[1:]...)
			if want := `invalid value "logfmt" for flag -log-format: the log format is text or json`; r.Code != 2 || !strings.Contains(r.Stderr, want) {
				t.Errorf("%s: exit %d, printed:\n%s\nwant exit 2 and %q", strings.Join(args, " "), r.Code, r.Output(), want)
			}
		}
	})
}

// writeFile writes a file in a test's temporary folder.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigFile starts custodyd with --config: the file's settings take
// effect, and a flag on the command line wins over the file's.
func TestConfigFile(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	conf := writeFile(t, "custodyd.conf", fmt.Sprintf(`# custodyd settings
data = %s
http = 127.0.0.1:0
nats = ""

id-scope = 0ne00C0FF11
# overridden by --dps: custodyd would not start with this one, in use
dps = %s
log-format = text
`, data, taken.Addr()))
	s := clitest.Start(t, t.TempDir(), "custodyd", "--config", conf, "--dps", "127.0.0.1:0")
	m := s.WaitLine(t, regexp.MustCompile(`custody node ready.*http=(\S+) dps=(\S+) nats=(\S*)`), 2*time.Minute)
	if m[1] == "http://127.0.0.1:8480" || m[3] != `""` {
		t.Errorf("ready with http=%s nats=%s; want the file's: a free port and no NATS listener", m[1], m[3])
	}
	healthy(t, data, m[1])
	if _, err := os.Stat(filepath.Join(data, "ledger")); err != nil {
		t.Errorf("the ledger is not in the file's data folder: %v", err)
	}
	// The gate serves the file's ID scope, not the default one.
	for scope, want := range map[string]string{
		"0ne00C0FF11": "tpm.endorsementKey",
		"0ne00C057D1": "is not served by this gate",
	} {
		id := strings.Repeat("ab", 32)
		req, _ := http.NewRequest(http.MethodPut, m[1]+"/gate/"+scope+"/registrations/"+id+"/register?api-version="+gatewire.APIVersion,
			strings.NewReader(`{"registrationId":"`+id+`"}`))
		resp, err := clitest.Client(t, filepath.Join(data, "pki"), "").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), want) {
			t.Errorf("registering in %s: %s %s; want 400 saying %q", scope, resp.Status, body, want)
		}
	}
}

// TestConfigFileRefused gives custodyd config files it must refuse: it
// exits 2 before touching its data folder, with a sentence naming the file
// and, for a bad line, the line and the key.
func TestConfigFileRefused(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       string // after "custodyd: config file <path>"
	}{
		{"unknown key", "http = 127.0.0.1:0\n\nhtp = 127.0.0.1:0\n",
			`, line 3: unknown key "htp" (the keys are custodyd's flag names: cpuprofile, data, `},
		{"dashes", "--http = 127.0.0.1:0\n", `, line 1: unknown key "--http" (write the flag's name without dashes: http)`},
		{"bad number", "# cache\nledger-cache-mb = lots\n", `, line 2: key "ledger-cache-mb": bad value "lots": parse error`},
		{"bad log format", "log-format = xml\n", `, line 1: key "log-format": bad value "xml": the log format is text or json`},
		{"bad bool", "v = yes please\n", `, line 1: key "v": bad value "yes please": parse error`},
		{"bad quotes", "nats = \"127.0.0.1:0\n", `, line 1: key "nats": the value "127.0.0.1:0 is not a well-formed quoted string`},
		{"twice", "http = 127.0.0.1:0\nhttp = 127.0.0.1:1\n", `, line 2: key "http" is set again (first on line 1)`},
		{"no equals", "http 127.0.0.1:0\n", `, line 1: "http 127.0.0.1:0" is not a setting: write key = value`},
		{"config", "config = other.conf\n", `, line 1: key "config": a config file cannot name another`},
		{"missing", "", ` (--config): cannot read it: no such file or directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "missing.conf")
			if tc.name != "missing" {
				conf = writeFile(t, "custodyd.conf", tc.text)
			}
			dir := t.TempDir()
			// A valid flag on the command line does not hide a bad value in the file.
			r := clitest.Run(t, dir, "custodyd", "--config", conf, "--data", "data", "--ledger-cache-mb", "64")
			want := "custodyd: config file " + conf + tc.want
			if r.Code != 2 || !strings.HasPrefix(r.Stderr, want) || strings.Count(r.Stderr, "\n") != 1 {
				t.Errorf("exit %d, printed:\n%s\nwant exit 2 and one line starting %q", r.Code, r.Output(), want)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
				t.Errorf("the data folder was made: %v", err)
			}
		})
	}
}

// TestVerifierRole: custodyd --role verifier connects to a running
// custodyd's NATS as the verifier user, runs until SIGTERM and exits 0;
// without --pki, or with an unknown role, it says why.
func TestVerifierRole(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	d := clitest.Start(t, dir, "custodyd", "--data", data, "--verdict-wait", "2s",
		"--http", "127.0.0.1:0", "--dps", "127.0.0.1:0", "--nats", "127.0.0.1:0")
	m := d.WaitLine(t, regexp.MustCompile(`msg="custody node ready" http=(\S+) dps=\S+ nats=(\S+)`), 2*time.Minute)
	v := clitest.Start(t, dir, "custodyd", "--role", "verifier", "--pki", filepath.Join(data, "pki"), "--nats-url", m[2])
	v.WaitLine(t, regexp.MustCompile(`msg="verifier running"`), time.Minute)
	v.Stop(t)
	if err := v.ExitErr(); err != nil {
		t.Fatalf("verifier: %v\n%s", err, v.Log())
	}
	if r := clitest.Run(t, "", "custodyd", "--role", "verifier"); r.Code != 2 || !strings.Contains(r.Stderr, "--role verifier needs --pki") {
		t.Errorf("without --pki: exit %d\n%s", r.Code, r.Output())
	}
	if r := clitest.Run(t, "", "custodyd", "--role", "sequencr"); r.Code != 2 || !strings.Contains(r.Stderr, `--role "sequencr": all, sequencer or verifier`) {
		t.Errorf("unknown role: exit %d\n%s", r.Code, r.Output())
	}
}

// A sequencer's command line that lacks what a sequencer needs is refused
// at once, naming the flag, with exit status 2 (a unit restarting it would
// not help). The sequencer itself runs in make test-cluster.
func TestSequencerRoleFlags(t *testing.T) {
	full := []string{"--role", "sequencer", "--pki", "p", "--db", "root@unix(/s)/custody", "--trillian", "127.0.0.1:1", "--tree-id", "7", "--instance", "s1"}
	for _, c := range []struct {
		drop, want string
	}{
		{"--pki", "needs --pki"}, {"--db", "needs --db"}, {"--trillian", "needs --trillian"}, {"--tree-id", "needs --tree-id"}, {"--instance", "needs --instance"},
	} {
		var args []string
		for i := 0; i < len(full); i += 2 {
			if full[i] != c.drop {
				args = append(args, full[i], full[i+1])
			}
		}
		if r := clitest.Run(t, "", "custodyd", args...); r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("without %s: exit %d\n%s", c.drop, r.Code, r.Output())
		}
	}
	if r := clitest.Run(t, "", "custodyd", append(full, "--lease", "100ms")...); r.Code != 2 || !strings.Contains(r.Stderr, "at least 300ms") {
		t.Errorf("a 100ms lease: exit %d\n%s", r.Code, r.Output())
	}
}
