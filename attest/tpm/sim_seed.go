package tpm

import (
	"io"
	"math/rand"
	_ "unsafe" // for go:linkname

	// The simulator's internal package is linked in by simulator; the
	// directive below reaches its SetSeeds.
	_ "github.com/google/go-tpm-tools/simulator"
)

// simSetSeeds is go-tpm-tools' simulator/internal.SetSeeds, the function
// GetWithFixedSeedInsecure uses to replace the simulator's hierarchy seeds.
//
// It writes the seeds into the simulator's RAM copy of its persistent data
// only, without syncing them to the simulated NV; Simulator.Reset (a TPM
// Reset) reloads that data from NV and so brings back the random seeds made
// at manufacture: every primary key (EK, IAK, SRK) would change at the first
// reboot. Reboot of a "sim:seed=N" TPM therefore applies the same seeds
// again, exactly as GetWithFixedSeedInsecure did at open.
//
//go:linkname simSetSeeds github.com/google/go-tpm-tools/simulator/internal.SetSeeds
func simSetSeeds(r io.Reader)

// reapplySeed makes the seeded simulator's seeds what
// simulator.GetWithFixedSeedInsecure(seed) made them.
func reapplySeed(seed int64) {
	simSetSeeds(rand.New(rand.NewSource(seed)))
}
