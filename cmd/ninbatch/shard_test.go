package main

import (
	"strings"
	"testing"
)

// The shard index comes from --shard, or with --shards from Kubernetes or
// Slurm; anything that could score a shard twice or never is refused.
func TestParseShard(t *testing.T) {
	for _, c := range []struct {
		spec    string
		shards  int
		env     map[string]string
		i, n    int
		wantErr string
	}{
		{"", 0, nil, 0, 0, ""},
		{"2/5", 0, nil, 2, 5, ""},
		{"5/5", 0, nil, 0, 0, "0 <= I < N"},
		{"1/2/3", 0, nil, 0, 0, "I/N"},
		{"", -1, nil, 0, 0, "positive"},
		{"", 4, nil, 0, 0, "neither is set"},
		{"", 4, map[string]string{"JOB_COMPLETION_INDEX": "3"}, 3, 4, ""},
		{"", 4, map[string]string{"JOB_COMPLETION_INDEX": "4"}, 0, 0, "0..3"},
		{"", 4, map[string]string{"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, 2, 4, ""},
		// --array=1-4: task ids 1..4 are shards 0..3
		{"", 4, map[string]string{"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, 3, 4, ""},
		// --array=0-6:2: ids 0, 2, 4, 6
		{"", 4, map[string]string{"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, 3, 4, ""},
		{"", 4, map[string]string{"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2"}, 0, 0, "not on the array's range"},
		{"", 3, map[string]string{"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, 0, 0, "SLURM_ARRAY_TASK_COUNT"},
		{"", 3, map[string]string{"SLURM_ARRAY_TASK_ID": "3"}, 0, 0, "task 3"},
		{"", 3, map[string]string{"SLURM_ARRAY_TASK_ID": "x"}, 0, 0, "not a number"},
	} {
		i, n, err := parseShard(c.spec, c.shards, func(k string) string { return c.env[k] })
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%q %d %v: %v", c.spec, c.shards, c.env, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%q %d %v: error %v, want one saying %q", c.spec, c.shards, c.env, err, c.wantErr)
		case err == nil && (i != c.i || n != c.n):
			t.Errorf("%q %d %v: shard %d/%d, want %d/%d", c.spec, c.shards, c.env, i, n, c.i, c.n)
		}
	}
}
