package gate

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/gate/gatewire"
)

// Refusals are counted per registration ID (the device ID, SHA-256 of the
// EK) and per source address, in fixed windows of RefusalLogInterval:
//
//   - a key with RefusalsPerDevice (RefusalsPerSource) refusals in its
//     window is throttled until the window ends: both registration calls
//     answer 429 with Retry-After before any cryptography, and the attempt
//     counts as a refusal of the device;
//   - refusals are recorded in aggregate, per device: at most one record
//     (a log line, and enrollment.refused if the ledger knows the device)
//     per window, carrying the count of refusals since the previous record
//     and the latest refusal's rule and message. The first refusal after a
//     quiet window is recorded at once; later ones wait for the next
//     record, which Run's sweep writes when the window has passed.

// ThrottledError is a registration refused because its device or its
// source address collected too many refusals in the current window. The
// HTTP API answers it as DPS throttles: 429 with Retry-After.
type ThrottledError struct {
	By         string        // "device" or "source"
	RetryAfter time.Duration // until the window ends
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many refused registrations for this %s; retry after %s", e.By, e.RetryAfter.Round(time.Second))
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1.
func (e *ThrottledError) RetryAfterSeconds() string {
	s := int64((e.RetryAfter + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// maxRecordsInFlight bounds the refusal records written at once.
const maxRecordsInFlight = 16

// refusal is one refused decision, as a record reports it.
type refusal struct {
	rule, message, source string
	decision              *gatewire.Decision
	nonce                 []byte
	quote                 *events.Evidence // verified by the recorded IAK
	recorded              bool             // already in a record
}

// window counts one key's refusals.
type window struct {
	start time.Time // of the current window
	n     int       // refusals in the current window
	// Devices only: the aggregate record.
	lastRecord time.Time // zero: never recorded
	since      time.Time // the first refusal not yet recorded
	pending    int       // refusals since the last record
	throttled  int       // of which answered 429
	latest     *refusal
}

type limiter struct {
	mu                   sync.Mutex
	window               time.Duration
	perDevice, perSource int
	devices, sources     map[string]*window
}

func newLimiter(w time.Duration, perDevice, perSource int) limiter {
	return limiter{window: w, perDevice: perDevice, perSource: perSource, devices: map[string]*window{}, sources: map[string]*window{}}
}

// roll starts a new window for w if the current one has ended.
func (l *limiter) roll(w *window, now time.Time) {
	if now.Sub(w.start) >= l.window {
		w.start, w.n = now, 0
	}
}

func (l *limiter) get(m map[string]*window, key string, now time.Time) *window {
	w := m[key]
	if w == nil {
		w = &window{start: now}
		m[key] = w
	}
	l.roll(w, now)
	return w
}

// check returns a *ThrottledError if the device or the source is over its
// limit in the current window, and counts the attempt as a refusal of the
// device. It costs a map lookup.
func (l *limiter) check(device, source string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err *ThrottledError
	if w := l.devices[device]; w != nil && now.Sub(w.start) < l.window && w.n >= l.perDevice {
		err = &ThrottledError{By: "device", RetryAfter: w.start.Add(l.window).Sub(now)}
	} else if w := l.sources[source]; source != "" && w != nil && now.Sub(w.start) < l.window && w.n >= l.perSource {
		err = &ThrottledError{By: "source", RetryAfter: w.start.Add(l.window).Sub(now)}
	}
	if err == nil {
		return nil
	}
	w := l.get(l.devices, device, now)
	if w.pending == 0 {
		w.since = now
	}
	w.pending++
	w.throttled++
	return err
}

// refusalRecord is one aggregate record of a device's refusals.
type refusalRecord struct {
	device           string
	count, throttled int
	since            time.Time
	latest           refusal // a copy
	evidence         bool    // latest was not recorded before: its quote may go in
}

// refused counts a refused decision and returns the record to write now,
// if the device's last record is a window old (or it has none).
func (l *limiter) refused(device string, r *refusal, now time.Time) *refusalRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.devices) > maxOperations {
		l.prune(now)
	}
	w := l.get(l.devices, device, now)
	w.n++
	if w.pending == 0 {
		w.since = now
	}
	w.pending++
	w.latest = r
	if r.source != "" {
		l.get(l.sources, r.source, now).n++
	}
	if !w.lastRecord.IsZero() && now.Sub(w.lastRecord) < l.window {
		return nil
	}
	return l.take(device, w, now)
}

// take makes the record of w's pending refusals.
func (l *limiter) take(device string, w *window, now time.Time) *refusalRecord {
	rec := &refusalRecord{device: device, count: w.pending, throttled: w.throttled, since: w.since}
	if w.latest != nil {
		rec.latest, rec.evidence = *w.latest, !w.latest.recorded
		w.latest.recorded = true
	}
	w.lastRecord, w.pending, w.throttled = now, 0, 0
	return rec
}

// due returns the records of devices whose last record is a window old
// and which collected refusals since, and forgets quiet keys.
func (l *limiter) due(now time.Time) []*refusalRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*refusalRecord
	for dev, w := range l.devices {
		if w.pending > 0 && now.Sub(w.lastRecord) >= l.window {
			out = append(out, l.take(dev, w, now))
		}
	}
	l.prune(now)
	return out
}

// prune forgets keys with nothing pending whose window and last record are
// a window old.
func (l *limiter) prune(now time.Time) {
	for k, w := range l.devices {
		if w.pending == 0 && now.Sub(w.start) >= l.window && now.Sub(w.lastRecord) >= l.window {
			delete(l.devices, k)
		}
	}
	for k, w := range l.sources {
		if now.Sub(w.start) >= l.window {
			delete(l.sources, k)
		}
	}
}

// refused counts a refused decision and, if the device's record is due,
// writes it in the background (the caller's answer does not wait for the
// ledger, so it takes as long for a device the ledger knows as for one it
// does not).
func (g *Gate) refused(device, source string, d *gatewire.Decision, res *result) {
	r := &refusal{rule: d.Rule, message: d.Message, source: source, decision: d}
	if res != nil && res.quote != nil {
		r.nonce, r.quote = res.nonce, res.quote
	}
	rec := g.limits.refused(device, r, g.cfg.Now())
	if rec == nil {
		d.LogNote = fmt.Sprintf("counted: in the device's next aggregate refusal record (at most one per %s)", g.cfg.RefusalLogInterval)
		return
	}
	d.LogNote = "recording: this refusal opens an aggregate refusal record"
	g.writeRecord(rec)
}

// flushRefusals writes the aggregate records that are due.
func (g *Gate) flushRefusals() {
	for _, rec := range g.limits.due(g.cfg.Now()) {
		g.writeRecord(rec)
	}
}

// writeRecord writes one aggregate record in the background: a log line,
// and enrollment.refused when the ledger knows the device (the ledger
// refuses records about devices it never saw).
func (g *Gate) writeRecord(rec *refusalRecord) {
	g.records.Add(1)
	go func() {
		defer g.records.Done()
		g.recordSem <- struct{}{}
		defer func() { <-g.recordSem }()
		logged, idx, note := g.recordRefused(rec)
		if d := rec.latest.decision; d != nil && rec.evidence {
			g.mu.Lock()
			d.Logged, d.LogIndex, d.LogNote = logged, idx, note
			g.mu.Unlock()
		}
		g.cfg.Logger.Info("enrollment refused", "device", rec.device, "refusals", rec.count, "throttled", rec.throttled,
			"since", rec.since.UTC().Format(time.RFC3339), "rule", rec.latest.rule, "message", rec.latest.message,
			"source", rec.latest.source, "logged", logged, "log_index", idx, "note", note)
	}()
}

func (g *Gate) recordRefused(rec *refusalRecord) (logged bool, idx uint64, note string) {
	if _, err := g.cfg.Ledger.Device(rec.device); err != nil {
		return false, 0, "not logged: the ledger has no record of this device"
	}
	st := events.NewStatement(events.KindEnrollmentRefused, g.cfg.Name, rec.device, g.cfg.Now(), events.NewEventID())
	suffix := fmt.Sprintf(" [%d refusal(s) since %s, %d throttled]", rec.count, rec.since.UTC().Format(time.RFC3339), rec.throttled)
	msg := rec.latest.message
	if len(msg)+len(suffix) > 1024 {
		msg = msg[:1024-len(suffix)-3] + "..."
	}
	rule := rec.latest.rule
	if rule == "" {
		rule = events.RuleChallenge
	}
	st.Predicate.Refused = &events.Refused{
		Operator: g.cfg.Operator, RegistrationID: rec.device, IDScope: g.cfg.IDScope,
		Rule: rule, Message: msg + suffix,
	}
	if rec.evidence && rec.latest.quote != nil {
		st.Predicate.Refused.Challenge = rec.latest.nonce
		st.Predicate.Evidence = rec.latest.quote
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.PublishTimeout)
	defer cancel()
	idx, err := g.publishFn(ctx, st)
	if err != nil {
		return false, 0, "not logged: " + err.Error()
	}
	return true, idx, fmt.Sprintf("logged in aggregate: %d refusal(s)", rec.count)
}
