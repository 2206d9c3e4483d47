package events

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated tables in docs/design from Rejections")

// TestRejectionsCatalogue: every Code* and Rule* constant of codes.go has
// exactly one row, no row is there twice, and each gate error code is six
// digits whose first three are an HTTP status.
func TestRejectionsCatalogue(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]bool{} // {by, code}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				by := ""
				switch {
				case strings.HasPrefix(name.Name, "Code"):
					by = ByLedger
				case strings.HasPrefix(name.Name, "Rule"):
					by = ByGate
				default:
					continue
				}
				v, err := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				want[[2]string{by, v}] = true
			}
		}
	}
	seen := map[[2]string]bool{}
	errorCodes := map[int]string{}
	for _, r := range Rejections {
		k := [2]string{r.By, r.Code}
		switch {
		case seen[k]:
			t.Errorf("%s %q has two rows", r.By, r.Code)
		case !want[k]:
			t.Errorf("%s %q has a row but no constant in codes.go", r.By, r.Code)
		case r.Meaning == "" || strings.ContainsAny(r.Meaning, "\n|"):
			t.Errorf("%s %q: the meaning must be one line without '|'", r.By, r.Code)
		}
		seen[k] = true
		switch r.By {
		case ByLedger:
			if r.ErrorCode != 0 {
				t.Errorf("ledger code %q has an errorCode", r.Code)
			}
		case ByGate:
			if r.ErrorCode < 100000 || r.ErrorCode > 999999 || http.StatusText(r.ErrorCode/1000) == "" {
				t.Errorf("gate rule %q: errorCode %d is not six digits led by an HTTP status", r.Code, r.ErrorCode)
			}
			if other, dup := errorCodes[r.ErrorCode]; dup {
				t.Errorf("gate rules %q and %q share errorCode %d", other, r.Code, r.ErrorCode)
			}
			errorCodes[r.ErrorCode] = r.Code
		default:
			t.Errorf("%q: By is %q", r.Code, r.By)
		}
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("%s %q has no row in Rejections", k[0], k[1])
		}
	}
	if RuleErrorCode(RulePCRPolicy) != 403105 || RuleErrorCode("no-such-rule") != 0 {
		t.Error("RuleErrorCode does not read the catalogue")
	}
}

// docTables are the generated blocks in docs/design: each file holds, between
// its markers, the table render writes for the rows of by ("" = all).
var docTables = []struct {
	file, name, by string
}{
	{"events.md", "rejections", ""},
	{"ledger.md", "ledger-codes", ByLedger},
	{"enrollment.md", "gate-rules", ByGate},
}

func renderTable(by string) string {
	var b strings.Builder
	switch by {
	case ByLedger:
		b.WriteString("| code | rule broken |\n|---|---|\n")
	case ByGate:
		b.WriteString("| rule | errorCode | refused when |\n|---|---|---|\n")
	default:
		b.WriteString("| code | by | errorCode | meaning |\n|---|---|---|---|\n")
	}
	for _, r := range Rejections {
		switch {
		case by == ByLedger && r.By == ByLedger:
			fmt.Fprintf(&b, "| `%s` | %s |\n", r.Code, r.Meaning)
		case by == ByGate && r.By == ByGate:
			fmt.Fprintf(&b, "| `%s` | %d | %s |\n", r.Code, r.ErrorCode, r.Meaning)
		case by == "":
			ec := ""
			if r.ErrorCode != 0 {
				ec = strconv.Itoa(r.ErrorCode)
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.Code, r.By, ec, r.Meaning)
		}
	}
	return b.String()
}

// TestDocTables fails when a table in docs/design differs from Rejections;
// go test ./events -run TestDocTables -update rewrites them.
func TestDocTables(t *testing.T) {
	for _, d := range docTables {
		path := filepath.Join("..", "docs", "design", d.file)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(raw)
		begin := "<!-- BEGIN " + d.name + ": generated from events.Rejections by go test ./events -run TestDocTables -update -->\n"
		end := "<!-- END " + d.name + " -->\n"
		i := strings.Index(doc, begin)
		j := strings.Index(doc, end)
		if i < 0 || j < i {
			t.Errorf("%s: no block between %q and %q", path, strings.TrimSpace(begin), strings.TrimSpace(end))
			continue
		}
		want := renderTable(d.by)
		if doc[i+len(begin):j] == want {
			continue
		}
		if !*update {
			t.Errorf("%s: the %s table differs from events.Rejections; run go test ./events -run TestDocTables -update", path, d.name)
			continue
		}
		if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the %s table in %s", d.name, path)
	}
}
