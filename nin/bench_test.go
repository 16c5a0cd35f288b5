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
// Compare with ../shared/peers/bench.sh run in the same sitting.
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
						net, err := NewNet(m, Options{MaxBatch: batch, Threads: threads, Mode: mode})
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
func BenchmarkLayers(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(b, preset, 1)
		for _, wino := range []Winograd{WinogradOff, WinogradAuto} {
			tileKiB, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_TILE_KIB"))
			envMB, _ := strconv.Atoi(os.Getenv("NINBATCH_BENCH_MICRO_BATCH"))
			net, err := NewNet(m, Options{MaxBatch: 64, Threads: 1, Mode: ModeStreams, Winograd: wino, TileBytes: tileKiB << 10, MicroBatch: envMB})
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
func BenchmarkTrainStep(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10"} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/b128/t%d", preset, threads), func(b *testing.B) {
				m := randomModel(b, preset, 1)
				m.Params.InitGaussian(1)
				tr, err := NewTrainer(m, TrainOptions{MaxBatch: 128, Threads: threads, Momentum: 0.9, WeightDecay: 1e-4, Seed: 1})
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
