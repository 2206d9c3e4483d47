package ledger_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/go-openapi/swag/conv"

	"github.com/sigstore/rekor/pkg/generated/models"
	hashedrekord "github.com/sigstore/rekor/pkg/types/hashedrekord/v0.0.1"
	"github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

// TestHashedRekordBodyIsCanonical holds the ledger's leaf builder to
// rekor's own Canonicalize, byte for byte.
func TestHashedRekordBodyIsCanonical(t *testing.T) {
	ctx := context.Background()
	for i := range 8 {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: fmt.Sprintf("partner-%d", i)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte{byte(i)})
		sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		got, err := ledger.HashedRekordBody(digest[:], sig, der)
		if err != nil {
			t.Fatal(err)
		}
		e := hashedrekord.V001Entry{HashedRekordObj: models.HashedrekordV001Schema{
			Data: &models.HashedrekordV001SchemaData{Hash: &models.HashedrekordV001SchemaDataHash{
				Algorithm: conv.Pointer(models.HashedrekordV001SchemaDataHashAlgorithmSha256),
				Value:     conv.Pointer(hex.EncodeToString(digest[:])),
			}},
			Signature: &models.HashedrekordV001SchemaSignature{
				Content:   sig,
				PublicKey: &models.HashedrekordV001SchemaSignaturePublicKey{Content: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
			},
		}}
		want, err := e.Canonicalize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("body differs from rekor's Canonicalize:\n got %s\nwant %s", got, want)
		}
	}
}

