package nin

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/ninbatch/ninbatch/blas"
)

// BenchmarkForward: every preset at batch 1, 16, 64 with 1 and 2 threads
// (ModeAuto), reporting img/s and effective GFLOP/s (2 × conv MACs).
// Compare with scripts/bench-peers.sh, which interleaves the peers with it.
func BenchmarkForward(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(b, preset, 1)
		layers, _ := m.Spec.Plan()
		_, macs := Totals(layers)
		for _, threads := range []int{1, 2} {
			for _, batch := range []int{1, 16, 64} {
				for _, mode := range []Mode{ModeAuto, ModeStreams, ModeBLAS} {
					if threads == 1 && mode != ModeAuto {
						continue
					}
					b.Run(fmt.Sprintf("%s/b%d/t%d/%s", preset, batch, threads, mode), func(b *testing.B) {
						net, err := NewNet(m, Options{MaxBatch: batch, Threads: threads, Tuning: Tuning{Mode: mode}})
						if err != nil {
							b.Fatal(err)
						}
						defer net.Close()
						x := randomInput(batch, net.InputLen(), 2)
						probs := make([]float32, batch*net.Classes())
						net.Forward(x, batch, probs, nil)
						b.ReportAllocs()
						b.ResetTimer()
						for i := 0; i < b.N; i++ {
							if err := net.Forward(x, batch, probs, nil); err != nil {
								b.Fatal(err)
							}
						}
						imgs := float64(b.N*batch) / b.Elapsed().Seconds()
						b.ReportMetric(imgs, "img/s")
						b.ReportMetric(imgs*2*float64(macs)/1e9, "GFLOP/s")
					})
				}
			}
		}
	}
}

// BenchmarkLayers times each layer of each preset alone on one stream
// (OpenBLAS at 1 thread, one default micro-batch per step) with Winograd off
// and on, reporting effective GFLOP/s for convs (2 × direct-conv MACs) and
// µs per image: where the time goes, and which layers Winograd speeds up.
// Each layer runs alone (Unfused: no chains), on its own hot buffers; in
// the whole net the layers pay for their data leaving the caches.
// NINBATCH_BENCH_PRECISION=bf16 or int8 times that engine (int8
// calibrated on the random input).
func BenchmarkLayers(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(b, preset, 1)
		if os.Getenv("NINBATCH_BENCH_PRECISION") == PrecisionInt8 {
			var err error
			if m, err = CalibrateOn(m, randomInput(8, m.Spec.Input.Len(), 3), 8); err != nil {
				b.Fatal(err)
			}
		}
		for _, wino := range []Winograd{WinogradOff, WinogradAuto} {
			tileKiB, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_TILE_KIB"))
			envMB, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_MICRO_BATCH"))
			net, err := NewNet(m, Options{MaxBatch: 64, Threads: 1, Precision: os.Getenv("NINBATCH_BENCH_PRECISION"),
				Tuning: Tuning{Mode: ModeStreams, Winograd: wino, TileBytes: tileKiB << 10, MicroBatch: envMB, Unfused: true}})
			if err != nil {
				b.Fatal(err)
			}
			blas.SetThreads(1)
			st := net.streams[0]
			mb := net.opt.MicroBatch
			x := randomInput(mb, net.InputLen(), 3)
			src := x
			li := 0
			for _, o := range net.ops {
				for net.layers[li].kind != kindConv && net.layers[li].kind != kindPool {
					li++
				}
				l := net.layers[li]
				li++
				dst := st.a
				if len(src) > 0 && &src[0] == &st.a[0] {
					dst = st.b
				}
				in := src
				b.Run(fmt.Sprintf("%s/%s/wino-%s", preset, l.Name, wino), func(b *testing.B) {
					cpu0 := cpuSeconds()
					for i := 0; i < b.N; i++ {
						o.forward(st, dst, in, mb)
					}
					// CPU time of this single-threaded loop: a steadier figure
					// than wall time on a shared machine.
					b.ReportMetric((cpuSeconds()-cpu0)*1e6/float64(b.N*mb), "cpu-us/img")
					if l.MACs > 0 {
						b.ReportMetric(2*float64(l.MACs)*float64(b.N*mb)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*mb), "us/img")
				})
				src = dst
			}
			net.Close()
		}
	}
}

