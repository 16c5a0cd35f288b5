package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func mkdirAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return usageErr("cannot create directory %s: %v", dir, err)
	}
	return nil
}

// parseInts parses "20,25" into []int.
func parseInts(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("%q is not a list of integers", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// progress writes a self-overwriting status line on a terminal; elsewhere
// (cron, Kubernetes) it emits a structured log line every progressEvery.
type progress struct {
	on      bool
	last    string
	logged  time.Time
	started time.Time
}

// progressEvery is the interval of progress log lines off a terminal
// (--progress-every; 0 turns them off).
var progressEvery = 30 * time.Second

func newProgress() *progress {
	return &progress{on: isTTY(os.Stderr), started: time.Now(), logged: time.Now()}
}

// every reports whether a periodic log line is due (non-TTY only).
func (p *progress) every() bool {
	if p.on || progressEvery <= 0 || time.Since(p.logged) < progressEvery {
		return false
	}
	p.logged = time.Now()
	return true
}

func (p *progress) show(format string, a ...any) {
	if !p.on {
		return
	}
	s := fmt.Sprintf(format, a...)
	fmt.Fprintf(os.Stderr, "\r%-*s", len(p.last), s)
	p.last = s
}

func (p *progress) done() {
	if p.on && p.last != "" {
		fmt.Fprintf(os.Stderr, "\r%*s\r", len(p.last), "")
		p.last = ""
	}
}
