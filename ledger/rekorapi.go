package ledger

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/go-openapi/runtime"
	"github.com/go-openapi/swag/conv"
	"github.com/sigstore/rekor/pkg/generated/models"
	hashedrekord "github.com/sigstore/rekor/pkg/types/hashedrekord/v0.0.1"
)

// The Rekor v1 read API (rekor v1.5.4's openapi.yaml), so that an
// unmodified rekor-cli (loginfo, get) and sigstore clients verify the log:
//
//	GET  /api/v1/log                       LogInfo: size, root, signed tree head, tree ID
//	GET  /api/v1/log/publicKey             the checkpoint key (PEM)
//	GET  /api/v1/log/proof?firstSize=&lastSize=   ConsistencyProof
//	GET  /api/v1/log/entries?logIndex=N    LogEntry with inclusion proof and SET
//	GET  /api/v1/log/entries/{entryUUID}   the same by entry ID (80 hex) or UUID (64 hex)
//	POST /api/v1/log/entries/retrieve      SearchLogQuery → []LogEntry
//
// Only hashedrekord bodies are served here (a digest, a signature and the
// partner's certificate); the envelopes stay behind the ledger's own API.
// A tree of size 0 is never served: until the first entry, /api/v1/log
// answers 503.
//
// The entry UUID is hex(SHA-256(0x00 || body)), the RFC 6962 leaf hash,
// and the entry ID is the 16-hex tree ID followed by it. The signed entry
// timestamp (SET) is an ECDSA signature by the log key over the RFC 8785
// canonical JSON of {body, integratedTime, logID, logIndex}; like Rekor, the
// ledger signs it when the entry is read.

// maxSearch bounds the UUIDs, indexes and entries of one retrieve query
// (Rekor's own limit).
const maxSearch = 10

// RekorHandler serves the Rekor v1 read API. Mount it at the server's root
// (its paths start with /api/v1/).
func (l *Ledger) RekorHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/log", l.rekorLogInfo)
	mux.HandleFunc("GET /api/v1/log/publicKey", l.rekorPublicKey)
	mux.HandleFunc("GET /api/v1/log/proof", l.rekorProof)
	mux.HandleFunc("GET /api/v1/log/entries", l.rekorEntryByIndex)
	mux.HandleFunc("GET /api/v1/log/entries/{id}", l.rekorEntryByUUID)
	mux.HandleFunc("POST /api/v1/log/entries/retrieve", l.rekorRetrieve)
	return mux
}

// EntryID is the Rekor entry ID of a leaf: the 16-hex tree ID and the
// leaf hash in hex.
func (k *LogKey) EntryID(body []byte) string {
	return fmt.Sprintf("%016x", k.TreeID) + hex.EncodeToString(LeafHash(body))
}

func rekorError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(&models.Error{Code: int64(status), Message: msg})
}

func (l *Ledger) rekorLogInfo(w http.ResponseWriter, r *http.Request) {
	head := l.Head()
	if head.Size == 0 {
		rekorError(w, http.StatusServiceUnavailable, "the log has no entries yet")
		return
	}
	writeJSON(w, &models.LogInfo{
		RootHash:       conv.Pointer(hex.EncodeToString(head.Root)),
		TreeSize:       conv.Pointer(int64(head.Size)),
		SignedTreeHead: conv.Pointer(string(head.Checkpoint)),
		TreeID:         conv.Pointer(strconv.FormatInt(l.cfg.LogKey.TreeID, 10)),
	})
}

// treeIDOK reports whether an optional treeID query parameter names this log.
func (l *Ledger) treeIDOK(r *http.Request) bool {
	t := r.URL.Query().Get("treeID")
	return t == "" || t == strconv.FormatInt(l.cfg.LogKey.TreeID, 10)
}

