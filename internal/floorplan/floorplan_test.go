package floorplan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/custodyledger/custody"

// Packages the checks name (see TestFloorPlan).
const (
	// attestTPM is the device side of attest (TPM access, the simulator),
	// split from the verifier. Any package whose path contains "/attest/tpm"
	// is device side.
	attestTPM = module + "/attest/tpm"
	// gateWire is the gate's wire types (the DPS-shaped requests and
	// answers) that the device agent needs without linking the gate.
	gateWire = module + "/services/gate/gatewire"
	// simulator is the go-tpm-tools TPM simulator (C, cgo).
	simulator = "github.com/google/go-tpm-tools/simulator"
)

// floors, lowest first. A module package is on the first floor one of
// whose prefixes (paths relative to the module) it is or is under; packages
// on no floor (internal/ test tooling) are not constrained themselves, but
// a floor cannot reach upwards through them either.
var floors = []struct {
	name     string
	prefixes []string
}{
	{"attest verifier and schemas", []string{"attest", "schemas"}},
	{"events (the contract)", []string{"events"}},
	{"ledger", []string{"ledger"}},
	{"services and the device side", []string{"services", "attest/tpm"}},
	{"cmd", []string{"cmd", "bench"}},
}

// rel is path relative to the module, or "" outside it.
func rel(path string) string {
	if path == module {
		return "."
	}
	r, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return ""
	}
	return r
}

// under reports whether module package path is dir (relative) or below it.
func under(path, dir string) bool {
	r := rel(path)
	return r != "" && (r == dir || strings.HasPrefix(r, dir+"/"))
}

// deviceSide reports whether path is attest's device side.
func deviceSide(path string) bool { return strings.Contains(path, "/attest/tpm") }

// floor returns the index of path's floor in floors, or -1.
func floor(path string) int {
	if rel(path) == "" {
		return -1
	}
	if deviceSide(path) {
		path = module + "/attest/tpm"
	}
	best, bestLen := -1, -1
	for i, f := range floors {
		for _, p := range f.prefixes {
			if under(path, p) && len(p) > bestLen {
				best, bestLen = i, len(p)
			}
		}
	}
	return best
}

// pkg is what go list -json says of a package.
type pkg struct {
	ImportPath string
	Standard   bool
	GoFiles    []string
	Imports    []string
	Deps       []string
	Error      *struct{ Err string }
	DepsErrors []*struct{ Err string }
}

// graph is a go list -deps listing, by import path.
type graph map[string]*pkg

func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// goList runs go list -e -deps -json on patterns in the module root with
// extra environment, and fails the test on a package error in the module.
func goList(t *testing.T, env []string, patterns ...string) graph {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-e", "-deps", "-json"}, patterns...)...)
	cmd.Dir = root(t)
	cmd.Env = append(append(os.Environ(), "GOTOOLCHAIN=local"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(patterns, " "), err, stderr.String())
	}
	g := graph{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if rel(p.ImportPath) != "" && p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		g[p.ImportPath] = &p
	}
	return g
}

// exists reports whether the module has a package at path with Go files.
func exists(t *testing.T, path string) bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json", path)
	cmd.Dir = root(t)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", path, err)
	}
	var p pkg
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p.Error == nil && len(p.GoFiles) > 0
}

// chain returns an import path from one package to another in g, as
// "a → b → c", for a readable failure.
func (g graph) chain(from, to string) string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []string
			for p := cur; p != ""; p = prev[p] {
				path = append(path, strings.TrimPrefix(p, module+"/"))
			}
			slices.Reverse(path)
			return strings.Join(path, " → ")
		}
		if p := g[cur]; p != nil {
			for _, imp := range p.Imports {
				if _, seen := prev[imp]; !seen {
					prev[imp] = cur
					queue = append(queue, imp)
				}
			}
		}
	}
	return from + " → … → " + to
}

