package nin

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Go processors for the engine's two ways of using threads. Both want
// more Ps than compute threads, for the same reason: a thread inside a long
// cgo call keeps its P, and when no P is idle the scheduler's monitor takes
// such a P away and starts another thread on it, which then competes with
// the compute threads for the cores.
//
//   - Streams want GOMAXPROCS at threads+2: each of the threads goroutines
//     drains micro-batches through long cgo calls, and a goroutine leaving
//     one (or one a worker wakes) needs a free P. At batch 64 on 2 threads
//     (2 vCPUs, GOMAXPROCS 2 against 4, alternated) the lower setting cost
//     nin-imagenet 15–25%, nin-cifar10 18–25%, and the nin-mnist training
//     step 30%.
//   - Split calls (batch < threads) that spin want threads+1: one idle P
//     keeps the monitor off the two compute threads, one of which is in a
//     cgo call while the other spins. At batch 1 on 2 threads, spinning at
//     GOMAXPROCS 3 against the former parking at 2 (interleaved, medians of
//     8–12 reps after 0.12 s idle): nin-mnist +25–35%, nin-cifar10 +5–20%,
//     nin-imagenet +5–10%. Spinning at 2 lost, since the taken P's new
//     thread ran beside the spinner, and parking at 3 or 4 lost 20–30%, the
//     extra Ps' threads spinning in the scheduler instead.
//   - Split calls that park want the process's own setting.
//
// GOMAXPROCS is changed only when a call's mode wants another setting than
// the last call's (a stop-the-world of a few µs), is never set below what
// the process had, and nets running different modes at once in one process
// leave it at the last one's choice.
var procs struct {
	mu     sync.Mutex
	raised atomic.Bool
	base   int // GOMAXPROCS before the raise
}

// procsFor sets GOMAXPROCS to the larger of want and the process's own
// setting.
func procsFor(want int) {
	if !procs.raised.Load() && runtime.GOMAXPROCS(0) >= want {
		return
	}
	procs.mu.Lock()
	defer procs.mu.Unlock()
	cur := runtime.GOMAXPROCS(0)
	if !procs.raised.Load() {
		procs.base = cur
	}
	target := max(procs.base, want)
	if target != cur {
		runtime.GOMAXPROCS(target)
	}
	procs.raised.Store(target != procs.base)
}

// procsForStreams is the setting of stream mode on threads workers.
func procsForStreams(threads int) {
	if threads >= 2 {
		procsFor(threads + 2)
	}
}

// procsForSplit is the setting of split calls over threads workers.
func procsForSplit(threads int, spin bool) {
	if spin {
		procsFor(threads + 1)
	} else {
		procsFor(0)
	}
}

// ownProcs is the process's own GOMAXPROCS (before any raise made here):
// the CPUs it means to use, cgroup limits included.
func ownProcs() int {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if procs.raised.Load() {
		return procs.base
	}
	return runtime.GOMAXPROCS(0)
}
