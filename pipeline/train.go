package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// TrainConfig is everything that determines a training run; a resumed run
// must use the same values (the checkpoint stores them).
type TrainConfig struct {
	Epochs       int     `json:"epochs"`
	Batch        int     `json:"batch"`
	LR           float64 `json:"lr"`
	Schedule     string  `json:"schedule"`    // "step", "cosine" or "const"
	StepEpochs   []int   `json:"step_epochs"` // step: multiply by Gamma at each of these epochs
	Gamma        float64 `json:"gamma"`
	WarmupEpochs float64 `json:"warmup_epochs"` // linear warm-up from 0
	Momentum     float64 `json:"momentum"`
	WeightDecay  float64 `json:"weight_decay"`
	Seed         uint64  `json:"seed"`
	NoDropout    bool    `json:"no_dropout"`
	CropPad      int     `json:"crop_pad"` // random crop after zero padding by this many pixels (0 = off)
	Flip         bool    `json:"flip"`     // random horizontal flip
	// ShuffleBuffer is the shuffle buffer in images (0 = nbio.DefaultShuffleRows).
	ShuffleBuffer int `json:"shuffle_buffer,omitempty"`
}

// Validate checks the configuration.
func (c *TrainConfig) Validate() error {
	switch {
	case c.Epochs < 1 || c.Epochs > 100000:
		return fmt.Errorf("epochs %d: want 1..100000", c.Epochs)
	case c.Batch < 1 || c.Batch > 16384:
		return fmt.Errorf("batch %d: want 1..16384", c.Batch)
	case !(c.LR > 0 && c.LR < 100):
		return fmt.Errorf("learning rate %g: want (0, 100)", c.LR)
	case c.Schedule != "step" && c.Schedule != "cosine" && c.Schedule != "const":
		return fmt.Errorf("schedule %q: want step, cosine or const", c.Schedule)
	case c.Schedule == "step" && !(c.Gamma > 0 && c.Gamma <= 1):
		return fmt.Errorf("gamma %g: want (0, 1]", c.Gamma)
	case c.WarmupEpochs < 0 || c.CropPad < 0 || c.CropPad > 64:
		return fmt.Errorf("warm-up %g or crop padding %d out of range", c.WarmupEpochs, c.CropPad)
	case c.ShuffleBuffer < 0 || c.ShuffleBuffer > 1<<24:
		return fmt.Errorf("shuffle buffer %d: want 0..%d images (0 = %d)", c.ShuffleBuffer, 1<<24, nbio.DefaultShuffleRows)
	}
	return nil
}

// LRAt is the learning rate at fractional epoch e (0-based).
func (c *TrainConfig) LRAt(e float64) float64 {
	lr := c.LR
	switch c.Schedule {
	case "step":
		for _, s := range c.StepEpochs {
			if e >= float64(s) {
				lr *= c.Gamma
			}
		}
	case "cosine":
		lr = c.LR * 0.5 * (1 + math.Cos(math.Pi*math.Min(e/float64(c.Epochs), 1)))
	}
	if c.WarmupEpochs > 0 && e < c.WarmupEpochs {
		lr *= e / c.WarmupEpochs
	}
	return lr
}

// EpochMetrics is one line of the training log.
type EpochMetrics struct {
	Epoch     int     `json:"epoch"` // 1-based
	Step      uint64  `json:"step"`
	LR        float64 `json:"lr"` // of the epoch's last step (a cosine schedule's end, 0, is never run)
	TrainLoss float64 `json:"train_loss"`
	TrainAcc  float64 `json:"train_acc"` // with dropout and augmentation on
	ValLoss   float64 `json:"val_loss,omitempty"`
	ValAcc    float64 `json:"val_acc,omitempty"`
	AliveFrac float64 `json:"alive_frac"` // positive outputs of the last ReLU
	ImgPerSec float64 `json:"img_per_s"`
	Seconds   float64 `json:"seconds"` // this epoch
	DeadReLU  bool    `json:"dead_relu,omitempty"`
}

// TrainHooks receive progress; any may be nil.
type TrainHooks struct {
	Epoch    func(EpochMetrics)
	Progress func(epoch, step, steps int, loss float64)
	Warn     func(msg string)
}

// Trainer runs epochs over a labelled set, writing Files as it goes.
type Trainer struct {
	Model      *nin.Model
	Train, Val LabeledSet
	Prep       *nbio.Preprocess
	Config     TrainConfig
	Threads    int
	Tuning     nin.Tuning // engine knobs of the trainer and the validation net (default engine when zero)
	Files      TrainFiles
	Hooks      TrainHooks
	State      TrainState  // resumed state (zero for a fresh run)
	Velocity   *nin.Params // resumed momentum, or nil
}