// rekorGet fetches a Rekor API path and decodes the JSON answer into v.
func rekorGet(t *testing.T, hc *http.Client, url string, v any) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// verifyRekorEntry performs the checks of rekor v1.5.4's
// pkg/verify.VerifyLogEntry (inclusion proof, checkpoint signature and
// root, SET), written out because that package needs modules this project
// does not carry (its generated client); each step mirrors its code.
func verifyRekorEntry(t *testing.T, e *models.LogEntryAnon, v signature.Verifier) {
	t.Helper()
	ip := e.Verification.InclusionProof
	var hashes [][]byte
	for _, h := range ip.Hashes {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, b)
	}
	root, _ := hex.DecodeString(*ip.RootHash)
	body, err := base64.StdEncoding.DecodeString(e.Body.(string))
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(*ip.LogIndex), uint64(*ip.TreeSize), rfc6962.DefaultHasher.HashLeaf(body), hashes, root); err != nil {
		t.Fatalf("inclusion: %v", err)
	}
	var sth util.SignedCheckpoint
	if err := sth.UnmarshalText([]byte(*ip.Checkpoint)); err != nil {
		t.Fatal(err)
	}
	if !sth.Verify(v) {
		t.Fatal("checkpoint signature")
	}
	if !bytes.Equal(sth.Hash, root) {
		t.Fatal("proof root differs from the checkpoint's")
	}
	payload, _ := json.Marshal(struct {
		Body           any    `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	}{e.Body, *e.IntegratedTime, *e.LogIndex, *e.LogID})
	canon, err := jsoncanonicalizer.Transform(payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifySignature(bytes.NewReader(e.Verification.SignedEntryTimestamp), bytes.NewReader(canon)); err != nil {
		t.Fatalf("SET: %v", err)
	}
	// rekor-cli then parses the body as a hashedrekord, which re-verifies
	// the partner's signature over the digest.
	pe, err := models.UnmarshalProposedEntry(bytes.NewReader(body), nil)
	if err == nil {
		var he hashedrekord.V001Entry
		err = he.Unmarshal(pe)
	}
	if err != nil {
		t.Fatalf("body is not a valid hashedrekord: %v", err)
	}
}

// TestRekorAPI serves the log through the Rekor v1 read API and checks it
// as rekor's clients do; with rekor-cli on PATH (always in CI), an
// unmodified rekor-cli v1.5.4 verifies it too, including consistency after
// the log grows.
func TestRekorAPI(t *testing.T) {
	ctx := context.Background()
	n, stop := startNode(t, ctx, t.TempDir())
	defer stop()
	base := n.URL()
	hc := n.HTTPClient("") // anonymous: the Rekor API is public
	keyPEM := pemOf(t, &n.PKI.LogKey.PublicKey)
	v, err := signature.LoadVerifier(&n.PKI.LogKey.PublicKey, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	treeID := n.Ledger.LogKey().TreeID

	// The public key, as PEM.
	resp, err := hc.Get(base + "/api/v1/log/publicKey?treeID=" + strconv.FormatInt(treeID, 10))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/x-pem-file" || !bytes.Equal(got, keyPEM) {
		t.Fatalf("public key: %s %q", resp.Header.Get("Content-Type"), got)
	}

	var info models.LogInfo
	rekorGet(t, hc, base+"/api/v1/log", &info)
	if *info.TreeSize < 1 || *info.TreeID != strconv.FormatInt(treeID, 10) {
		t.Fatalf("log info: size %d tree %s", *info.TreeSize, *info.TreeID)
	}
	var sth util.SignedCheckpoint
	if err := sth.UnmarshalText([]byte(*info.SignedTreeHead)); err != nil {
		t.Fatal(err)
	}
	if !sth.Verify(v) || sth.Origin != fmt.Sprintf("%s - %d", n.Ledger.LogKey().Origin, treeID) || hex.EncodeToString(sth.Hash) != *info.RootHash {
		t.Fatalf("signed tree head %+v", sth)
	}

	// Every entry by index, then by UUID and entry ID, verifies.
	for i := range *info.TreeSize {
		var le models.LogEntry
		rekorGet(t, hc, fmt.Sprintf("%s/api/v1/log/entries?logIndex=%d", base, i), &le)
		if len(le) != 1 {
			t.Fatalf("entry %d: %d entries", i, len(le))
		}
		for id, e := range le {
			verifyRekorEntry(t, &e, v)
			if len(id) != 80 || *e.LogIndex != i || *e.LogID != n.Ledger.LogKey().LogID {
				t.Fatalf("entry %d: id %s index %d", i, id, *e.LogIndex)
			}
			for _, q := range []string{id, id[16:]} {
				var byID models.LogEntry
				rekorGet(t, hc, base+"/api/v1/log/entries/"+q, &byID)
				if e2, ok := byID[id]; !ok || *e2.LogIndex != i {
					t.Fatalf("entry %s: %v", q, byID)
				}
			}
		}
	}
	var missing models.Error
	if resp, err := hc.Get(fmt.Sprintf("%s/api/v1/log/entries?logIndex=%d", base, *info.TreeSize)); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("entry past the end: %v %v", resp.Status, err)
	} else {
		_ = json.NewDecoder(resp.Body).Decode(&missing)
		resp.Body.Close()
	}

	// Grow the log with consortium events (partner revocations).
	nc, err := n.Connect(node.LedgerUser)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e := &env{t: t, ctx: ctx, n: n, nc: nc}
	grow := func(name string, id int) {
		t.Helper()
		p := n.PKI.Partners[name]
		st := events.NewPartnerStatement(events.KindPartnerRevoked, events.PartnerInfo{Name: p.Name, Role: p.Role}, strings.Repeat("00", 32), time.Now(), eventID(id))
		envl, err := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
		if err != nil {
			t.Fatal(err)
		}
		if r := e.publishRaw(events.ConsortiumPartner, envl); r.Status != events.StatusAccepted {
			t.Fatalf("revocation: %+v", r)
		}
	}
	grow("grey-operator", 90)
	var info2 models.LogInfo
	rekorGet(t, hc, base+"/api/v1/log", &info2)
	var cp models.ConsistencyProof
	rekorGet(t, hc, fmt.Sprintf("%s/api/v1/log/proof?firstSize=%d&lastSize=%d", base, *info.TreeSize, *info2.TreeSize), &cp)
	var hs [][]byte
	for _, h := range cp.Hashes {
		b, _ := hex.DecodeString(h)
		hs = append(hs, b)
	}
	root1, _ := hex.DecodeString(*info.RootHash)
	root2, _ := hex.DecodeString(*info2.RootHash)
	if *cp.RootHash != *info2.RootHash {
		t.Fatal("consistency proof names another root")
	}
	if err := ledger.VerifyConsistency(uint64(*info.TreeSize), uint64(*info2.TreeSize), hs, root1, root2); err != nil {
		t.Fatal(err)
	}
	// A proof to an older size carries that size's root.
	var cpOld models.ConsistencyProof
	rekorGet(t, hc, fmt.Sprintf("%s/api/v1/log/proof?firstSize=1&lastSize=%d", base, *info.TreeSize), &cpOld)
	if *cpOld.RootHash != *info.RootHash {
		t.Fatalf("proof to size %d: root %s, want %s", *info.TreeSize, *cpOld.RootHash, *info.RootHash)
	}

	// Search by UUID, index and proposed entry.
	var last models.LogEntry
	rekorGet(t, hc, fmt.Sprintf("%s/api/v1/log/entries?logIndex=%d", base, *info2.TreeSize-1), &last)
	var lastID string
	var lastBody []byte
	for id, le := range last {
		lastID = id
		lastBody, _ = base64.StdEncoding.DecodeString(le.Body.(string))
	}
	q := fmt.Sprintf(`{"entryUUIDs":[%q,%q],"logIndexes":[0],"entries":[%s]}`, lastID, strings.Repeat("ab", 32), lastBody)
	resp, err = hc.Post(base+"/api/v1/log/entries/retrieve", "application/json", strings.NewReader(q))
	if err != nil {
		t.Fatal(err)
	}
	var found []models.LogEntry
	err = json.NewDecoder(resp.Body).Decode(&found)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || len(found) != 3 {
		t.Fatalf("retrieve: %s %v %d results", resp.Status, err, len(found))
	}
	for i, wantIdx := range []int64{*info2.TreeSize - 1, 0, *info2.TreeSize - 1} {
		for _, le := range found[i] {
			if *le.LogIndex != wantIdx {
				t.Fatalf("retrieve result %d: index %d, want %d", i, *le.LogIndex, wantIdx)
			}
			verifyRekorEntry(t, &le, v)
		}
	}

	t.Run("rekor-cli", func(t *testing.T) {
		cli, err := exec.LookPath("rekor-cli")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("rekor-cli is not on PATH (CI installs it)")
			}
			t.Skip("rekor-cli not on PATH")
		}
		home := t.TempDir()
		run := func(args ...string) []byte {
			t.Helper()
			cmd := exec.Command(cli, append(args, "--rekor_server", base, "--format", "json")...)
			// Over TLS: rekor-cli trusts the node's TLS CA as any Go
			// program does, through SSL_CERT_FILE.
			cmd.Env = append(os.Environ(), "HOME="+home, "SSL_CERT_FILE="+filepath.Join(n.PKI.Dir, pki.FileTLSCA))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("rekor-cli %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return out
		}
		type loginfo struct {
			ActiveTreeSize int64
			RootHash       string
			TreeID         string
		}
		parse := func(out []byte, v any) {
			t.Helper()
			// rekor-cli prints log lines before the JSON.
			if i := bytes.IndexByte(out, '{'); i >= 0 {
				out = out[i:]
			}
			if err := json.Unmarshal(out, v); err != nil {
				t.Fatalf("rekor-cli output: %v\n%s", err, out)
			}
		}
		// Without stored state: signature only.
		var li loginfo
		parse(run("loginfo", "--store_tree_state=false"), &li)
		if _, err := os.Stat(filepath.Join(home, ".rekor", "state.json")); err == nil {
			t.Fatal("--store_tree_state=false stored state")
		}
		// With state (in the temp HOME), then growth: the second loginfo
		// checks the consistency proof from the stored tree head.
		parse(run("loginfo"), &li)
		if _, err := os.Stat(filepath.Join(home, ".rekor", "state.json")); err != nil {
			t.Fatalf("rekor-cli stored no tree state: %v", err)
		}
		before := li.ActiveTreeSize
		grow("delta-ems", 91)
		parse(run("loginfo"), &li)
		if li.ActiveTreeSize != before+1 || li.TreeID != strconv.FormatInt(treeID, 10) {
			t.Fatalf("after growth rekor-cli sees size %d (tree %s), want %d", li.ActiveTreeSize, li.TreeID, before+1)
		}
		type entry struct {
			LogIndex int
			UUID     string
		}
		var byIndex, byUUID entry
		parse(run("get", "--log-index", strconv.FormatInt(before, 10)), &byIndex)
		if byIndex.LogIndex != int(before) || len(byIndex.UUID) != 80 {
			t.Fatalf("get --log-index: %+v", byIndex)
		}
		parse(run("get", "--uuid", byIndex.UUID), &byUUID)
		if byUUID != byIndex {
			t.Fatalf("get --uuid: %+v, want %+v", byUUID, byIndex)
		}
		parse(run("get", "--uuid", byIndex.UUID[16:]), &byUUID)
		if byUUID != byIndex {
			t.Fatalf("get --uuid (64 hex): %+v, want %+v", byUUID, byIndex)
		}
	})
}

func pemOf(t *testing.T, pub *ecdsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
