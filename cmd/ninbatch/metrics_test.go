package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ninbatch/ninbatch/pipeline"
)

// A sharded run labels every sample with its shard; a run that failed
// before scoring still writes every gauge, at zero.
func TestPromTextLabels(t *testing.T) {
	txt := string(promText(&pipeline.RunSummary{Shard: "1/3", RowsIn: 7, ImgPerSec: 2.5}, exitRowsErrors, time.Unix(1700000000, 0)))
	for _, want := range []string{`ninbatch_run_success{shard="1/3"} 0`, `ninbatch_run_status{shard="1/3",status="partial"} 1`,
		`ninbatch_run_rows{shard="1/3",kind="in"} 7`, `ninbatch_run_images_per_second{shard="1/3"} 2.5`,
		`ninbatch_run_last_completion_timestamp_seconds{shard="1/3"} 1700000000`, `ninbatch_run_exit_code{shard="1/3"} 3`} {
		if !strings.Contains(txt, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, txt)
		}
	}
	empty := string(promText(nil, exitFailed, time.Unix(0, 0)))
	if !strings.Contains(empty, `ninbatch_run_status{status="failed"} 1`+"\n") || !strings.Contains(empty, `ninbatch_run_rows{kind="in"} 0`+"\n") {
		t.Errorf("a run without a summary:\n%s", empty)
	}
	if got := promEscape("a\"b\\c\nd"); got != `a\"b\\c\nd` {
		t.Errorf("escape: %s", got)
	}
}
