package nin

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Go processors for the engine's two ways of using threads. Streams want
// GOMAXPROCS at threads+2: each of the threads goroutines drains
// micro-batches through long cgo calls, and a goroutine leaving one (or one
// a worker wakes) needs a free P; at GOMAXPROCS = threads both Ps are
// usually held by threads inside cgo calls until sysmon takes one back,
// tens of µs later. At batch 64 on 2 threads (2 vCPUs, GOMAXPROCS 2 against
// 4, alternated) this cost nin-imagenet 15–25%, nin-cifar10 18–25%, and the
// nin-mnist training step 30% (858–914 against 1254–1284 img/s). Split calls
// (batch < threads) want the process's own setting back: there the extra Ps
// let the scheduler's spinning threads take time from the two compute
// threads, and nin-imagenet at batch 1 lost 27%. GOMAXPROCS is changed only
// when a call's mode differs from the last one's (a stop-the-world of a few
// µs), is never lowered below what the process had, and nets running
// different modes at once in one process leave it at the last one's choice.
var procs struct {
	mu     sync.Mutex
	raised atomic.Bool
	base   int // GOMAXPROCS before the raise
}

// procsForStreams raises GOMAXPROCS to threads+2 if it is lower.
func procsForStreams(threads int) {
	if threads < 2 || runtime.GOMAXPROCS(0) >= threads+2 {
		return
	}
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if cur := runtime.GOMAXPROCS(0); cur < threads+2 {
		if !procs.raised.Load() {
			procs.base = cur
			procs.raised.Store(true)
		}
		runtime.GOMAXPROCS(threads + 2)
	}
}

// procsForSplit restores the GOMAXPROCS a raise replaced.
func procsForSplit() {
	if !procs.raised.Load() {
		return
	}
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if procs.raised.Load() {
		runtime.GOMAXPROCS(procs.base)
		procs.raised.Store(false)
	}
}
