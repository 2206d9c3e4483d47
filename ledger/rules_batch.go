package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/events"
)

// Station batches (events/batch.go): one signature over many events. The
// batch's own envelope is checked first (schema, subject, members' root,
// signer, signature, event ID): a failure there refuses the batch whole.
// Then each member is judged as the event it would be in an envelope of
// its own, in the batch's order, by verify (the same rules, online and in
// offline replay), and gets its own verdict: a member refused does not stop
// the others. The batch is logged as one leaf when at least one member is
// logged; its entry records every member's verdict, the device index of
// each logged member's device holds the member's proof, and the digest and
// event-ID indexes name the batch's entry for each logged member. A member
// logged before (the same statement in an earlier batch or envelope) keeps
// its entry and is answered as existing.

// processBatch handles a batch whose envelope passed prepare's early
// checks, inside the apply batch b; idx-to-be is *size.
func (b *batch) processBatch(pr *prepared, size *uint64, now, at time.Time) error {
	l := b.l
	signed := pr.signed
	st := signed.Statement
	partner, target := st.Predicate.Partner, st.Target()
	refuseWhole := func(re *RuleError, members ...events.MemberVerdict) {
		b.refuse(signed.Digest[:], partner, target, re, now.Unix(), members...)
	}
	signer, err := b.signer(pr, at)
	if err != nil {
		var re *RuleError
		if !errors.As(err, &re) {
			return err
		}
		refuseWhole(re)
		return nil
	}
	if !roleMay(signer.Role, events.KindBatchSigned) {
		refuseWhole(reject(events.CodeWrongRole, "a partner with role %s may not sign batches", signer.Role))
		return nil
	}
	if prev, err := b.eventDigest(partner, st.Predicate.EventID); err != nil {
		return err
	} else if prev != nil && !bytes.Equal(prev, signed.Digest[:]) {
		refuseWhole(reject(events.CodeDuplicateID, "%s already logged another event with event ID %s (digest %x); a new batch needs a new ID", partner, st.Predicate.EventID, prev))
		return nil
	}
	if pr.members == nil {
		// Not prepared: the signer was not known when prepare ran.
		l.prepareMembers(pr)
		if pr.early != nil {
			refuseWhole(pr.early)
			return nil
		}
	}
	idx := *size
	verdicts := make([]events.MemberVerdict, len(pr.members))
	proofs := map[string][]byte{}
	var firstRefusal *RuleError
	logged := 0
	for i, mp := range pr.members {
		m := mp.signed
		mst := m.Statement
		v := &verdicts[i]
		v.Digest, v.Target, v.Kind, v.EventID = m.DigestHex(), mst.Target(), mst.Predicate.Kind, mst.Predicate.EventID
		if j, ok := b.digests[m.Digest]; ok {
			v.Status, v.Existing, v.LogIndex = events.StatusAccepted, true, j
			continue
		}
		if j, err := l.cfg.Store.EntryIndexByDigest(m.Digest[:]); err == nil {
			v.Status, v.Existing, v.LogIndex = events.StatusAccepted, true, j
			continue
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		res, rerr := b.verify(mp, at)
		if rerr == nil {
			if prev, err := b.eventDigest(partner, v.EventID); err != nil {
				return err
			} else if prev != nil && !bytes.Equal(prev, m.Digest[:]) {
				rerr = reject(events.CodeDuplicateID, "%s already logged another event with event ID %s (digest %x); a new event needs a new ID", partner, v.EventID, prev)
				res = nil
			}
		}
		if rerr != nil {
			var re *RuleError
			if !errors.As(rerr, &re) {
				return rerr // storage failure: retry the apply batch
			}
			if res == nil || !res.evidence {
				v.Status, v.Code, v.Reason = events.StatusRejected, string(re.Code), re.Reason
				b.recordRefusal(bytes.Clone(m.Digest[:]), partner, v.Target, re, now.Unix())
				if firstRefusal == nil {
					firstRefusal = re
				}
				continue
			}
			v.Status, v.Code, v.Reason = events.StatusEvidence, string(re.Code), re.Reason
		} else {
			v.Status = events.StatusAccepted
		}
		if res.apply != nil {
			res.apply(idx)
		}
		proofs[v.Target] = mp.memberProof
		b.digests[m.Digest] = idx
		b.eventIDs[eventIDKey(partner, v.EventID)] = bytes.Clone(m.Digest[:])
		logged++
	}
	if logged == 0 {
		re := firstRefusal
		if re == nil {
			re = reject(events.CodeAlreadyExists, "every member of the batch is logged already")
		} else {
			re = reject(re.Code, "no member of the batch was logged; the first refused: %s", re.Reason)
		}
		refuseWhole(re, verdicts...)
		return nil
	}
	body, err := pr.leaf(signer.Certificate)
	if err != nil {
		return fmt.Errorf("ledger: batch leaf: %w", err)
	}
	e := &Entry{
		Index: idx, Digest: bytes.Clone(signed.Digest[:]), Kind: st.Predicate.Kind,
		Partner: partner, Target: target, Status: events.StatusAccepted,
		IntegratedTime: now.Unix(), StreamSeq: pr.seq, Body: body, Envelope: bytes.Clone(signed.Raw),
		EventID: st.Predicate.EventID, Proofs: proofs, Members: verdicts,
	}
	if err := l.rng.Append(LeafHash(body), func(id compact.NodeID, h []byte) { b.nodes[id] = h }); err != nil {
		return err
	}
	*size = idx + 1
	b.entries = append(b.entries, e)
	b.digests[signed.Digest] = idx
	b.eventIDs[eventIDKey(partner, st.Predicate.EventID)] = bytes.Clone(signed.Digest[:])
	b.answers = append(b.answers, answer{partner: partner, digest: signed.DigestHex(), index: idx, logged: true, entry: e})
	return nil
}
