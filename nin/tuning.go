package nin

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ninbatch/ninbatch/native"
)

// Mode selects how a Net uses several cores.
type Mode string

const (
	// ModeAuto runs streams when the batch has at least Threads images;
	// otherwise (batch 1 on 2 cores) one stream whose conv calls are each
	// split over all the workers, OpenBLAS at 1 thread in every part.
	ModeAuto Mode = "auto"
	// ModeStreams runs one single-threaded stream per core: each stream
	// takes whole micro-batches of images through the whole network with
	// OpenBLAS at 1 thread, so every core works on its own cache-sized data.
	ModeStreams Mode = "streams"
	// ModeBLAS runs one stream and lets OpenBLAS split each GEMM over
	// Threads threads; im2col, pooling and the epilogues run on one core.
	ModeBLAS Mode = "blas"
)

// Options configure a Net. Zero values pick defaults.
type Options struct {
	MaxBatch int // largest batch Forward accepts (default 64)
	Threads  int // cores to use (default runtime.NumCPU())
	// Precision of the conv GEMMs: PrecisionFP32 (default) or
	// PrecisionBF16 (weights and activations rounded to bf16 for the
	// products, fp32 sums, bias, ReLU, pooling and softmax; AMX only). The
	// direct first conv stays fp32. PrecisionInt8 runs the convs the
	// model's calibration (Model.Quant, from `ninbatch quantize`) marks
	// int8 as u8×s8 products with int32 sums (AMX-INT8 or AVX-512 VNNI),
	// the rest fp32.
	Precision string
	Tuning    // engine knobs; the zero value is the default engine
}

// Precisions of Options.Precision.
const (
	PrecisionFP32 = "fp32"
	PrecisionBF16 = "bf16"
	PrecisionInt8 = "int8"
)

// checkPrecision fills in the default precision and refuses one this CPU
// cannot run fast: bf16 needs AMX-BF16 or AVX512_BF16 (VDPBF16PS: 1.9×
// the fp32 FMA rate on Zen 5, docs/benchmarks.md), int8 a calibrated model
// and AVX-512 VNNI or AMX-INT8.
func (o *Options) checkPrecision(m *Model) error {
	switch o.Precision {
	case "", PrecisionFP32:
		o.Precision = PrecisionFP32
	case PrecisionBF16:
		if native.BF16Kernel() == "" {
			return fmt.Errorf("precision bf16 needs a CPU with AVX512_BF16 or AMX-BF16 at the avx512 level (this one runs %s); use fp32", native.Current())
		}
		if !usePacked(o.GEMM, o.Mode) {
			return errors.New("precision bf16 runs on the packed GEMM; it cannot be combined with gemm openblas")
		}
	case PrecisionInt8:
		if m.Quant == nil {
			return errors.New("precision int8 needs a calibrated model: this one has no int8 scales (make one with ninbatch quantize --model M.nin --calib DATA --out M-int8.nin)")
		}
		if native.Int8Kernel() == "" {
			return fmt.Errorf("precision int8 needs a CPU with AVX-512 VNNI or AMX-INT8 at the avx512 level (this one runs %s); use fp32", native.Current())
		}
		if !usePacked(o.GEMM, o.Mode) {
			return errors.New("precision int8 runs on the packed GEMM; it cannot be combined with gemm openblas")
		}
	default:
		return fmt.Errorf("precision %q: want fp32, bf16 or int8", o.Precision)
	}
	return nil
}

