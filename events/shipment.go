package events

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Shipments: one signed statement moves a manifest of devices (cartons in
// pallets) from one partner to another. The statement is small: its
// subject is the shipment, whose digest is the manifest's Merkle root
// (RFC 6962 over one leaf per device, ManifestLeaf), and its predicate
// names the parties and the number of devices. The manifest itself travels
// beside the envelope in a Parcel, so a device's history carries the
// shipment's envelope and the device's path to the root (ManifestProof),
// not the whole pallet: per-device offline verification reads a few
// hundred bytes per shipment, and a partner reading one device's history
// does not learn the rest of the pallet.

// Shipment kinds: offer, accept (the recipient takes the devices it
// received) and withdraw (the sender takes back devices still pending).
const (
	KindShipmentOffered   = "shipment.offered"
	KindShipmentAccepted  = "shipment.accepted"
	KindShipmentWithdrawn = "shipment.withdrawn"
)

// StageReceivingInspection is a receiving station's quote of a sampled
// device of a shipment: it must show the PCRs last recorded for the device.
const StageReceivingInspection = "receiving-inspection"

// MaxManifestDevices bounds a shipment's manifest.
const MaxManifestDevices = 10_000

// MaxMessageSize bounds a message on the events stream: an envelope, or a
// parcel (an envelope with a manifest of up to MaxManifestDevices devices,
// about 670 KB). It stays under NATS's default max_payload (1 MiB).
const MaxMessageSize = 1000 << 10

// IsShipment reports whether kind is a shipment kind.
func IsShipment(kind string) bool {
	return kind == KindShipmentOffered || kind == KindShipmentAccepted || kind == KindShipmentWithdrawn
}

// Shipment is the predicate of the shipment kinds.
type Shipment struct {
	ID   string `json:"id"` // the sender's shipment number; the subject names it
	From string `json:"from"`
	To   string `json:"to"`
	// Offer is, for shipment.accepted and shipment.withdrawn, the hex
	// digest of the shipment.offered it answers.
	Offer string `json:"offer,omitempty"`
	// Devices is the number of devices in the manifest (the Merkle tree's
	// size).
	Devices int `json:"devices"`
}

var (
	shipmentIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	containerRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
)

// ValidShipmentID reports whether s is a shipment ID: 1 to 64 letters,
// digits, '-' or '_', starting with a letter or digit (a NATS token).
func ValidShipmentID(s string) bool { return shipmentIDRE.MatchString(s) }

// ShipmentTarget is the target token (the last token of the event subject)
// of a shipment's events.
func ShipmentTarget(id string) string { return "shipment-" + id }

// NewShipmentStatement returns a shipment statement of kind by partner at
// t, over manifest m (whose root it names). Callers set Offer for an
// acceptance or a withdrawal.
func NewShipmentStatement(kind, partner string, sh Shipment, m *Manifest, t time.Time, eventID string) (*Statement, error) {
	root, err := m.Root()
	if err != nil {
		return nil, err
	}
	sh.Devices = m.Len()
	return &Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: "shipment:" + sh.ID, Digest: map[string]string{"sha256": hex.EncodeToString(root)}}},
		PredicateType: PredicateTypePrefix + kind,
		Predicate:     Predicate{Kind: kind, Partner: partner, Time: t.UTC().Truncate(time.Millisecond), EventID: eventID, Shipment: &sh},
	}, nil
}

// ShipmentRoot returns the manifest root a shipment statement signs (its
// subject's digest), or nil.
func (s *Statement) ShipmentRoot() []byte {
	if s.Predicate.Shipment == nil {
		return nil
	}
	return s.subjectRoot()
}

// subjectRoot is the sha256 digest of the statement's one subject, as
// bytes, or nil.
func (s *Statement) subjectRoot() []byte {
	if len(s.Subject) != 1 {
		return nil
	}
	r, err := hex.DecodeString(s.Subject[0].Digest["sha256"])
	if err != nil || len(r) != sha256.Size {
		return nil
	}
	return r
}

// Manifest is what a shipment holds: devices packed in containers. A
// container's path names it from the outermost in: "P-07/C-012" is carton
// C-012 on pallet P-07; "" holds loose devices. Its Merkle leaves are, in
// order of containers and of devices in each, ManifestLeaf(device, path).
type Manifest struct {
	Containers []Container `json:"containers"`
}

