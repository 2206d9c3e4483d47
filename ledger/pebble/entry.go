package pebble

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"

	cpebble "github.com/cockroachdb/pebble/v2"

	"github.com/custodyledger/custody/ledger"
)

// Entries. An entry's leaf body is a hashedrekord built from three things
// (ledger.HashedRekordBody): the event's digest, its signature and the
// signer's certificate, which is the same one in every entry of a partner
// and the largest part of the body (about 900 of its 1,200 bytes). So the
// store keeps each certificate once, under c<SHA-256 of its DER>, and an
// entry keeps the signature and the certificate's hash; the body is
// rebuilt on read and checked against what was written at commit (the
// same function over the same bytes). A body of any other shape is kept
// whole. Every byte an entry does not carry is a byte the WAL, the
// memtable, flushes and compactions do not move.
//
//	entryV1: version, uvarint length and JSON of the metadata (everything
//	         but Body and Envelope), uvarint length and the body, the envelope
//	entryV2: version, uvarint length and JSON of the metadata, the
//	         certificate's hash (32), uvarint length and the signature, the
//	         envelope
const (
	entryV1 = 1
	entryV2 = 2
)

// certKey is where a signer certificate (DER) is kept once.
func certKey(h [32]byte) []byte { return append([]byte{'c'}, h[:]...) }

// certs remembers signer certificates by hash (those stored, and those
// read), and by the leaf's encoding of them (the base64 of the PEM), so
// that splitting a body needs no decoding after a partner's first entry.
type certs struct {
	mu     sync.RWMutex
	byHash map[[32]byte][]byte // DER
	byB64  map[string]*certRef // the leaf's encoding → cert
	stored map[[32]byte]bool   // certificates this store holds
}

type certRef struct {
	hash [32]byte
	der  []byte
}

// maxCerts bounds the certificate caches (partners and their renewals).
const maxCerts = 4096

func newCerts() *certs {
	return &certs{byHash: map[[32]byte][]byte{}, byB64: map[string]*certRef{}, stored: map[[32]byte]bool{}}
}

const (
	bodyHead = `{"apiVersion":"0.0.1","spec":{"data":{"hash":{"algorithm":"sha256","value":"`
	bodySig  = `"}},"signature":{"content":"`
	bodyKey  = `","publicKey":{"content":"`
	bodyTail = `"}}},"kind":"hashedrekord"}`
)

// splitBody returns the signature and the signer certificate of a body
// that ledger.HashedRekordBody built over digest, or ok false for any
// other body.
func (c *certs) splitBody(body, digest []byte) (sig []byte, cert *certRef, ok bool) {
	rest, found := bytes.CutPrefix(body, []byte(bodyHead))
	if !found || len(rest) < 64 {
		return nil, nil, false
	}
	if d, err := hex.DecodeString(string(rest[:64])); err != nil || !bytes.Equal(d, digest) {
		return nil, nil, false
	}
	rest, found = bytes.CutPrefix(rest[64:], []byte(bodySig))
	if !found {
		return nil, nil, false
	}
	sigB64, rest, found := bytes.Cut(rest, []byte(bodyKey))
	if !found {
		return nil, nil, false
	}
	keyB64, found := bytes.CutSuffix(rest, []byte(bodyTail))
	if !found {
		return nil, nil, false
	}
	sig, err := base64.StdEncoding.DecodeString(string(sigB64))
	if err != nil {
		return nil, nil, false
	}
	c.mu.RLock()
	cert = c.byB64[string(keyB64)]
	c.mu.RUnlock()
	if cert == nil {
		p, err := base64.StdEncoding.DecodeString(string(keyB64))
		if err != nil {
			return nil, nil, false
		}
		blk, _ := pem.Decode(p)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, nil, false
		}
		cert = &certRef{hash: sha256.Sum256(blk.Bytes), der: blk.Bytes}
		c.mu.Lock()
		if len(c.byB64) >= maxCerts {
			clear(c.byB64)
		}
		c.byB64[string(keyB64)] = cert
		c.mu.Unlock()
	}
	// The body must be exactly what reading the entry will rebuild.
	if rebuilt, err := ledger.HashedRekordBody(digest, sig, cert.der); err != nil || !bytes.Equal(rebuilt, body) {
		return nil, nil, false
	}
	return sig, cert, true
}