// BenchmarkTrainStep: one SGD step (forward, backward, update) at batch 128
// with 2 data-parallel streams; compare with `../shared/peers/bench.sh --train`.
// NINBATCH_BENCH_TILE_KIB, NINBATCH_BENCH_WINO_TILE and
// NINBATCH_BENCH_MICRO_BATCH override the tile budget, the Winograd tile and
// the micro-batch (64 = one pass per stream, the pre-micro-batch trainer);
// NINBATCH_BENCH_GEMM=openblas|packed the conv GEMMs.
func BenchmarkTrainStep(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10"} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/b128/t%d", preset, threads), func(b *testing.B) {
				m := randomModel(b, preset, 1)
				m.Params.InitGaussian(1)
				tileKiB, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_TILE_KIB"))
				wt, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_WINO_TILE"))
				mb, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_MICRO_BATCH"))
				tr, err := NewTrainer(m, TrainOptions{MaxBatch: 128, Threads: threads, Momentum: 0.9, WeightDecay: 1e-4, Seed: 1, Tuning: Tuning{TileBytes: tileKiB << 10, WinoTile: wt, MicroBatch: mb, GEMM: GEMM(os.Getenv("NINBATCH_BENCH_GEMM"))}})
				if err != nil {
					b.Fatal(err)
				}
				x := randomInput(128, m.Spec.Input.Len(), 1)
				labels := make([]int32, 128)
				for i := range labels {
					labels[i] = int32(i % m.Spec.Classes())
				}
				tr.Step(x, labels, 128, 0.001, 0)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := tr.Step(x, labels, 128, 0.001, uint64(i+1)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(128*b.N)/b.Elapsed().Seconds(), "img/s")
			})
		}
	}
}

// cpuSeconds is the process's user + system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkWeightGrad times the weight gradient of each Winograd-eligible
// conv of nin-mnist and nin-cifar10 for one training stream's share of a
// batch of 128 on 2 streams (64 images) on one core: the im2col GEMMs
// against Winograd F(2×2) and F(4×4) at the default and a 4× tile budget.
func BenchmarkWeightGrad(b *testing.B) {
	const n = 64
	blas.SetThreads(1)
	for _, preset := range []string{"nin-mnist", "nin-cifar10"} {
		m := randomModel(b, preset, 1)
		for _, v := range []struct {
			name        string
			wino        Winograd
			tile, bytes int
		}{{"im2col", WinogradOff, 0, 0}, {"F2", WinogradOn, 2, 0}, {"F4", WinogradOn, 4, 0}, {"F2-8MiB", WinogradOn, 2, 8 << 20}, {"F4-8MiB", WinogradOn, 4, 8 << 20}} {
			tr, err := NewTrainer(m, TrainOptions{MaxBatch: n, Threads: 1, Tuning: Tuning{MicroBatch: n, Winograd: v.wino, WinoTile: v.tile, TileBytes: v.bytes, Direct: DirectOff}})
			if err != nil {
				b.Fatal(err)
			}
			st := tr.streams[0]
			for i, l := range tr.layers {
				if l.kind != kindConv || l.s != 1 || (l.k != 3 && l.k != 5) || l.In.C < 16 {
					continue
				}
				c, gp := l.conv, &st.grads.Convs[l.ci]
				in := randomInput(n, l.In.Len(), 2)
				dpre := randomInput(n, l.Out.Len(), 3)
				du := st.slots[i].du
				b.Run(fmt.Sprintf("%s/%s/%s", preset, l.Name, v.name), func(b *testing.B) {
					cpu0 := cpuSeconds()
					for it := 0; it < b.N; it++ {
						if c.winoDW {
							clear(du)
							c.wino.weightGrad(&st.scratch, du, dpre, in, n, c.packed)
							c.wino.filterGrad(gp.W, du)
						} else {
							c.weightGrad(&st.scratch, gp.W, dpre, in, n)
						}
					}
					b.ReportMetric((cpuSeconds()-cpu0)*1e6/float64(b.N*n), "cpu-us/img")
				})
			}
		}
	}
}

// BenchmarkSplitLayers times each op of one image (as the forward pass
// runs them: chains fused) on 1 thread and split over 2, so the split's
// loss per layer shows: compare t2 with half of t1.
func BenchmarkSplitLayers(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(b, preset, 1)
		for _, threads := range []int{1, 2} {
			net, err := NewNet(m, Options{MaxBatch: 1, Threads: threads})
			if err != nil {
				b.Fatal(err)
			}
			x := randomInput(1, net.InputLen(), 3)
			probs := make([]float32, net.Classes())
			net.Forward(x, 1, probs, nil) // settle the mode (Go processors, BLAS threads)
			blas.SetThreads(1)
			st := net.streams[0]
			st.split = threads > 1
			src, dst := x, st.a
			for i, o := range net.run {
				in, out := src, dst
				b.Run(fmt.Sprintf("%s/%02d-%s/t%d", preset, i, opName(o), threads), func(b *testing.B) {
					for k := 0; k < b.N; k++ {
						net.layer(st, o, out, in, 1)
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/op")
				})
				src = dst
				if &dst[0] == &st.a[0] {
					dst = st.b
				} else {
					dst = st.a
				}
			}
			st.split = false
			net.Close()
		}
	}
}

func opName(o op) string {
	switch o := o.(type) {
	case *conv:
		switch {
		case o.wino != nil:
			return o.name + "-wino"
		case o.direct != nil:
			return o.name + "-direct"
		}
		return o.name
	case *chainOp:
		return o.stages[0].name + "-chain"
	case *poolOp:
		return "pool"
	}
	return fmt.Sprintf("%T", o)
}