// Container is one pallet, carton or tray of a manifest and the devices
// packed directly in it.
type Container struct {
	Path    string   `json:"path"`
	Devices []string `json:"devices"`
}

// Item is one device of a manifest with its container path and its
// position among the manifest's leaves.
type Item struct {
	Device   string
	Path     string
	Position int
}

// ManifestLeaf is the Merkle leaf data of one device of a manifest: its ID,
// '@', its container path. A device ID has a fixed length, so the leaf is
// unambiguous.
func ManifestLeaf(device, path string) []byte {
	return []byte(device + "@" + path)
}

// Len is the number of devices in the manifest.
func (m *Manifest) Len() int {
	n := 0
	for _, c := range m.Containers {
		n += len(c.Devices)
	}
	return n
}

// Items lists the manifest's devices in leaf order.
func (m *Manifest) Items() []Item {
	out := make([]Item, 0, m.Len())
	for _, c := range m.Containers {
		for _, d := range c.Devices {
			out = append(out, Item{Device: d, Path: c.Path, Position: len(out)})
		}
	}
	return out
}

// Check validates a manifest: 1 to MaxManifestDevices devices, valid and
// unique device IDs, container paths of one to four names, each path once.
func (m *Manifest) Check() error {
	if m == nil {
		return errors.New("a shipment needs its manifest")
	}
	n := m.Len()
	if n < 1 || n > MaxManifestDevices {
		return fmt.Errorf("a manifest holds 1 to %d devices, this one %d", MaxManifestDevices, n)
	}
	if len(m.Containers) > MaxManifestDevices {
		return fmt.Errorf("a manifest holds at most %d containers", MaxManifestDevices)
	}
	paths := make(map[string]bool, len(m.Containers))
	seen := make(map[string]bool, n)
	for _, c := range m.Containers {
		if !ValidContainerPath(c.Path) {
			return fmt.Errorf("container path %q: one to four names of letters, digits, '-' or '_', separated by '/'", c.Path)
		}
		if paths[c.Path] {
			return fmt.Errorf("container %q is listed twice", c.Path)
		}
		paths[c.Path] = true
		for _, d := range c.Devices {
			if !ValidDeviceID(d) {
				return fmt.Errorf("manifest device %q is not a device ID", d)
			}
			if seen[d] {
				return fmt.Errorf("device %s is listed twice in the manifest", d)
			}
			seen[d] = true
		}
	}
	return nil
}

// ValidContainerPath reports whether p is a container path: "" (loose
// devices) or one to four container names joined by '/'.
func ValidContainerPath(p string) bool {
	if p == "" {
		return true
	}
	parts := strings.Split(p, "/")
	if len(parts) > 4 {
		return false
	}
	for _, s := range parts {
		if !containerRE.MatchString(s) {
			return false
		}
	}
	return true
}

var manifestRanges = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// Root is the manifest's RFC 6962 Merkle root (the shipment subject's
// digest).
func (m *Manifest) Root() ([]byte, error) { return treeRoot(m.leaves(m.Items())) }

// leaves are the manifest tree's leaves of items (its Items).
func (m *Manifest) leaves(items []Item) [][]byte {
	leaves := make([][]byte, len(items))
	for i, it := range items {
		leaves[i] = ManifestLeaf(it.Device, it.Path)
	}
	return leaves
}

// treeRoot is the RFC 6962 root of leaves (a manifest's, a batch's).
func treeRoot(leaves [][]byte) ([]byte, error) {
	r := manifestRanges.NewEmptyRange(0)
	for _, l := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(l), nil); err != nil {
			return nil, err
		}
	}
	if r.End() == 0 {
		return nil, fmt.Errorf("%w: an empty tree", ErrMalformed)
	}
	return r.GetRootHash(nil)
}

// ManifestProof proves that a device was in a shipment's manifest, in a
// container: an RFC 6962 inclusion proof of ManifestLeaf(device, Path) at
// Position in a tree of Size leaves, whose root the shipment signs.
type ManifestProof struct {
	Position uint64   `json:"position"`
	Size     uint64   `json:"size"`
	Path     string   `json:"path"`
	Hashes   [][]byte `json:"hashes"`
}

// Verify checks that the proof puts device in the manifest whose root is
// root.
func (p *ManifestProof) Verify(device string, root []byte) error {
	if p == nil {
		return fmt.Errorf("no manifest proof for device %s", device)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(ManifestLeaf(device, p.Path))
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.Position, p.Size, leaf, p.Hashes, root); err != nil {
		return fmt.Errorf("device %s is not in the shipment's manifest: %w", device, err)
	}
	return nil
}

