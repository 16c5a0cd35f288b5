package nin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// TrainState is what a checkpoint records besides weights and momentum.
// Dropout masks and shuffles are pure functions of (Seed, Epoch, Step), so
// this is all the state there is: resuming reproduces the uninterrupted run.
type TrainState struct {
	Epoch              int               `json:"epoch"` // epochs completed
	Step               uint64            `json:"step"`  // SGD steps completed
	Seed               uint64            `json:"seed"`
	Config             json.RawMessage   `json:"config"`  // training settings; a resume must match
	History            []json.RawMessage `json:"history"` // one metrics object per completed epoch
	DatasetFingerprint string            `json:"dataset_fingerprint"`
	Seconds            float64           `json:"seconds"` // training time so far
}

const checkpointKey = "train_state"

// SaveCheckpoint atomically writes weights, momentum and state to path.
func SaveCheckpoint(path string, m *Model, vel *Params, st TrainState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	err = writeAtomic(path, func(w io.Writer) error {
		_, err := m.encodeWith(w, vel, map[string]string{checkpointKey: string(b)})
		return err
	})
	if err != nil {
		return fmt.Errorf("saving checkpoint %s: %w", path, err)
	}
	return nil
}

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint, validating
// it like a model file.
func LoadCheckpoint(path string) (*Model, *Params, TrainState, error) {
	var st TrainState
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, st, fmt.Errorf("loading checkpoint: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, st, fmt.Errorf("loading checkpoint %s: %w", path, err)
	}
	m, vel, meta, err := decode(bufio.NewReaderSize(f, 1<<20), fi.Size(), true)
	if err != nil {
		return nil, nil, st, fmt.Errorf("loading checkpoint %s (corrupt or not a checkpoint): %w", path, err)
	}
	if err := json.Unmarshal([]byte(meta[checkpointKey]), &st); err != nil {
		return nil, nil, st, fmt.Errorf("loading checkpoint %s: train_state: %w", path, err)
	}
	m.ID = ""
	return m, vel, st, nil
}

// SetVelocity copies momentum buffers (from a checkpoint) into the trainer.
func (t *Trainer) SetVelocity(v *Params) error {
	if len(v.Data) != len(t.vel.Data) {
		return fmt.Errorf("nin: velocity has %d values, the model %d", len(v.Data), len(t.vel.Data))
	}
	copy(t.vel.Data, v.Data)
	return nil
}