// Tuning holds the engine's knobs: how convs are computed and how the
// cores share the work. Every zero value picks the default, which is what
// users run; the commands take no knob of their own, so tests, benchmarks
// and experts set them here, from bench's --tuning or from the
// NINBATCH_TUNING environment variable (JSON, see TuningFromEnv).
type Tuning struct {
	Mode       Mode `json:"mode,omitempty"`        // default ModeAuto
	MicroBatch int  `json:"micro_batch,omitempty"` // images per stream step (default 8 or 4; at most MaxBatch)
	TileBytes  int  `json:"tile_bytes,omitempty"`  // im2col tile budget per stream (default 4 MiB; training 2 MiB)
	// Winograd selects which stride-1 3×3 and 5×5 convs run as Winograd
	// F(m×m, r×r) instead of im2col + GEMM (default WinogradAuto).
	Winograd Winograd `json:"winograd,omitempty"`
	// WinoTile is the Winograd output tile m: 2 or 4, or 0 to pick per
	// layer the one with fewer multiplications (see winoTile).
	WinoTile int `json:"wino_tile,omitempty"`
	// Direct selects the direct kernel for convs over few input channels
	// (default DirectAuto).
	Direct DirectConv `json:"direct,omitempty"`
	// GEMM selects the GEMM of the conv layers: the packed-weight kernel
	// or OpenBLAS (default GEMMAuto).
	GEMM GEMM `json:"gemm,omitempty"`
	// Unfused runs every conv as a separate layer call; by default, with
	// the packed GEMM, a conv and the 1×1 convs after it run tile by tile
	// as one chain, and are split over the workers as one call at batch <
	// Threads (see chainOp).
	Unfused bool `json:"unfused,omitempty"`
	// ChainWeightBytes is the largest total of 1×1 weights a chain takes
	// (default from the detected L2, see chainWeightDefault).
	ChainWeightBytes int `json:"chain_weight_bytes,omitempty"`
	// Wait is how a split layer call (batch < Threads) waits for its
	// parts and the workers for the next one: "spin" (up to 50 µs before
	// parking), "park", or "auto" (default: spin, or park when the
	// threads outnumber the process's GOMAXPROCS; see procs for the Go
	// processors each wants). Options() reports the wait resolved.
	Wait string `json:"wait,omitempty"`
}

// TuningEnv is the environment variable TuningFromEnv reads.
const TuningEnv = "NINBATCH_TUNING"

// TuningFromEnv parses $NINBATCH_TUNING, a JSON object of Tuning's fields
// (e.g. {"winograd":"off","gemm":"openblas"}); unset or empty is the
// default engine. Unknown fields and bad values are errors, so a typo
// never silently runs the default.
func TuningFromEnv() (Tuning, error) {
	return ParseTuning(os.Getenv(TuningEnv))
}

// ParseTuning parses a JSON Tuning ("" is the default) and checks it.
func ParseTuning(s string) (Tuning, error) {
	var t Tuning
	if strings.TrimSpace(s) == "" {
		return t, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Tuning{}, fmt.Errorf("tuning %s: %w", s, err)
	}
	if err := t.check(); err != nil {
		return Tuning{}, err
	}
	return t, nil
}

// check validates the switches (zero values are valid: defaults).
func (t Tuning) check() error {
	switch {
	case t.Mode != "" && t.Mode != ModeAuto && t.Mode != ModeStreams && t.Mode != ModeBLAS:
		return fmt.Errorf("mode %q: want auto, streams or blas", t.Mode)
	case t.Winograd != "" && t.Winograd != WinogradAuto && t.Winograd != WinogradOff && t.Winograd != WinogradOn:
		return fmt.Errorf("winograd %q: want auto, off or on", t.Winograd)
	case t.Direct != "" && t.Direct != DirectAuto && t.Direct != DirectOff && t.Direct != DirectOn:
		return fmt.Errorf("direct-conv %q: want auto, on or off", t.Direct)
	case t.GEMM != "" && t.GEMM != GEMMAuto && t.GEMM != GEMMOpenBLAS && t.GEMM != GEMMPacked:
		return fmt.Errorf("gemm %q: want auto, openblas or packed", t.GEMM)
	case t.WinoTile != 0 && t.WinoTile != 2 && t.WinoTile != 4:
		return fmt.Errorf("Winograd tile %d: want 2 or 4 (0 = per layer)", t.WinoTile)
	case t.MicroBatch < 0:
		return fmt.Errorf("micro-batch %d is negative", t.MicroBatch)
	case t.TileBytes < 0:
		return fmt.Errorf("tile budget %d bytes is negative", t.TileBytes)
	case t.Wait != "" && t.Wait != "auto" && t.Wait != "spin" && t.Wait != "park":
		return fmt.Errorf("wait %q: want auto, spin or park", t.Wait)
	case t.ChainWeightBytes < 0:
		return fmt.Errorf("chain weight budget %d bytes is negative", t.ChainWeightBytes)
	}
	return nil
}

