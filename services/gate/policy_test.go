package gate

import (
	"strings"
	"testing"
)

func TestPolicyDefaultsAndValidation(t *testing.T) {
	p, err := Policy{}.withDefaults()
	if err != nil || len(p.RequiredStages) != 1 || p.RequiredStages[0] != "firmware-programmed" || len(p.QuotePCRs) != 1 || p.QuotePCRs[0] != 0 {
		t.Fatalf("defaults: %+v, %v", p, err)
	}
	good := strings.Repeat("ab", 32)
	for name, c := range map[string]struct {
		p   Policy
		err string
	}{
		"unknown stage":       {Policy{RequiredStages: []string{"painted"}}, "unknown stage"},
		"PCR out of range":    {Policy{QuotePCRs: []int{24}}, "out of range"},
		"allow-list unquoted": {Policy{QuotePCRs: []int{0}, PCRAllowList: map[int][]string{7: {good}}}, "not in quotePcrs"},
		"allow-list not hex":  {Policy{PCRAllowList: map[int][]string{0: {"xyz"}}}, "not lowercase hex"},
		"allow-list upper":    {Policy{PCRAllowList: map[int][]string{0: {strings.ToUpper(good)}}}, "not lowercase hex"},
		"allow-list short":    {Policy{PCRAllowList: map[int][]string{0: {good[:62]}}}, "not lowercase hex"},
	} {
		if _, err := c.p.withDefaults(); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v, want %q", name, err, c.err)
		}
	}
}

func TestPCRAccepted(t *testing.T) {
	ems, update, other := strings.Repeat("01", 32), strings.Repeat("02", 32), strings.Repeat("03", 32)
	p, err := Policy{PCRAllowList: map[int][]string{0: {update}}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]string{"0": ems}
	for _, c := range []struct {
		got      string
		recorded map[string]string
		ok       bool
		src      string
	}{
		{ems, recorded, true, "EMS record"},
		{update, recorded, true, "operator allow-list"},
		{update, nil, true, "operator allow-list"},
		{other, recorded, false, ""},
		{ems, nil, false, ""},
	} {
		if ok, src := p.pcrAccepted(0, c.got, c.recorded); ok != c.ok || src != c.src {
			t.Errorf("pcrAccepted(%s…, %v) = %v %q, want %v %q", c.got[:4], c.recorded, ok, src, c.ok, c.src)
		}
	}
}
