package station

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
)

// MaxBatchAgents bounds the devices of one batched call (RecordStages):
// their quoted events fit one batch message.
const MaxBatchAgents = 500

// RecordStages records stage (assembly, test-passed or a sampled
// receiving-inspection) for every device behind agents in one station
// batch: each device quotes its own event, as the quote policy requires,
// and the station signs them all with one signature (events.SignBatch).
// The receipt is the batch's, with the ledger's verdict on each member in
// Receipt.Members: a device refused does not stop the others. The batch is
// refused whole (a *RejectedError) only when no member was logged.
func (s *Station) RecordStages(ctx context.Context, agents []string, stage, note string) (*Result, error) {
	if stage == events.StageFirmwareProgrammed {
		return nil, errors.New("station: firmware is recorded by ProgramFirmwares, which programs it")
	}
	return s.recordBatch(ctx, agents, "stages", func(ctx context.Context, dev *device.Client) (*events.Statement, error) {
		return s.quotedStage(ctx, dev, stage, note)
	})
}

// ProgramFirmwares is a programming line: it flashes image into every
// device behind agents and records their firmware-programmed events (each
// with the device's PCRs and its quote) in one station batch, as
// RecordStages does.
func (s *Station) ProgramFirmwares(ctx context.Context, agents []string, image []byte) (*Result, error) {
	if len(image) == 0 {
		return nil, errors.New("station: empty firmware image")
	}
	return s.recordBatch(ctx, agents, "firmware", func(ctx context.Context, dev *device.Client) (*events.Statement, error) {
		st, err := s.programmed(ctx, dev, image)
		if err != nil {
			return nil, err
		}
		return st, s.quote(ctx, dev, st)
	})
}

// recordBatch makes one event per device behind agents with event (which
// quotes it on its device), signs them as one station batch named for what
// and publishes it.
func (s *Station) recordBatch(ctx context.Context, agents []string, what string, event func(context.Context, *device.Client) (*events.Statement, error)) (*Result, error) {
	if len(agents) < 1 || len(agents) > MaxBatchAgents {
		return nil, fmt.Errorf("station: a batch records 1 to %d devices, not %d", MaxBatchAgents, len(agents))
	}
	// Every address is checked before any device is contacted.
	devs := make([]*device.Client, len(agents))
	for i, agent := range agents {
		dev, err := s.device(agent)
		if err != nil {
			return nil, err
		}
		devs[i] = dev
	}
	members := make([]*events.Statement, len(agents))
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16) // devices quoted at once
	for i, dev := range devs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			members[i], errs[i] = event(ctx, dev)
		})
	}
	wg.Wait()
	seen := map[string]string{}
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("device %d of the batch (%s): %w", i, agents[i], err)
		}
		id := members[i].Device()
		if prev, ok := seen[id]; ok {
			return nil, fmt.Errorf("station: %s and %s are the same device %s: a batch records a device once", prev, agents[i], id)
		}
		seen[id] = agents[i]
	}
	b, err := events.SignBatch(ctx, what+"-"+events.NewEventID()[:16], members, s.cfg.Key, s.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("station: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptTimeout)
	defer cancel()
	r, err := s.pub.Publish(ctx, b.Parcel)
	if err != nil {
		return nil, err
	}
	logged := 0
	for _, v := range r.Members {
		if v.Logged() {
			logged++
		}
	}
	s.cfg.Logger.Info("batch answered", "batch", b.Statement.Target(), "devices", len(members), "logged", logged, "status", r.Status, "code", r.Code, "index", r.LogIndex)
	res := &Result{Receipt: r}
	if r.Status != events.StatusAccepted {
		return res, &RejectedError{Receipt: r}
	}
	return res, nil
}

// quotedStage is one device's stage.recorded, quoted by the device (not
// signed: RecordStage signs it alone, RecordStages in a batch).
func (s *Station) quotedStage(ctx context.Context, dev *device.Client, stage, note string) (*events.Statement, error) {
	id, err := s.deviceID(ctx, dev)
	if err != nil {
		return nil, err
	}
	st := events.NewStatement(events.KindStageRecorded, s.cfg.Name, id, s.cfg.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: stage, Note: note}
	return st, s.quote(ctx, dev, st)
}

// quote has dev quote st over its binding digest and sets its evidence.
func (s *Station) quote(ctx context.Context, dev *device.Client, st *events.Statement) error {
	nonce, err := events.StatementBindingDigest(st)
	if err != nil {
		return err
	}
	q, err := dev.Quote(ctx, nonce, s.cfg.QuotePCRs)
	if err != nil {
		return fmt.Errorf("station: quote from the device: %w", err)
	}
	st.Predicate.Evidence = events.NewEvidence(q)
	return nil
}