// Proofs returns the root of the manifest and every device's proof, by
// device ID: the tree is built once.
func (m *Manifest) Proofs() ([]byte, map[string]*ManifestProof, error) {
	items := m.Items()
	root, paths, err := treeProofs(m.leaves(items))
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*ManifestProof, len(items))
	for i, it := range items {
		out[it.Device] = &ManifestProof{Position: uint64(i), Size: uint64(len(items)), Path: it.Path, Hashes: paths[i]}
	}
	return root, out, nil
}

// treeProofs returns the RFC 6962 root of leaves and every leaf's
// inclusion proof in that tree: the tree is built once.
func treeProofs(leaves [][]byte) ([]byte, [][][]byte, error) {
	nodes := map[compact.NodeID][]byte{}
	visit := func(id compact.NodeID, h []byte) { nodes[id] = h }
	r := manifestRanges.NewEmptyRange(0)
	for _, l := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(l), visit); err != nil {
			return nil, nil, err
		}
	}
	if r.End() == 0 {
		return nil, nil, fmt.Errorf("%w: an empty tree", ErrMalformed)
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return nil, nil, err
	}
	size := uint64(len(leaves))
	out := make([][][]byte, len(leaves))
	for i := range leaves {
		pn, err := proof.Inclusion(uint64(i), size)
		if err != nil {
			return nil, nil, err
		}
		hs := make([][]byte, len(pn.IDs))
		for k, id := range pn.IDs {
			hs[k] = nodes[id]
		}
		if out[i], err = pn.Rehash(hs, rfc6962.DefaultHasher.HashChildren); err != nil {
			return nil, nil, err
		}
	}
	return root, out, nil
}

// Parcel is a shipment event on the wire: its envelope and its manifest.
// It is encoded with the envelope first ({"envelope":…), which is how the
// ledger tells it from a bare envelope.
type Parcel struct {
	Envelope json.RawMessage `json:"envelope"`
	Manifest *Manifest       `json:"manifest,omitempty"`
	// Members are a batch's member payloads, base64 (batch.go).
	Members []string `json:"members,omitempty"`
}

var parcelPrefix = []byte(`{"envelope":`)

// IsParcel reports whether a message is a parcel rather than a bare
// envelope.
func IsParcel(raw []byte) bool { return bytes.HasPrefix(raw, parcelPrefix) }

// EncodeParcel returns the wire form of a shipment event.
func EncodeParcel(envelope []byte, m *Manifest) ([]byte, error) {
	return json.Marshal(Parcel{Envelope: envelope, Manifest: m})
}

// encodeBatchParcel returns the wire form of a batch.
func encodeBatchParcel(envelope []byte, members []string) ([]byte, error) {
	return json.Marshal(Parcel{Envelope: envelope, Members: members})
}