// reaches lists, for every package of g that from selects, each
// dependency forbid selects, with the import chain that reaches it.
func (g graph) reaches(from, forbid func(string) bool) []string {
	var bad []string
	for _, p := range g {
		if !from(p.ImportPath) {
			continue
		}
		for _, d := range p.Deps {
			if forbid(d) {
				bad = append(bad, g.chain(p.ImportPath, d))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// upward lists every import chain in g from a package on one floor to a
// package on a higher floor.
func (g graph) upward() []string {
	var bad []string
	for _, p := range g {
		f := floor(p.ImportPath)
		if f < 0 {
			continue
		}
		for _, d := range p.Deps {
			if df := floor(d); df > f {
				bad = append(bad, fmt.Sprintf("%s (%s floor reaches the %s floor)", g.chain(p.ImportPath, d), floors[f].name, floors[df].name))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

func report(t *testing.T, rule string, bad []string) {
	t.Helper()
	if len(bad) > 0 {
		t.Errorf("%s; broken by:\n  %s", rule, strings.Join(bad, "\n  "))
	}
}

// contract is the contract floors and the ledger: the packages that build
// without cgo, never link the TPM simulator, and import nothing from
// services/ or cmd/.
func contract(path string) bool {
	return !deviceSide(path) && (under(path, "ledger") || under(path, "events") || under(path, "attest") || under(path, "schemas"))
}

var contractPatterns = []string{"./events/...", "./ledger/...", "./schemas/...", "./attest/..."}

// TestFloorPlan enforces docs/design/architecture.md, "Floors".
func TestFloorPlan(t *testing.T) {
	all := goList(t, nil, "./...")

	t.Run("no import points up", func(t *testing.T) {
		report(t, "an import points up a floor", all.upward())
	})
	t.Run("contract, attest verifier and ledger import nothing under services/ or cmd/", func(t *testing.T) {
		report(t, "a contract or ledger package imports services/ or cmd/", all.reaches(contract,
			func(d string) bool { return under(d, "services") || under(d, "cmd") }))
	})
	t.Run("ledger imports no services", func(t *testing.T) {
		report(t, "the ledger imports services/", all.reaches(
			func(p string) bool { return under(p, "ledger") },
			func(d string) bool { return under(d, "services") }))
	})
	t.Run("events imports no ledger", func(t *testing.T) {
		report(t, "events imports ledger/", all.reaches(
			func(p string) bool { return under(p, "events") },
			func(d string) bool { return under(d, "ledger") }))
	})
	t.Run("leaf libraries do not log", func(t *testing.T) {
		var bad []string
		for _, p := range all {
			leaf := under(p.ImportPath, "events") || under(p.ImportPath, "attest") || under(p.ImportPath, "schemas")
			for _, imp := range p.Imports {
				if leaf && (imp == "log" || imp == "log/slog") {
					bad = append(bad, strings.TrimPrefix(p.ImportPath, module+"/")+" imports "+imp)
				}
			}
		}
		slices.Sort(bad)
		report(t, "a leaf library logs (it should return errors, callers log)", bad)
	})
	t.Run("contract and ledger build with CGO_ENABLED=0", func(t *testing.T) {
		var pkgs []string
		for _, p := range goList(t, []string{"CGO_ENABLED=0"}, contractPatterns...) {
			if contract(p.ImportPath) {
				pkgs = append(pkgs, p.ImportPath)
			}
		}
		slices.Sort(pkgs)
		cmd := exec.Command("go", append([]string{"build"}, pkgs...)...)
		cmd.Dir = root(t)
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("CGO_ENABLED=0 go build of the contract and the ledger: %v\n%s", err, out)
		}
	})
	t.Run("contract and ledger never link the TPM simulator", func(t *testing.T) {
		if !exists(t, attestTPM) {
			t.Fatalf("%s does not exist: the device side of attest moved", attestTPM)
		}
		g := goList(t, nil, contractPatterns...)
		report(t, "the contract or the ledger links the TPM simulator", g.reaches(contract,
			func(d string) bool { return d == simulator || strings.HasPrefix(d, simulator+"/") }))
	})
	t.Run("device agent links neither ledger nor gate", func(t *testing.T) {
		if !exists(t, gateWire) {
			t.Fatalf("%s does not exist: the gate's wire types moved", gateWire)
		}
		g := goList(t, nil, "./cmd/custody-agent")
		report(t, "the device agent links the ledger or the gate", g.reaches(
			func(p string) bool { return p == module+"/cmd/custody-agent" },
			func(d string) bool {
				return under(d, "ledger") || (under(d, "services/gate") && !under(d, rel(gateWire)))
			}))
	})
}

// TestChecksCatchUpwardImports: the checks above find an upward import in
// a made-up graph, also through a package on no floor, and accept the
// same graph without it.
func TestChecksCatchUpwardImports(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	g := graph{
		m("events"):            {ImportPath: m("events"), Imports: []string{m("attest"), m("internal/x")}, Deps: []string{m("attest"), m("internal/x"), m("services/pki")}},
		m("internal/x"):        {ImportPath: m("internal/x"), Imports: []string{m("services/pki")}, Deps: []string{m("services/pki")}},
		m("attest"):            {ImportPath: m("attest")},
		m("attest/tpm"):        {ImportPath: m("attest/tpm"), Imports: []string{m("attest")}, Deps: []string{m("attest")}},
		m("services/pki"):      {ImportPath: m("services/pki"), Imports: []string{m("events")}, Deps: []string{m("events")}},
		m("services/gate"):     {ImportPath: m("services/gate"), Imports: []string{m("ledger")}, Deps: []string{m("ledger")}},
		m("ledger"):            {ImportPath: m("ledger"), Imports: []string{m("events")}, Deps: []string{m("events")}},
		m("cmd/custody-agent"): {ImportPath: m("cmd/custody-agent"), Imports: []string{m("services/gate")}, Deps: []string{m("services/gate"), m("ledger")}},
	}
	up := g.upward()
	if len(up) != 1 || !strings.Contains(up[0], "events → internal/x → services/pki") {
		t.Fatalf("upward = %q, want the chain events → internal/x → services/pki", up)
	}
	if bad := g.reaches(contract, func(d string) bool { return under(d, "services") }); len(bad) != 1 {
		t.Fatalf("reaches = %q, want one chain", bad)
	}
	if floor(m("attest/tpm")) != floor(m("services/device")) || floor(m("attest/tpmtest")) != floor(m("services/device")) {
		t.Fatal("attest/tpm* is not on the device side")
	}
	if floor(m("internal/natstest")) != -1 || floor("github.com/nats-io/nats.go") != -1 {
		t.Fatal("packages on no floor got one")
	}
	g[m("events")].Imports = []string{m("attest")}
	g[m("events")].Deps = []string{m("attest")}
	if up := g.upward(); len(up) != 0 {
		t.Fatalf("upward = %q in a graph without upward imports", up)
	}
}
