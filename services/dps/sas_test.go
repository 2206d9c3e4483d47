package dps

import (
	"strings"
	"testing"
	"time"
)

var testKey = func() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}()

// The vector comes from the Python generate_sas_token function in Azure's
// "Control access to Azure IoT Hub Device Provisioning Service" documentation,
// run with the same resource, key (bytes 0..31), policy and expiry.
func TestSASTokenMatchesAzureReference(t *testing.T) {
	const want = "SharedAccessSignature sr=blue-dps.azure-devices-provisioning.net&sig=dSyLebNcS5tVR4ui7dAXq86z9SqLzkTPI0W31ql4uFI%3D&se=1900000000&skn=provisioningserviceowner"
	got := SASToken("blue-dps.azure-devices-provisioning.net", "provisioningserviceowner", testKey, time.Unix(1900000000, 0))
	if got != want {
		t.Fatalf("SASToken =\n%s\nwant\n%s", got, want)
	}
}

func TestSASVerify(t *testing.T) {
	now := time.Unix(1800000000, 0)
	host := "blue-dps.azure-devices-provisioning.net"
	good := SASToken(host, "owner", testKey, now.Add(time.Hour))
	tok, err := parseSAS(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.verify("owner", testKey, host, now); err != nil {
		t.Fatalf("good token: %v", err)
	}
	if err := tok.verify("owner", testKey, host+":443", now); err != nil {
		t.Errorf("good token, host with port: %v", err)
	}
	if err := tok.verify("owner", testKey, "BLUE-DPS.azure-devices-provisioning.net", now); err != nil {
		t.Errorf("good token, host in upper case: %v", err)
	}
	other := append([]byte(nil), testKey...)
	other[0] ^= 1
	for name, check := range map[string]func() error{
		"wrong key":      func() error { return tok.verify("owner", other, host, now) },
		"wrong key name": func() error { return tok.verify("reader", testKey, host, now) },
		"expired":        func() error { return tok.verify("owner", testKey, host, now.Add(2*time.Hour)) },
		"other host":     func() error { return tok.verify("owner", testKey, "grey-dps.azure-devices-provisioning.net", now) },
	} {
		if err := check(); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	for _, bad := range []string{
		"",
		"Bearer x",
		"SharedAccessSignature sr=a&se=1",
		"SharedAccessSignature sr=a&sig=%%%&se=1",
		"SharedAccessSignature sr=a&sig=AAAA&se=soon",
		"SharedAccessSignature sr=a&sig=AAAA&se=1&se=2",
		"SharedAccessSignature sr=a&sig=!!!!&se=1",
	} {
		if _, err := parseSAS(bad); err == nil {
			t.Errorf("parseSAS(%q) accepted", bad)
		}
	}
}

func FuzzParseSAS(f *testing.F) {
	f.Add(SASToken("blue-dps.azure-devices-provisioning.net", "owner", testKey, time.Unix(1900000000, 0)))
	f.Add("SharedAccessSignature sr=a%2Fb&sig=AAAA&se=1&skn=x")
	f.Add("SharedAccessSignature ")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseSAS(s)
		if err != nil {
			return
		}
		// Never panics, and a token signed by someone else never verifies.
		if err := tok.verify(tok.keyName, []byte("a key the fuzzer does not know"), tok.resource, time.Unix(0, 0)); err == nil {
			t.Fatalf("forged token %q verified", s)
		}
		// What SASToken makes for the parsed resource parses and verifies.
		if strings.ContainsAny(tok.resource, "\x00") {
			return
		}
		again, err := parseSAS(SASToken(tok.resource, tok.keyName, testKey, tok.expiry))
		if err != nil {
			t.Fatalf("re-made token does not parse: %v", err)
		}
		if again.resource != tok.resource || again.keyName != tok.keyName {
			t.Fatalf("round trip changed resource %q→%q or key name %q→%q", tok.resource, again.resource, tok.keyName, again.keyName)
		}
		host, _, _ := strings.Cut(strings.TrimPrefix(strings.ToLower(tok.resource), "https://"), "/")
		if err := again.verify(tok.keyName, testKey, host, tok.expiry.Add(-time.Second)); err != nil {
			t.Fatalf("re-made token does not verify: %v", err)
		}
	})
}