// defaults fills in the switches' defaults (after check).
func (t *Tuning) defaults() {
	if t.Mode == "" {
		t.Mode = ModeAuto
	}
	if t.Winograd == "" {
		t.Winograd = WinogradAuto
	}
	if t.Direct == "" {
		t.Direct = DirectAuto
	}
	if t.GEMM == "" {
		t.GEMM = GEMMAuto
	}
}

// GEMM is the switch of the conv layers' matrix products.
type GEMM string

const (
	// GEMMAuto runs the conv GEMMs (1×1 convs, im2col tiles, Winograd
	// products) with the packed-weight kernel (native.GemmPacked) when
	// the CPU has AVX2+FMA and each GEMM runs on one core (ModeStreams, or
	// ModeAuto); with ModeBLAS, or without AVX2, they stay on OpenBLAS.
	//
	// The weights are packed once when the Net is built, so a call packs
	// nothing and reads the activations in place, and the bias+ReLU
	// epilogue is fused. OpenBLAS packs both operands on every call; on
	// NIN's shapes, at 1 thread, the packed kernel took 0.45–0.95× the
	// time of OpenBLAS sgemm + the bias pass (blas.BenchmarkWeights:
	// nin-mnist's 1×1 convs 0.65–0.8×, its batch-1 Winograd products
	// 0.45×, nin-imagenet's 1024-channel cccp7 0.95×).
	GEMMAuto GEMM = "auto"
	// GEMMOpenBLAS runs every conv GEMM through OpenBLAS sgemm.
	GEMMOpenBLAS GEMM = "openblas"
	// GEMMPacked runs every conv GEMM through the packed-weight kernel,
	// also with ModeBLAS (then on one core) and without AVX2 (then scalar).
	GEMMPacked GEMM = "packed"
)

// usePacked resolves the GEMM switch (checked) for a Net or Trainer:
// whether its conv GEMMs run on the packed-weight kernel.
func usePacked(g GEMM, mode Mode) bool {
	switch g {
	case GEMMOpenBLAS:
		return false
	case GEMMPacked:
		return true
	}
	return native.GemmFast() && mode != ModeBLAS
}

// Winograd is the Winograd switch of a Net.
type Winograd string

const (
	// WinogradAuto uses Winograd where it pays on this layer's shapes: at
	// least 16 input channels (the GEMM depth) and 16 tiles per micro-batch.
	WinogradAuto Winograd = "auto"
	// WinogradOff runs every conv as im2col + GEMM.
	WinogradOff Winograd = "off"
	// WinogradOn uses Winograd for every stride-1 3×3 and 5×5 conv.
	WinogradOn Winograd = "on"
)

// DirectConv is the switch of the direct kernel for convs over few input
// channels (native.ConvDirect).
type DirectConv string

const (
	// DirectAuto runs k×k convs with fewer than 8 input channels (the
	// presets' first convs, whose im2col GEMM has K = 25, 75 or 363) with
	// the direct kernel where it beats im2col + GEMM: with OpenBLAS or the
	// AVX2 packed GEMM (1.3–2× per layer, blas.BenchmarkFirstConv), not
	// with the AVX-512 packed GEMM (see directPays).
	DirectAuto DirectConv = "auto"
	// DirectOff runs them as im2col + GEMM.
	DirectOff DirectConv = "off"
	// DirectOn runs them with the direct kernel whatever the GEMM.
	DirectOn DirectConv = "on"
)

// directMaxCin is the largest input channel count DirectAuto takes.
const directMaxCin = 7

// directPays: DirectAuto uses the direct kernel (AVX2 at best) unless the
// conv GEMMs run on the AVX-512 packed kernel, which ran the whole net
// faster with the first conv as im2col + GEMM (docs/benchmarks.md).
func directPays(packed bool) bool { return !packed || native.Current() < native.AVX512 }

// useDirect: whether a conv with cin input channels runs the direct kernel.
func useDirect(d DirectConv, k, cin int, packed bool) bool {
	return k > 1 && cin <= directMaxCin && (d == DirectOn || d == DirectAuto && directPays(packed))
}
