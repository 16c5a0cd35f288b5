package nin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

const checkpointKey = "train_state"

// SaveCheckpoint atomically writes weights, momentum and the trainer's state
// (any JSON-encodable value; the caller owns its type) to path.
func SaveCheckpoint(path string, m *Model, vel *Params, state any) error {
	b, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("saving checkpoint %s: %w", path, err)
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
// it like a model file, and decodes its state into state.
func LoadCheckpoint(path string, state any) (*Model, *Params, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading checkpoint: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("loading checkpoint %s: %w", path, err)
	}
	m, vel, meta, err := decode(bufio.NewReaderSize(f, 1<<20), fi.Size(), true)
	if err != nil {
		return nil, nil, fmt.Errorf("loading checkpoint %s (corrupt or not a checkpoint): %w", path, err)
	}
	if err := json.Unmarshal([]byte(meta[checkpointKey]), state); err != nil {
		return nil, nil, fmt.Errorf("loading checkpoint %s: %s: %w", path, checkpointKey, err)
	}
	m.ID, m.FileHash = "", ""
	return m, vel, nil
}

// SetVelocity copies momentum buffers (from a checkpoint) into the trainer.
func (t *Trainer) SetVelocity(v *Params) error {
	if len(v.Data) != len(t.vel.Data) {
		return fmt.Errorf("velocity has %d values, the model %d", len(v.Data), len(t.vel.Data))
	}
	copy(t.vel.Data, v.Data)
	return nil
}
