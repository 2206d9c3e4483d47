package events

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAdmitRowByRow checks each row of the authorisation matrix for every
// identity: the anonymous caller, one partner of every role, and for rows
// with owners the owner and a stranger of the same role. The right
// identity is admitted and every other refused, with the error the HTTP
// layer turns into 401 or 403.
func TestAdmitRowByRow(t *testing.T) {
	callers := []Principal{{}}
	for _, r := range Roles {
		callers = append(callers, Principal{Name: "p-" + r, Role: r})
	}
	callers = append(callers, Principal{Name: ConsortiumPartner, Role: RoleConsortium})
	for _, p := range Permissions {
		for _, c := range callers {
			err := p.Admit(c)
			switch {
			case p.Who == WhoAnyone || p.Who == WhoDevice:
				if err != nil {
					t.Errorf("%s (%s) refuses %+v: %v", p.Action, p.Who, c, err)
				}
			case c.Name == "":
				if err == nil || !strings.Contains(err.Error(), ErrAuthRequired.Error()) {
					t.Errorf("%s admits the anonymous caller: %v", p.Action, err)
				}
			case p.Who == WhoConsortium:
				if (err == nil) != (c.Name == ConsortiumPartner) {
					t.Errorf("%s: consortium-only row and %+v: %v", p.Action, c, err)
				}
			case len(p.Roles) > 0:
				if (err == nil) != slices.Contains(p.Roles, c.Role) {
					t.Errorf("%s: roles %v and %+v: %v", p.Action, p.Roles, c, err)
				}
			default:
				if err != nil {
					t.Errorf("%s without owners refuses %+v: %v (the handler decides)", p.Action, c, err)
				}
			}
			if p.Who == WhoSelf || p.Who == WhoGateOperator || p.Who == WhoCustodyParty {
				if c.Name != "" && p.Admit(c, "someone-else") == nil {
					t.Errorf("%s admits %s for someone else's resource", p.Action, c.Name)
				}
				if c.Name != "" && (len(p.Roles) == 0 || slices.Contains(p.Roles, c.Role)) && p.Admit(c, "x", c.Name) != nil {
					t.Errorf("%s refuses %s its own resource", p.Action, c.Name)
				}
			}
		}
	}
}

// TestNATSSubjectsFromMatrix: a partner's NATS grants are its own subjects
// only; nobody is granted the stream's or a consumer's API, a write to the
// checkpoint bucket, or another partner's events, receipts or inbox.
func TestNATSSubjectsFromMatrix(t *testing.T) {
	for _, role := range Roles {
		pub, sub := NATSSubjects("me", role)
		for _, s := range append(slices.Clone(pub), sub...) {
			if strings.Contains(s, "other") || strings.Contains(s, "{") {
				t.Errorf("role %s: grant %q", role, s)
			}
			if strings.HasPrefix(s, "$JS.API.") && !strings.HasPrefix(s, "$JS.API.STREAM.INFO.KV_"+CheckpointBucket) && !strings.HasPrefix(s, "$JS.API.DIRECT.GET.KV_"+CheckpointBucket+".") {
				t.Errorf("role %s: JetStream API grant %q", role, s)
			}
			if strings.HasPrefix(s, "$KV.") {
				t.Errorf("role %s: KV write grant %q", role, s)
			}
			// The deployment's own traffic (the verifier pool's verdicts
			// and facts) is no partner's to publish or read.
			if strings.HasPrefix(s, InternalPrefix) || s == ">" || s == "custody.>" || s == "custody.v1.>" {
				t.Errorf("role %s: grant %q reaches %s", role, s, InternalPrefix)
			}
		}
		for _, s := range pub {
			if strings.HasPrefix(s, EventsPrefix+".") && s != EventsPrefix+".me.>" {
				t.Errorf("role %s publishes %q", role, s)
			}
		}
		if !slices.Contains(pub, EventsPrefix+".me.>") {
			t.Errorf("role %s cannot publish its own events", role)
		}
		if !slices.Contains(sub, ReceiptsPrefix+".me.>") || !slices.Contains(sub, InboxPrefix("me")+".>") {
			t.Errorf("role %s cannot read its own receipts: %v", role, sub)
		}
	}
}

// TestAuthzDocTable fails when the matrix in docs/design/threat-model.md
// differs from Permissions; -update rewrites it.
func TestAuthzDocTable(t *testing.T) {
	path := filepath.Join("..", "docs", "design", "threat-model.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin := "<!-- BEGIN authz: generated from events.Permissions by go test ./events -run TestAuthzDocTable -update -->\n"
	end := "<!-- END authz -->\n"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s: no block between %q and %q", path, strings.TrimSpace(begin), strings.TrimSpace(end))
	}
	var b strings.Builder
	b.WriteString("| action | who | roles | HTTP | NATS | rule |\n|---|---|---|---|---|---|\n")
	for _, p := range Permissions {
		roles := "any"
		if len(p.Roles) > 0 {
			roles = strings.Join(p.Roles, ", ")
		}
		cell := func(s string) string {
			if s == "" {
				return "—"
			}
			return strings.ReplaceAll(s, "|", "\\|")
		}
		b.WriteString("| `" + string(p.Action) + "` | " + string(p.Who) + " | " + roles + " | " + cell(p.HTTP) + " | " + cell(p.NATS) + " | " + cell(p.Rule) + " |\n")
	}
	want := b.String()
	if doc[i+len(begin):j] == want {
		return
	}
	if !*update {
		t.Fatalf("%s: the authorisation table differs from events.Permissions; run go test ./events -run TestAuthzDocTable -update", path)
	}
	if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
		t.Fatal(err)
	}
}
