package schemas

import (
	"regexp"
	"strings"
	"testing"
)

// The loops compilePattern uses instead of regexp match exactly what the
// patterns match.
func FuzzPatterns(f *testing.F) {
	for _, s := range []string{"", "=", "==", "===", "QUJD", "QUI=", "QQ==", "QQ===", "a=b", "QUJD\n", "\nQUJD", "é",
		strings.Repeat("0", 64), strings.Repeat("f", 64), strings.Repeat("F", 64), strings.Repeat("0", 63), strings.Repeat("0", 65),
		strings.Repeat("a", 32), strings.Repeat("a", 31), "delta-ems", "-delta", "delta-", "Delta", "a", strings.Repeat("a", 64), strings.Repeat("a", 65),
		"device:" + strings.Repeat("0", 64), "device:" + strings.Repeat("0", 64) + "\n", "partner:delta-ems", "partner:", "partner:-x", "delta-ems\n"} {
		f.Add(s)
	}
	res := map[string]*regexp.Regexp{}
	for _, p := range fastPatterns {
		res[p] = regexp.MustCompile(p)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for p, re := range res {
			fast, err := compilePattern(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, isRegexp := fast.(*regexp.Regexp); isRegexp {
				t.Fatalf("%s: compiled with regexp", p)
			}
			if got, want := fast.MatchString(s), re.MatchString(s); got != want {
				t.Fatalf("%s on %q: loop %v, regexp %v", p, s, got, want)
			}
		}
	})
}
