package dps

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const sasPrefix = "SharedAccessSignature "

// SASToken returns an Azure shared access signature token for resourceURI
// (for the DPS service API, the service host name), signed with key (the raw
// key bytes, i.e. the base64-decoded key Azure shows) under keyName (omitted
// when empty), expiring at expiry:
//
//	SharedAccessSignature sr=<url-encoded resourceURI>&sig=<url-encoded base64 HMAC-SHA256>&se=<unix seconds>&skn=<keyName>
//
// The HMAC is over the url-encoded resource URI, a newline and the expiry.
func SASToken(resourceURI, keyName string, key []byte, expiry time.Time) string {
	sr := url.QueryEscape(resourceURI)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := sasSignature(key, sr, se)
	tok := sasPrefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + url.QueryEscape(keyName)
	}
	return tok
}

func sasSignature(key []byte, encodedResource, expiry string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(encodedResource + "\n" + expiry))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// sasToken is a parsed SAS token. rawSR and rawSE are as they appeared in the
// token, since the signature covers them in that form.
type sasToken struct {
	rawSR, rawSE string
	resource     string
	sig          []byte
	expiry       time.Time
	keyName      string
}

// parseSAS parses an Authorization header value holding a SAS token.
func parseSAS(header string) (*sasToken, error) {
	rest, ok := strings.CutPrefix(header, sasPrefix)
	if !ok {
		return nil, errors.New(`authorization is not a "SharedAccessSignature" token`)
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSpace(rest), "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("SAS token field %q is not key=value", kv)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("SAS token repeats field %q", k)
		}
		fields[k] = v
	}
	t := &sasToken{rawSR: fields["sr"], rawSE: fields["se"]}
	if t.rawSR == "" || t.rawSE == "" || fields["sig"] == "" {
		return nil, errors.New("SAS token lacks sr, sig or se")
	}
	var err error
	if t.resource, err = url.QueryUnescape(t.rawSR); err != nil {
		return nil, fmt.Errorf("SAS token sr is not url-encoded: %v", err)
	}
	rawSig, err := url.QueryUnescape(fields["sig"])
	if err != nil {
		return nil, fmt.Errorf("SAS token sig is not url-encoded: %v", err)
	}
	if t.sig, err = base64.StdEncoding.DecodeString(rawSig); err != nil {
		return nil, fmt.Errorf("SAS token sig is not base64: %v", err)
	}
	se, err := strconv.ParseInt(t.rawSE, 10, 64)
	if err != nil || se <= 0 {
		return nil, errors.New("SAS token se is not a positive number of seconds")
	}
	t.expiry = time.Unix(se, 0)
	if skn, ok := fields["skn"]; ok {
		if t.keyName, err = url.QueryUnescape(skn); err != nil {
			return nil, fmt.Errorf("SAS token skn is not url-encoded: %v", err)
		}
	}
	return t, nil
}

// verify checks the token's key name, expiry (at now), resource (it must be
// host, with or without a port, or a path under it; case-insensitive) and
// signature.
func (t *sasToken) verify(keyName string, key []byte, host string, now time.Time) error {
	if t.keyName != keyName {
		return fmt.Errorf("SAS token key name %q is not a policy of this service", t.keyName)
	}
	if !now.Before(t.expiry) {
		return fmt.Errorf("SAS token expired at %s", t.expiry.UTC().Format(time.RFC3339))
	}
	if !resourceMatches(t.resource, host) {
		return fmt.Errorf("SAS token resource %q does not name this service (%s)", t.resource, host)
	}
	want, _ := base64.StdEncoding.DecodeString(sasSignature(key, t.rawSR, t.rawSE))
	if !hmac.Equal(t.sig, want) {
		return errors.New("SAS token signature does not verify with the service's key")
	}
	return nil
}

func resourceMatches(resource, host string) bool {
	res := strings.ToLower(resource)
	res = strings.TrimPrefix(res, "https://")
	res, _, _ = strings.Cut(res, "/")
	host = strings.ToLower(host)
	if res == host {
		return true
	}
	return stripPort(res) == stripPort(host)
}

func stripPort(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
