package nin

import (
	"sync/atomic"
	"time"

	"github.com/ninbatch/ninbatch/native"
)

// Worker hand-offs that spin briefly before parking. At batch 1 one image's
// layer calls are split over the cores back to back, microseconds apart;
// waking a parked goroutine's thread costs tens of microseconds (a futex
// wake, on a VM an inter-processor interrupt), which on nin-mnist was more
// than the work it handed over. A waiter that spins a little finds the next
// task or the last part done without sleeping; one that finds nothing parks,
// so an idle net burns no CPU.

// spinFor bounds a spin before parking: longer than the gap between two
// layer calls of one image, far shorter than a batch.
const spinFor = 50 * time.Microsecond

// mailbox posts tasks to one worker goroutine, from one poster.
type mailbox struct {
	// tasks posted so far << 8 | the task posted last: one word, so a
	// worker that finds a new post reads the task of that same post even
	// when the next one (a drain still running when a split call begins)
	// follows at once
	state  atomic.Uint64
	parked atomic.Int32 // 1 while the worker sleeps on wake
	wake   chan struct{}
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

// post hands t to the worker and reports whether it had to wake it: the
// woken goroutine then waits on the poster's processor, which must not
// spin while it waits. A taskPart must follow a finished task; taskDrain
// may be posted to a worker still draining (it drains again, or finds
// nothing).
func (m *mailbox) post(t task) (woke bool) {
	m.state.Store((m.state.Load()>>8+1)<<8 | uint64(t))
	if m.parked.CompareAndSwap(1, 0) {
		m.wake <- struct{}{}
		return true
	}
	return false
}

// next waits for a post after the one numbered seen and returns its task
// with its number; spin says whether to spin before parking.
func (m *mailbox) next(seen uint64, spin bool) (task, uint64) {
	var v uint64
	fresh := func() bool { v = m.state.Load(); return v>>8 != seen }
	if spin && spinUntil(fresh) {
		return task(v & 0xff), v >> 8
	}
	for {
		m.parked.Store(1)
		if fresh() && m.parked.CompareAndSwap(1, 0) {
			return task(v & 0xff), v >> 8
		}
		<-m.wake // post claimed the parked flag: a wake is on its way
		if fresh() {
			return task(v & 0xff), v >> 8
		}
	}
}

// tally counts finished parts for one waiter.
type tally struct {
	n      atomic.Int64
	parked atomic.Int32
	wake   chan struct{}
}

func newTally() *tally { return &tally{wake: make(chan struct{}, 1)} }

// add counts one part and reports whether it woke the waiter. The woken
// goroutine is queued on the caller's processor, so a caller that woke it
// must not spin afterwards: it would hold the waiter off for the spin.
func (t *tally) add() (woke bool) {
	t.n.Add(1)
	if t.parked.CompareAndSwap(1, 0) {
		t.wake <- struct{}{}
		return true
	}
	return false
}

// waitFor waits until the count reaches target; spin says whether a short
// spin is worth it first (the parts are about as long as the waiter's own).
func (t *tally) waitFor(target int64, spin bool) {
	if spin && spinUntil(func() bool { return t.n.Load() >= target }) {
		return
	}
	for t.n.Load() < target {
		t.parked.Store(1)
		if t.n.Load() >= target {
			if !t.parked.CompareAndSwap(1, 0) {
				<-t.wake // add claimed it and sends
			}
			return
		}
		<-t.wake
	}
}

// spinUntil polls cond for up to spinFor.
func spinUntil(cond func() bool) bool {
	start := time.Now()
	for i := 1; ; i++ {
		if cond() {
			return true
		}
		native.Relax() // the other vCPU may be this core's SMT sibling, at work
		if i%16 == 0 && time.Since(start) > spinFor {
			return false
		}
	}
}
