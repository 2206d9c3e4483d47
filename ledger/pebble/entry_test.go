package pebble

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/ledger"
)

func testCert(t *testing.T, cn string) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCompactEntries: entries whose body is a hashedrekord keep the
// signer's certificate once (c key) and their signature; they read back
// byte for byte after a reopen, take a fraction of the body's bytes, and an
// entry written in the older layout (the whole body) still reads.
func TestCompactEntries(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	certs := [][]byte{testCert(t, "acme-tpm"), testCert(t, "orbit-odm")}
	rf := compact.RangeFactory{Hash: ledger.Hasher.HashChildren}
	rng := rf.NewEmptyRange(0)
	nodes := map[compact.NodeID][]byte{}
	var entries []*ledger.Entry
	for i := range uint64(6) {
		d := sha256.Sum256([]byte{byte(i)})
		sig := bytes.Repeat([]byte{byte(i)}, 70+int(i))
		body, _ := ledger.HashedRekordBody(d[:], sig, certs[i%2])
		if i == 5 { // not the shape HashedRekordBody writes: kept whole
			body = append(bytes.Clone(body[:len(body)-1]), ` }`...)
		}
		e := &ledger.Entry{Index: i, Digest: d[:], Kind: "stage.recorded", Partner: "acme-tpm", Status: "accepted", Body: body, Envelope: []byte(`{"payloadType":"x"}`)}
		entries = append(entries, e)
		if err := rng.Append(ledger.LeafHash(body), func(id compact.NodeID, h []byte) { nodes[id] = h }); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := rng.GetRootHash(nil)
	if err := s.Commit(&ledger.Commit{Head: ledger.Head{Size: 6, Root: root, StreamSeq: 6}, Entries: entries, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		raw, err := s.get(entryKey(e.Index))
		if err != nil {
			t.Fatal(err)
		}
		if want := byte(entryV2); i == 5 {
			if raw[0] != entryV1 {
				t.Fatalf("entry %d: a body of another shape was not kept whole", i)
			}
		} else if raw[0] != want || len(raw) > len(e.Body)/2 {
			t.Fatalf("entry %d: version %d, %d bytes for a %d-byte body", i, raw[0], len(raw), len(e.Body))
		}
	}
	// An entry as the older layout wrote it.
	old := &ledger.Entry{Index: 6, Digest: bytes.Repeat([]byte{9}, 32), Kind: "stage.recorded", Body: []byte(`{"kind":"hashedrekord"}`), Envelope: []byte("env")}
	meta := *old
	meta.Body, meta.Envelope = nil, nil
	mj, _ := json.Marshal(&meta)
	v := append([]byte{entryV1}, binary.AppendUvarint(nil, uint64(len(mj)))...)
	v = append(append(v, mj...), binary.AppendUvarint(nil, uint64(len(old.Body)))...)
	v = append(append(v, old.Body...), old.Envelope...)
	if err := s.db.Set(entryKey(6), v, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, e := range append(entries, old) {
		got, err := s.Entry(e.Index)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Body, e.Body) || !bytes.Equal(got.Envelope, e.Envelope) || !bytes.Equal(got.Digest, e.Digest) {
			t.Fatalf("entry %d read back differently:\n%s\n%s", e.Index, got.Body, e.Body)
		}
	}
	// A certificate whose bytes no longer hash to its key is an error, not
	// a wrong body.
	h := sha256.Sum256(certs[0])
	if err := s.db.Set(certKey(h), certs[1], nil); err != nil {
		t.Fatal(err)
	}
	s.certs = newCerts()
	if _, err := s.Entry(0); err == nil {
		t.Fatal("an entry read with a substituted certificate")
	}
}