// encodeEntry encodes an entry for the e key; a certificate the store
// does not hold yet is added to b under certKey, once per batch (added
// collects them; noteCerts marks them held once the batch is durable).
func (s *Store) encodeEntry(b *cpebble.Batch, e *ledger.Entry, added map[[32]byte]bool) ([]byte, error) {
	meta := *e
	meta.Body, meta.Envelope = nil, nil
	mj, err := json.Marshal(&meta)
	if err != nil {
		return nil, err
	}
	sig, cert, ok := s.certs.splitBody(e.Body, e.Digest)
	if !ok {
		v := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(mj)+len(e.Body)+len(e.Envelope))
		v = append(v, entryV1)
		v = binary.AppendUvarint(v, uint64(len(mj)))
		v = append(v, mj...)
		v = binary.AppendUvarint(v, uint64(len(e.Body)))
		v = append(v, e.Body...)
		return append(v, e.Envelope...), nil
	}
	s.certs.mu.RLock()
	stored := s.certs.stored[cert.hash]
	s.certs.mu.RUnlock()
	if !stored && !added[cert.hash] {
		if err := b.Set(certKey(cert.hash), cert.der, nil); err != nil {
			return nil, err
		}
		added[cert.hash] = true
	}
	v := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(mj)+32+len(sig)+len(e.Envelope))
	v = append(v, entryV2)
	v = binary.AppendUvarint(v, uint64(len(mj)))
	v = append(v, mj...)
	v = append(v, cert.hash[:]...)
	v = binary.AppendUvarint(v, uint64(len(sig)))
	v = append(v, sig...)
	return append(v, e.Envelope...), nil
}

// noteCerts records that the certificates a durable batch added are in
// the store.
func (s *Store) noteCerts(added map[[32]byte]bool) {
	if len(added) == 0 {
		return
	}
	s.certs.mu.Lock()
	defer s.certs.mu.Unlock()
	if len(s.certs.stored)+len(added) > maxCerts {
		clear(s.certs.stored)
	}
	for h := range added {
		s.certs.stored[h] = true
	}
}

// cert returns a stored certificate by hash.
func (s *Store) cert(h [32]byte) ([]byte, error) {
	s.certs.mu.RLock()
	der, ok := s.certs.byHash[h]
	s.certs.mu.RUnlock()
	if ok {
		return der, nil
	}
	der, err := s.get(certKey(h))
	if err != nil {
		return nil, fmt.Errorf("pebble store: the certificate %x of an entry: %w", h[:8], err)
	}
	if sha256.Sum256(der) != h {
		return nil, fmt.Errorf("pebble store: the certificate %x of an entry does not hash to its key", h[:8])
	}
	der = bytes.Clone(der)
	s.certs.mu.Lock()
	if len(s.certs.byHash) >= maxCerts {
		clear(s.certs.byHash)
	}
	s.certs.byHash[h] = der
	s.certs.mu.Unlock()
	return der, nil
}

var errCorruptEntry = errors.New("pebble store: corrupt entry record")

// decodeEntry decodes an e value (any of its versions).
func (s *Store) decodeEntry(v []byte) (*ledger.Entry, error) {
	if len(v) > 0 && v[0] == '{' { // written before entryV1: all JSON
		var e ledger.Entry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, err
		}
		return &e, nil
	}
	if len(v) == 0 || (v[0] != entryV1 && v[0] != entryV2) {
		return nil, errCorruptEntry
	}
	version := v[0]
	v = v[1:]
	part := func() ([]byte, error) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return nil, errCorruptEntry
		}
		p := v[k : k+int(n)]
		v = v[k+int(n):]
		return p, nil
	}
	mj, err := part()
	if err != nil {
		return nil, err
	}
	var e ledger.Entry
	if err := json.Unmarshal(mj, &e); err != nil {
		return nil, err
	}
	if version == entryV1 {
		if e.Body, err = part(); err != nil {
			return nil, err
		}
		e.Envelope = v
		return &e, nil
	}
	if len(v) < 32 {
		return nil, errCorruptEntry
	}
	h := [32]byte(v[:32])
	v = v[32:]
	sig, err := part()
	if err != nil {
		return nil, err
	}
	der, err := s.cert(h)
	if err != nil {
		return nil, err
	}
	if e.Body, err = ledger.HashedRekordBody(e.Digest, sig, der); err != nil {
		return nil, err
	}
	e.Envelope = v
	return &e, nil
}
