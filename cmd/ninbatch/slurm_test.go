package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSlurmArray submits deploy/slurm-array.sbatch as a 4-task Slurm job
// array over 6 input files (in 12 units), waits for it, and checks that
// every row was scored exactly once and each task committed its own
// manifest; a second array redoes nothing. It needs a running Slurm
// cluster on this machine (scripts/slurm-test.sh starts one) and runs only
// with NINBATCH_SLURM=1.
func TestSlurmArray(t *testing.T) {
	if os.Getenv("NINBATCH_SLURM") != "1" {
		t.Skip("set NINBATCH_SLURM=1 with a Slurm cluster up (scripts/slurm-test.sh)")
	}
	model, in := nightlyFixture(t, 6, 50, 10)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, "scored")
	// the job script runs this test binary as ninbatch
	bin := filepath.Join(dir, "ninbatch")
	wrapper := fmt.Sprintf("#!/bin/sh\nNINBATCH_TEST_MAIN=1 exec %q \"$@\"\n", os.Args[0])
	if err := os.WriteFile(bin, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../../deploy/slurm-array.sbatch")
	if err != nil {
		t.Fatal(err)
	}
	submit := func(name string) {
		t.Helper()
		cmd := exec.Command("sbatch", "--wait", "--array=0-3", "--job-name", name,
			"--output", filepath.Join(dir, name+"-%a.log"), script)
		cmd.Env = append(os.Environ(), "NINBATCH="+bin, "MODEL="+model, "INPUT="+in, "OUT="+out,
			"SUMMARY_DIR="+filepath.Join(dir, name), "NINBATCH_ARGS=--split-rows 25")
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		var e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &e, &e
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatalf("sbatch: %v", err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				logs, _ := filepath.Glob(filepath.Join(dir, name+"-*.log"))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", l, b)
				}
				t.Fatalf("sbatch --wait: %v\n%s", err, e.String())
			}
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("the job array did not finish in 3 minutes\n%s", e.String())
		}
	}
	submit("nb-first")
	got := scoredRows(t, out) // fails on a duplicate id
	if len(got) != 300 {
		t.Fatalf("the array scored %d distinct rows, want 300", len(got))
	}
	mans, _ := filepath.Glob(filepath.Join(out, "_ninbatch_manifest.shard-*-of-4.jsonl"))
	if len(mans) != 4 {
		t.Fatalf("%d shard manifests, want 4: %v", len(mans), mans)
	}
	submit("nb-again")
	for i := 0; i < 4; i++ {
		s := readSummary(t, filepath.Join(dir, "nb-again", fmt.Sprintf("summary-%d.json", i)))
		if s.FilesDone != 0 {
			t.Errorf("rerun task %d scored %d units again", i, s.FilesDone)
		}
	}
	if again := scoredRows(t, out); len(again) != 300 {
		t.Fatalf("after the rerun %d rows", len(again))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "nb-first-0.log"))
	if !strings.Contains(string(b), `"status":"succeeded"`) {
		t.Errorf("task 0's log has no succeeded status line:\n%s", b)
	}
}
