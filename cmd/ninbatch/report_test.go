package main

import (
	"bytes"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"
)

// chromium opens page in headless Chromium, takes a full-page screenshot
// into shot, and returns the console messages (the reports log nothing
// unless something is broken: a script error or an image that did not
// decode). It skips without Chromium unless NINBATCH_REQUIRE_CHROMIUM=1.
func chromium(t *testing.T, page, shot string) []string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("NINBATCH_REQUIRE_CHROMIUM") == "1" {
			t.Fatal("chromium is not installed (Debian package chromium; scripts/setup.sh installs it)")
		}
		t.Skip("chromium not installed; CI sets NINBATCH_REQUIRE_CHROMIUM=1")
	}
	abs, _ := filepath.Abs(page)
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
		"--window-size=1200,3000", "--screenshot="+shot, "file://"+abs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	var console []string
	re := regexp.MustCompile(`:CONSOLE[^\]]*\] (.*)`)
	for _, line := range strings.Split(stderr.String(), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			console = append(console, m[1])
		}
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, stderr.String())
	}
	defer f.Close()
	if img, err := png.Decode(f); err != nil || img.Bounds().Dx() != 1200 {
		t.Fatalf("screenshot: %v", err)
	}
	return console
}

// TestReports: train --val writes a report with the curves, the epochs and
// the evaluation; eval --report writes the evaluation's; both are one
// self-contained page that headless Chromium opens without a console
// message (and the check sees a broken picture when there is one).
func TestReports(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "spec.json")
	os.WriteFile(spec, []byte(testutil.TinySpecJSON), 0o644)
	train, val := filepath.Join(dir, "train.parquet"), filepath.Join(dir, "val.parquet")
	writeTinyDataset(t, train, 400, 1)
	writeTinyDataset(t, val, 40, 2)
	model := filepath.Join(dir, "m.nin")
	if code, _, e := runCLI(t, "train", "--spec", spec, "--init-scheme", "kaiming", "--epochs", "3", "--batch", "16",
		"--lr", "0.05", "--val", val, "--out", model, "--threads", "1", train); code != 0 {
		t.Fatalf("train: %d %s", code, e)
	}
	evalReport := filepath.Join(dir, "eval.html")
	if code, _, e := runCLI(t, "eval", "--model", model, "--report", evalReport, val); code != 0 {
		t.Fatalf("eval --report: %d %s", code, e)
	}
	for path, want := range map[string][]string{
		model + ".report.html": {"Training run of tiny", "Training curves", "<td>3</td>", "Confusion matrix", "Class maps", "Provenance", "train.parquet"},
		evalReport:             {"Evaluation of tiny", "Confusion matrix", "Accuracy per class", "Class maps", "Most confident mistakes", "Provenance", "val.parquet"},
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		page := string(b)
		for _, w := range want {
			if !strings.Contains(page, w) {
				t.Errorf("%s lacks %q", filepath.Base(path), w)
			}
		}
		if strings.Contains(page, "http://") || strings.Contains(page, "https://") || !strings.Contains(page, "data:image/png;base64,") {
			t.Errorf("%s is not self-contained (links out, or no inlined pictures)", filepath.Base(path))
		}
		if console := chromium(t, path, filepath.Join(dir, filepath.Base(path)+".png")); len(console) > 0 {
			t.Errorf("%s: console messages %q", filepath.Base(path), console)
		}
		// the check itself: a picture broken on purpose is reported
		i := strings.Index(page, "base64,") + len("base64,")
		broken := filepath.Join(dir, "broken.html")
		os.WriteFile(broken, []byte(page[:i]+"AAAA"+page[i+200:]), 0o644)
		if console := chromium(t, broken, filepath.Join(dir, "broken.png")); len(console) == 0 || !strings.Contains(console[0], "did not load") {
			t.Errorf("a broken picture went unnoticed: %q", console)
		}
	}
	// --report none writes none; a report path that holds something else is refused
	other := filepath.Join(dir, "other")
	if code, _, e := runCLI(t, "train", "--spec", spec, "--epochs", "1", "--report", "none", "--out", other+".nin", "--threads", "1", train); code != 0 {
		t.Fatalf("train --report none: %d %s", code, e)
	}
	if _, err := os.Stat(other + ".nin.report.html"); err == nil {
		t.Error("--report none wrote a report")
	}
	if code, _, e := runCLI(t, "eval", "--model", model, "--report", val, val); code != 2 || !strings.Contains(e, "is one of the inputs") {
		t.Errorf("eval --report over its input: %d %s", code, e)
	}
	if code, _, e := runCLI(t, "eval", "--model", model, "--report", spec, val); code != 2 || !strings.Contains(e, "not a file this command wrote") {
		t.Errorf("eval --report over a foreign file: %d %s", code, e)
	}
}