// OpenMessage opens a message of the events stream: a bare envelope
// ([Open]) or a parcel, whose manifest must be valid and have the root and
// size the shipment statement signs. A shipment event without its manifest,
// or a manifest beside any other kind, is malformed. A manifest that does
// not match its shipment returns the opened envelope (without Manifest)
// with an error wrapping ErrManifest, so the refusal can name the
// shipment's digest. Nothing is verified cryptographically.
func OpenMessage(raw []byte) (*Signed, error) {
	if !IsParcel(raw) {
		s, err := Open(raw)
		if err != nil {
			return nil, err
		}
		if k := s.Statement.Predicate.Kind; IsShipment(k) || k == KindBatchSigned {
			return nil, fmt.Errorf("%w: a %s travels as a parcel with its manifest or members", ErrMalformed, k)
		}
		return s, nil
	}
	if len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("%w: parcel of %d bytes exceeds %d", ErrMalformed, len(raw), MaxMessageSize)
	}
	p, ok := decodeBatchParcel(raw)
	if !ok {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("%w: parcel: %v", ErrMalformed, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: trailing data after the parcel", ErrMalformed)
		}
	}
	s, err := Open(p.Envelope)
	if err != nil {
		return nil, err
	}
	st := s.Statement
	if st.Predicate.Kind == KindBatchSigned {
		if p.Manifest != nil {
			return nil, fmt.Errorf("%w: a batch travels with its members, not a manifest", ErrMalformed)
		}
		if err := openBatch(s, p.Members); err != nil {
			if errors.Is(err, ErrManifest) {
				s.Members = nil
				return s, err
			}
			return nil, err
		}
		s.Parcel = raw
		return s, nil
	}
	if !IsShipment(st.Predicate.Kind) || p.Members != nil {
		return nil, fmt.Errorf("%w: only shipments travel with a manifest, and only batches with members, not %s", ErrMalformed, st.Predicate.Kind)
	}
	if err := p.Manifest.Check(); err != nil {
		return s, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	root, err := p.Manifest.Root()
	if err != nil {
		return s, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if want := st.ShipmentRoot(); !bytes.Equal(root, want) {
		return s, fmt.Errorf("%w: the manifest's root %x is not the %x the shipment signs (a device added to or taken out of the manifest)", ErrManifest, root, want)
	}
	if n := p.Manifest.Len(); n != st.Predicate.Shipment.Devices {
		return s, fmt.Errorf("%w: the manifest lists %d devices, the shipment signs %d", ErrManifest, n, st.Predicate.Shipment.Devices)
	}
	s.Manifest, s.Parcel = p.Manifest, raw
	return s, nil
}

// decodeBatchParcel decodes a batch's parcel in the exact form
// encodeBatchParcel writes ({"envelope":<object>,"members":["<base64>",…]},
// no spaces, members strings without escapes), which is most of a busy
// stream's bytes, without encoding/json's reflection and byte-by-byte
// scanning: the envelope object is skipped over (its strings respected)
// and each member found with IndexByte. Any other form (ok false) is left
// to encoding/json, whose answer stands. A member string is taken as its
// bytes: where encoding/json would read it otherwise (invalid UTF-8,
// control characters) it is no base64 either way, and the member is
// refused as malformed by both.
func decodeBatchParcel(raw []byte) (p Parcel, ok bool) {
	rest, ok := bytes.CutPrefix(raw, parcelPrefix)
	if !ok {
		return p, false
	}
	n := skipObject(rest)
	if n <= 0 {
		return p, false
	}
	p.Envelope, rest = rest[:n], rest[n:]
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"members":[`)); !ok {
		return p, false
	}
	for len(rest) > 0 && rest[0] == '"' {
		end := bytes.IndexByte(rest[1:], '"')
		if end < 0 {
			return p, false
		}
		m := rest[1 : 1+end]
		if bytes.IndexByte(m, '\\') >= 0 || bytes.ContainsFunc(m, func(r rune) bool { return r < 0x20 }) {
			// An escape, or a control character JSON forbids in a string
			// (and base64 decoding would skip, a newline): encoding/json's
			// to read, or to refuse.
			return p, false
		}
		p.Members = append(p.Members, string(m))
		rest = rest[2+end:]
		if len(rest) > 0 && rest[0] == ',' {
			rest = rest[1:]
			if len(rest) == 0 || rest[0] != '"' {
				return p, false
			}
		}
	}
	return p, string(rest) == "]}" && len(p.Members) > 0
}

// skipObject returns the length of the JSON object b starts with (0 if it
// does not start with one or it does not end): braces counted outside
// strings, escapes inside them skipped. It does not validate the object;
// its decoder does.
func skipObject(b []byte) int {
	if len(b) == 0 || b[0] != '{' {
		return 0
	}
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return 0
}

// SignShipment signs a shipment statement (NewShipmentStatement) over m
// and returns it opened, with its parcel.
func SignShipment(ctx context.Context, st *Statement, m *Manifest, key crypto.Signer, keyID string) (*Signed, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	root, err := m.Root()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(root, st.ShipmentRoot()) || st.Predicate.Shipment == nil || st.Predicate.Shipment.Devices != m.Len() {
		return nil, errors.New("events: the statement does not sign this manifest")
	}
	s, err := SignStatement(ctx, st, key, keyID)
	if err != nil {
		return nil, err
	}
	parcel, err := EncodeParcel(s.Raw, m)
	if err != nil {
		return nil, err
	}
	if len(parcel) > MaxMessageSize {
		return nil, fmt.Errorf("events: the parcel is %d bytes, more than %d", len(parcel), MaxMessageSize)
	}
	s.Manifest, s.Parcel = m, parcel
	return s, nil
}

// ErrManifest reports a manifest that does not match the shipment it
// travels with (code manifest).
var ErrManifest = errors.New("manifest")