// ErrConfigMismatch is returned when resuming with different settings.
var ErrConfigMismatch = errors.New("resume: the checkpoint was made with different training settings")

// Run trains until Config.Epochs are complete, then writes the model. When
// ctx is cancelled it returns ctx.Err(); the checkpoint then holds the last
// full epoch.
func (tr *Trainer) Run(ctx context.Context) error {
	if err := tr.begin(); err != nil {
		return err
	}
	t, err := nin.NewTrainer(tr.Model, nin.TrainOptions{MaxBatch: tr.Config.Batch, Threads: tr.Threads,
		Momentum: tr.Config.Momentum, WeightDecay: tr.Config.WeightDecay, Seed: tr.Config.Seed,
		NoDropout: tr.Config.NoDropout, Tuning: tr.Tuning})
	if err != nil {
		return err
	}
	if tr.Velocity != nil {
		if err := t.SetVelocity(tr.Velocity); err != nil {
			return err
		}
	}
	var net *nin.Net
	if tr.Val != nil {
		if net, err = nin.NewNet(tr.Model, nin.Options{MaxBatch: 256, Threads: tr.Threads, Tuning: valTuning(tr.Tuning)}); err != nil {
			return err
		}
		defer net.Close()
	}
	w, err := openTrainWriter(tr.Files, tr.State.History, tr.Hooks.Warn)
	if err != nil {
		return err
	}
	defer w.close()
	for epoch := tr.State.Epoch; epoch < tr.Config.Epochs; epoch++ {
		m, err := tr.epoch(ctx, t, epoch)
		if err != nil {
			return err
		}
		if net != nil {
			net.Reload() // the Winograd and direct-kernel weights are copies of the trained ones
			ev, err := Evaluate(ctx, net, tr.Val, tr.Prep, 256)
			if err != nil {
				return err
			}
			m.ValLoss, m.ValAcc = ev.LogLoss, ev.Top1
		}
		st := &tr.State
		st.History = append(st.History, m)
		st.Epoch, st.Seconds = epoch+1, st.Seconds+m.Seconds
		if err := w.epoch(tr.Model, t.Velocity(), st); err != nil {
			return err
		}
		if tr.Hooks.Epoch != nil {
			tr.Hooks.Epoch(m)
		}
	}
	return w.finish(tr.Model, tr.State)
}

// begin validates the settings and starts or checks the state: a resumed
// run must have the checkpoint's settings and training data.
func (tr *Trainer) begin() error {
	cfg := tr.Config
	if err := cfg.Validate(); err != nil {
		return err
	}
	if tr.Train.Rows() == 0 {
		return errors.New("the training data has no rows")
	}
	st := &tr.State
	if st.Config == nil {
		st.Config, st.Seed, st.DatasetFingerprint = &cfg, cfg.Seed, tr.Train.Digest()
		return nil
	}
	then, _ := json.Marshal(st.Config)
	now, _ := json.Marshal(cfg)
	longer := *st.Config
	longer.Epochs = cfg.Epochs
	if l, _ := json.Marshal(longer); string(then) != string(now) && string(l) == string(now) {
		// only --epochs changed: extend (or refuse to shorten) the run
		if cfg.Epochs < st.Epoch {
			return fmt.Errorf("%w: the checkpoint already holds %d epochs; --epochs %d cannot shorten it", ErrConfigMismatch, st.Epoch, cfg.Epochs)
		}
		if tr.Hooks.Warn != nil {
			tr.Hooks.Warn(fmt.Sprintf("extending the run from %d to %d epochs: the learning-rate schedule is recomputed for %d epochs from epoch %d on, and the checkpoint records it",
				st.Config.Epochs, cfg.Epochs, cfg.Epochs, st.Epoch+1))
		}
		st.Config = &cfg
		then = now
	}
	if string(then) != string(now) {
		return fmt.Errorf("%w:\n  checkpoint: %s\n  now:        %s", ErrConfigMismatch, then, now)
	}
	if st.DatasetFingerprint != tr.Train.Digest() {
		return fmt.Errorf("resume: the training data changed since the checkpoint (fingerprint %s, now %s)", st.DatasetFingerprint, tr.Train.Digest())
	}
	return nil
}

