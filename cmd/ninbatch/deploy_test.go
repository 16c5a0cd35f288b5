package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestKubernetesManifest: the Indexed Job example needs no shared volume
// and no ConfigMap-mounted model, reads and writes the store, and every
// run flag it passes exists; its podFailurePolicy fails an index on the
// usage-error code only.
func TestKubernetesManifest(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes-indexed-job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := string(b)
	var spec []string // the manifest without its comments
	for _, l := range strings.Split(y, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		spec = append(spec, l)
	}
	s := strings.Join(spec, "\n")
	for _, bad := range []string{"configMap", "ReadWriteMany", "persistentVolumeClaim", "hostPath", "volumeMounts"} {
		if strings.Contains(s, bad) {
			t.Errorf("manifest uses %s", bad)
		}
	}
	for _, want := range []string{"completionMode: Indexed", "backoffLimitPerIndex:", "--out=s3://", "--shards=8", "completions: 8", "values: [2]"} {
		if !strings.Contains(s, want) {
			t.Errorf("manifest lacks %q", want)
		}
	}
	flags := map[string]bool{}
	for _, f := range newRunCommand().Flags {
		for _, n := range f.Names() {
			flags[n] = true
		}
	}
	for _, m := range regexp.MustCompile(`- --([a-z0-9-]+)`).FindAllStringSubmatch(s, -1) {
		if !flags[m[1]] {
			t.Errorf("manifest passes --%s, which run does not take", m[1])
		}
	}
}
