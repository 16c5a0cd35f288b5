package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ninbatch/ninbatch/nin"
)

// TrainState is what a checkpoint records besides weights and momentum.
// Dropout masks and shuffles are pure functions of (Seed, Epoch, Step), so
// this is all the state there is: resuming reproduces the uninterrupted run.
type TrainState struct {
	Epoch              int            `json:"epoch"` // epochs completed
	Step               uint64         `json:"step"`  // SGD steps completed
	Seed               uint64         `json:"seed"`
	Config             *TrainConfig   `json:"config"`  // nil until the first run starts; a resume must match
	History            []EpochMetrics `json:"history"` // one per completed epoch
	DatasetFingerprint string         `json:"dataset_fingerprint"`
	Seconds            float64        `json:"seconds"` // training time so far
}

// LoadCheckpoint reads a checkpoint: the model as far as training got, the
// momentum buffers and the state.
func LoadCheckpoint(path string) (*nin.Model, *nin.Params, TrainState, error) {
	var st TrainState
	m, vel, err := nin.LoadCheckpoint(path, &st)
	return m, vel, st, err
}

// TrainFiles are the files a training run writes. One writer owns them:
// the checkpoint after every epoch, then a metrics line, then the curves,
// and the model at the end.
type TrainFiles struct {
	Model      string // the final model ("" = none)
	Checkpoint string // "" = none
	Metrics    string // JSON lines, one per epoch ("" = none)
	Curves     string // PNG ("" = none)
	Dataset    string // provenance: the training data's paths
	Command    string // provenance: how the model was made
	Version    string // provenance: the ninbatch version
}

// ErrModelWritten starts the error of a run whose model was written but
// whose metrics file fell behind.
var ErrModelWritten = errors.New("the model was written")

// ErrTrainFiles marks an output file that cannot be opened before training.
var ErrTrainFiles = errors.New("training output")

// trainWriter writes TrainFiles. A failed checkpoint stops training; a
// failed metrics line does not (the checkpoint holds the history), but it
// is remembered and returned once the model is written.
type trainWriter struct {
	files      TrainFiles
	metrics    *os.File
	metricsErr error
	warn       func(string)
}

// openTrainWriter starts the metrics file: empty for a new run, the
// checkpoint's history for a resumed one (so it never holds an epoch the
// checkpoint lacks, nor lacks one it holds).
func openTrainWriter(files TrainFiles, history []EpochMetrics, warn func(string)) (*trainWriter, error) {
	w := &trainWriter{files: files, warn: warn}
	if files.Metrics == "" {
		return w, nil
	}
	f, err := os.OpenFile(files.Metrics, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: metrics file: %w", ErrTrainFiles, err)
	}
	w.metrics = f
	for _, m := range history {
		if err := w.appendMetrics(m); err != nil {
			f.Close()
			return nil, err
		}
	}
	return w, nil
}

func (w *trainWriter) close() {
	if w.metrics != nil {
		w.metrics.Close()
	}
}

// epoch records a finished epoch: checkpoint first, so the metrics file
// never runs ahead of what a resume can reproduce.
func (w *trainWriter) epoch(m *nin.Model, vel *nin.Params, st *TrainState) error {
	if w.files.Checkpoint != "" {
		if err := nin.SaveCheckpoint(w.files.Checkpoint, m, vel, st); err != nil {
			return err
		}
	}
	if err := w.appendMetrics(st.History[len(st.History)-1]); err != nil {
		if w.warn != nil {
			w.warn(err.Error())
		}
		if w.metricsErr == nil {
			w.metricsErr = err
		}
	}
	if w.files.Curves != "" {
		if err := PlotCurves(w.files.Curves, st.History); err != nil && w.warn != nil {
			w.warn(fmt.Sprintf("plotting the training curves: %v", err))
		}
	}
	return nil
}

func (w *trainWriter) appendMetrics(m EpochMetrics) error {
	if w.metrics == nil || w.metricsErr != nil {
		return nil
	}
	b, _ := json.Marshal(m)
	_, err := w.metrics.Write(append(b, '\n'))
	if err == nil {
		err = w.metrics.Sync()
	}
	if err != nil {
		return fmt.Errorf("writing metrics file %s: %w", w.files.Metrics, err)
	}
	return nil
}

// finish writes the model and reports a metrics file that fell behind.
func (w *trainWriter) finish(m *nin.Model, st TrainState) error {
	if err := SaveTrained(m, st, w.files, ""); err != nil {
		return err
	}
	if w.metricsErr != nil {
		return fmt.Errorf("%w, but %w", ErrModelWritten, w.metricsErr)
	}
	return nil
}

// SaveTrained writes a trained model to files.Model with its provenance;
// note (if any) is appended to the command.
func SaveTrained(m *nin.Model, st TrainState, files TrainFiles, note string) error {
	if files.Model == "" {
		return nil
	}
	last := map[string]float64{}
	if n := len(st.History); n > 0 {
		em := st.History[n-1]
		last = map[string]float64{"train_loss": em.TrainLoss, "train_acc": em.TrainAcc, "val_loss": em.ValLoss, "val_acc": em.ValAcc}
	}
	cmd := files.Command
	if note != "" {
		cmd += " (" + note + ")"
	}
	m.Provenance = nin.Provenance{
		Created: time.Now().UTC().Format(time.RFC3339), NinbatchVersion: files.Version,
		Command: cmd, Dataset: files.Dataset, DatasetFingerprint: st.DatasetFingerprint,
		Epochs: st.Epoch, TrainingSeconds: st.Seconds, Metrics: last,
		Init: m.Provenance.Init,
	}
	return m.SaveFile(files.Model)
}

// ExportCheckpoint writes the model of a checkpoint (as far as training
// got) to files.Model.
func ExportCheckpoint(files TrainFiles) (*nin.Model, TrainState, error) {
	m, _, st, err := LoadCheckpoint(files.Checkpoint)
	if err != nil {
		return nil, st, err
	}
	return m, st, SaveTrained(m, st, files, "exported from checkpoint "+files.Checkpoint)
}