// epoch runs one pass over the shuffled training set; the order is a
// function of the seed and the epoch, so a resumed run repeats it.
func (tr *Trainer) epoch(ctx context.Context, t *nin.Trainer, epoch int) (EpochMetrics, error) {
	cfg, st := tr.Config, &tr.State
	t0 := time.Now()
	sz := tr.Prep.Len()
	h, w, c := tr.Prep.H, tr.Prep.W, tr.Prep.C
	x := make([]float32, cfg.Batch*sz)
	aug := make([]uint8, sz)
	rows := tr.Train.Rows()
	steps := (rows + cfg.Batch - 1) / cfg.Batch
	var lossSum, aliveSum, aliveTail float64
	var correct, seen, b int
	ord := nbio.Order{Shuffle: true, Seed: cfg.Seed, Epoch: epoch, Buffer: cfg.ShuffleBuffer}
	err := tr.Train.Each(ctx, ord, cfg.Batch, func(pix []uint8, labels []int32, n int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for j := 0; j < n; j++ {
			src := pix[j*sz : (j+1)*sz]
			if cfg.CropPad > 0 || cfg.Flip {
				augment(aug, src, h, w, c, cfg, st.Step, j)
				src = aug
			}
			tr.Prep.Normalize(x[j*sz:(j+1)*sz], src)
		}
		lr := cfg.LRAt(float64(epoch) + float64(b)/float64(steps))
		res, err := t.Step(x, labels, n, lr, st.Step)
		if err != nil {
			return err
		}
		if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
			return fmt.Errorf("epoch %d step %d: loss is %v (learning rate %g too high?)", epoch+1, b, res.Loss, lr)
		}
		st.Step++
		lossSum += res.Loss * float64(n)
		correct += res.Correct
		aliveSum += res.AliveFrac * float64(n)
		if b >= steps-10 {
			aliveTail += res.AliveFrac
		}
		b++
		seen += n
		if tr.Hooks.Progress != nil {
			tr.Hooks.Progress(epoch+1, b, steps, res.Loss)
		}
		return nil
	})
	if err != nil {
		return EpochMetrics{}, err
	}
	if seen != rows {
		return EpochMetrics{}, fmt.Errorf("epoch %d read %d training images, want %d: the training data changed during the run", epoch+1, seen, rows)
	}
	secs := time.Since(t0).Seconds()
	m := EpochMetrics{Epoch: epoch + 1, Step: st.Step, LR: cfg.LRAt(float64(epoch) + float64(steps-1)/float64(steps)),
		TrainLoss: lossSum / float64(rows), TrainAcc: float64(correct) / float64(rows),
		AliveFrac: aliveSum / float64(rows), ImgPerSec: float64(rows) / secs, Seconds: secs}
	m.DeadReLU = aliveTail == 0 && !tr.Model.Spec.NoFinalReLU
	tr.warnHealth(m, epoch)
	return m, nil
}

// warnHealth names the two ways a run visibly fails to learn.
func (tr *Trainer) warnHealth(m EpochMetrics, epoch int) {
	if tr.Hooks.Warn == nil {
		return
	}
	classes := tr.Model.Spec.Classes()
	lnC := math.Log(float64(classes))
	switch {
	case m.DeadReLU:
		tr.Hooks.Warn(fmt.Sprintf("epoch %d: the final ReLU has died: none of the last conv's outputs were positive "+
			"in the epoch's last steps, so every class map is 0, the loss sits at ln(%d) = %.4f and no gradient flows. "+
			"Restart with a lower learning rate, a warm-up, --init-scheme kaiming or --no-final-relu",
			epoch+1, classes, lnC))
	case math.Abs(m.TrainLoss-lnC) < 1e-3:
		tr.Hooks.Warn(fmt.Sprintf("epoch %d: loss %.6f is still ln(%d): the network is not learning yet", epoch+1, m.TrainLoss, classes))
	}
}

// augment writes a randomly cropped (after zero padding) and/or flipped
// copy of an HWC image; the randomness is a pure function of (seed, step, j).
func augment(dst, src []uint8, h, w, c int, cfg TrainConfig, step uint64, j int) {
	var pcg rand.PCG
	pcg.Seed(cfg.Seed^0x617567, step<<16^uint64(j))
	dy, dx := 0, 0
	if p := cfg.CropPad; p > 0 {
		dy = int(pcg.Uint64()%uint64(2*p+1)) - p
		dx = int(pcg.Uint64()%uint64(2*p+1)) - p
	}
	flip := cfg.Flip && pcg.Uint64()&1 == 1
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			sy, sx := y+dy, x+dx
			if flip {
				sx = w - 1 - x + dx
			}
			d := dst[(y*w+x)*c : (y*w+x+1)*c]
			if sy < 0 || sy >= h || sx < 0 || sx >= w {
				clear(d)
				continue
			}
			copy(d, src[(sy*w+sx)*c:(sy*w+sx+1)*c])
		}
	}
}

// valTuning is the validation net's tuning: the trainer's, on streams.
func valTuning(t nin.Tuning) nin.Tuning {
	t.Mode, t.MicroBatch, t.TileBytes = nin.ModeStreams, 0, 0 // the trainer's sizes are not the net's
	return t
}