func (l *Ledger) rekorPublicKey(w http.ResponseWriter, r *http.Request) {
	if !l.treeIDOK(r) {
		rekorError(w, http.StatusNotFound, "unknown tree ID")
		return
	}
	der, err := x509.MarshalPKIXPublicKey(l.cfg.LogKey.Public)
	if err != nil {
		rekorError(w, http.StatusInternalServerError, "cannot encode the log key")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_ = pem.Encode(w, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func (l *Ledger) rekorProof(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !l.treeIDOK(r) {
		rekorError(w, http.StatusNotFound, "unknown tree ID")
		return
	}
	first := uint64(1)
	if s := q.Get("firstSize"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			rekorError(w, http.StatusBadRequest, "firstSize must be a tree size")
			return
		}
		first = v
	}
	last, err := strconv.ParseUint(q.Get("lastSize"), 10, 64)
	head := l.Head()
	if err != nil || first < 1 || last < first || last > head.Size {
		rekorError(w, http.StatusBadRequest, fmt.Sprintf("need 1 <= firstSize <= lastSize <= %d", head.Size))
		return
	}
	hashes, err := consistencyProof(l.cfg.Store, first, last)
	if err != nil {
		rekorError(w, http.StatusInternalServerError, "cannot build the proof")
		return
	}
	root := head.Root
	if last != head.Size {
		if root, err = rootAt(l.cfg.Store, last); err != nil {
			rekorError(w, http.StatusInternalServerError, "cannot build the proof")
			return
		}
	}
	writeJSON(w, &models.ConsistencyProof{RootHash: conv.Pointer(hex.EncodeToString(root)), Hashes: hexes(hashes)})
}

func (l *Ledger) rekorEntryByIndex(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.ParseUint(r.URL.Query().Get("logIndex"), 10, 63)
	if err != nil {
		rekorError(w, http.StatusBadRequest, "logIndex must be a non-negative integer")
		return
	}
	l.writeEntries(w, []uint64{i}, false)
}

func (l *Ledger) rekorEntryByUUID(w http.ResponseWriter, r *http.Request) {
	i, err := l.indexOfEntryID(r.PathValue("id"))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			rekorError(w, http.StatusNotFound, "no entry with that UUID")
		} else {
			rekorError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	l.writeEntries(w, []uint64{i}, false)
}

// indexOfEntryID resolves a 64-hex UUID or an 80-hex entry ID of this tree.
// A well-formed ID not in the log is ErrNotFound.
func (l *Ledger) indexOfEntryID(id string) (uint64, error) {
	id = strings.ToLower(id)
	switch len(id) {
	case 80:
		if id[:16] != fmt.Sprintf("%016x", l.cfg.LogKey.TreeID) {
			return 0, ErrNotFound
		}
		id = id[16:]
	case 64:
	default:
		return 0, errors.New("an entry ID is 64 or 80 hex digits")
	}
	leaf, err := hex.DecodeString(id)
	if err != nil {
		return 0, errors.New("an entry ID is 64 or 80 hex digits")
	}
	i, err := l.cfg.Store.EntryIndexByLeafHash(leaf)
	if err != nil {
		return 0, err
	}
	if i >= l.Head().Size {
		return 0, ErrNotFound
	}
	return i, nil
}

func (l *Ledger) rekorRetrieve(w http.ResponseWriter, r *http.Request) {
	var q struct {
		EntryUUIDs []string          `json:"entryUUIDs"`
		LogIndexes []*int64          `json:"logIndexes"`
		Entries    []json.RawMessage `json:"entries"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&q); err != nil {
		rekorError(w, http.StatusBadRequest, "the body must be a SearchLogQuery")
		return
	}
	if len(q.EntryUUIDs) > maxSearch || len(q.LogIndexes) > maxSearch || len(q.Entries) > maxSearch {
		rekorError(w, http.StatusUnprocessableEntity, fmt.Sprintf("at most %d UUIDs, indexes and entries per query", maxSearch))
		return
	}
	var idx []uint64
	for _, id := range q.EntryUUIDs {
		i, err := l.indexOfEntryID(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			rekorError(w, http.StatusBadRequest, err.Error())
			return
		}
		idx = append(idx, i)
	}
	for _, i := range q.LogIndexes {
		if i == nil || *i < 0 {
			rekorError(w, http.StatusBadRequest, "log indexes are non-negative integers")
			return
		}
		idx = append(idx, uint64(*i))
	}
	for _, raw := range q.Entries {
		i, err := l.indexOfProposedEntry(r.Context(), raw)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			rekorError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		idx = append(idx, i)
	}
	l.writeEntries(w, idx, true)
}

// indexOfProposedEntry finds a hashedrekord v0.0.1 proposed entry in the
// log: by the digest it names, then by its canonical body.
func (l *Ledger) indexOfProposedEntry(ctx context.Context, raw []byte) (uint64, error) {
	pe, err := models.UnmarshalProposedEntry(bytes.NewReader(raw), runtime.JSONConsumer())
	if err != nil {
		return 0, errors.New("entries must be proposed entries")
	}
	hr, ok := pe.(*models.Hashedrekord)
	if !ok {
		return 0, errors.New("this log holds only hashedrekord entries")
	}
	var e hashedrekord.V001Entry
	if err := e.Unmarshal(hr); err != nil {
		return 0, ErrNotFound // a body that does not verify is not in the log
	}
	h := e.HashedRekordObj.Data.Hash
	if conv.Value(h.Algorithm) != models.HashedrekordV001SchemaDataHashAlgorithmSha256 {
		return 0, ErrNotFound
	}
	digest, err := hex.DecodeString(conv.Value(h.Value))
	if err != nil {
		return 0, ErrNotFound
	}
	i, err := l.cfg.Store.EntryIndexByDigest(digest)
	if err != nil {
		return 0, err
	}
	body, err := e.Canonicalize(ctx)
	if err != nil {
		return 0, ErrNotFound
	}
	en, err := l.cfg.Store.Entry(i)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(en.Body, body) {
		return 0, ErrNotFound
	}
	return i, nil
}

// writeEntries answers with the entries at idx against the current head:
// one LogEntry, or (list) an array of LogEntry, one per index in order.
// A missing index is 404 for one entry and skipped in a list.
func (l *Ledger) writeEntries(w http.ResponseWriter, idx []uint64, list bool) {
	head := l.Head()
	out := []models.LogEntry{}
	for _, i := range idx {
		if i >= head.Size {
			continue
		}
		id, e, err := l.RekorEntry(i, head)
		if err != nil {
			rekorError(w, http.StatusInternalServerError, "cannot read the entry")
			return
		}
		out = append(out, models.LogEntry{id: *e})
	}
	if list {
		writeJSON(w, out)
		return
	}
	if len(out) == 0 {
		rekorError(w, http.StatusNotFound, "no entry at that index")
		return
	}
	writeJSON(w, out[0])
}

// RekorEntry returns the entry at index as Rekor serves it, with its
// inclusion proof and checkpoint against head and a fresh SET.
func (l *Ledger) RekorEntry(index uint64, head Head) (string, *models.LogEntryAnon, error) {
	e, err := l.cfg.Store.Entry(index)
	if err != nil {
		return "", nil, err
	}
	hashes, err := inclusionProof(l.cfg.Store, index, head.Size)
	if err != nil {
		return "", nil, err
	}
	body := base64.StdEncoding.EncodeToString(e.Body)
	set, err := l.cfg.LogKey.SignEntryTimestamp(body, e.IntegratedTime, int64(index))
	if err != nil {
		return "", nil, err
	}
	return l.cfg.LogKey.EntryID(e.Body), &models.LogEntryAnon{
		Body:           body,
		IntegratedTime: conv.Pointer(e.IntegratedTime),
		LogID:          conv.Pointer(l.cfg.LogKey.LogID),
		LogIndex:       conv.Pointer(int64(index)),
		Verification: &models.LogEntryAnonVerification{
			InclusionProof: &models.InclusionProof{
				LogIndex:   conv.Pointer(int64(index)),
				TreeSize:   conv.Pointer(int64(head.Size)),
				RootHash:   conv.Pointer(hex.EncodeToString(head.Root)),
				Hashes:     hexes(hashes),
				Checkpoint: conv.Pointer(string(head.Checkpoint)),
			},
			SignedEntryTimestamp: set,
		},
	}, nil
}

// SignEntryTimestamp signs Rekor's SET payload: the RFC 8785 canonical
// JSON of {body (base64), integratedTime, logID, logIndex}.
func (k *LogKey) SignEntryTimestamp(bodyB64 string, integratedTime, logIndex int64) ([]byte, error) {
	payload, err := json.Marshal(struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	}{bodyB64, integratedTime, logIndex, k.LogID})
	if err != nil {
		return nil, err
	}
	canon, err := jsoncanonicalizer.Transform(payload)
	if err != nil {
		return nil, err
	}
	return k.signer.SignMessage(bytes.NewReader(canon))
}

func hexes(hs [][]byte) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h)
	}
	return out
}
