package main

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

// mnistData is the MNIST Parquet directory the tests share (written once
// per test binary, removed by TestMain).
var mnistData struct {
	sync.Mutex
	dir string
}

// mnistTest returns the 10,000 MNIST test images as Parquet (the tests
// only read it).
func mnistTest(t *testing.T) string {
	t.Helper()
	mnistData.Lock()
	defer mnistData.Unlock()
	if mnistData.dir == "" {
		dir, err := os.MkdirTemp("", "ninbatch-mnist-")
		if err != nil {
			t.Fatal(err)
		}
		if code, _, e := runCLI(t, "dataset", "mnist", "--from", mnistDir(t), "--out", dir); code != 0 {
			os.RemoveAll(dir)
			t.Fatalf("dataset mnist: exit %d: %s", code, e)
		}
		mnistData.dir = dir
	}
	return filepath.Join(mnistData.dir, "test.parquet")
}

// TestShippedModelMapsLocalise measures NIN's two claims about its class
// maps on the shipped model and the 10,000 MNIST test images: for every
// correctly classified image the label's map has the largest mean (what
// GAP classifies by), and for at least 90% of them the label map's peak
// lies on the digit, inside the bounding box of its ink (pixels ≥ 128).
func TestShippedModelMapsLocalise(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 10,000 images")
	}
	test := mnistTest(t)
	m, err := nin.LoadFile("../../models/nin-mnist.nin")
	if err != nil {
		t.Fatal(err)
	}
	prep := pipeline.PreprocessFor(m)
	data, err := nbio.OpenLabeledStream([]string{test}, nbio.LabelOptions{Classes: 10, Workers: 2}, prep, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 64
	net, err := nin.NewNet(m, nin.Options{MaxBatch: batch, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	md, in := net.MapDims(), m.Spec.Input
	stride, offset, err := m.Spec.MapGrid()
	if err != nil {
		t.Fatal(err)
	}
	hw := md.H * md.W
	x, probs, maps := make([]float32, batch*in.Len()), make([]float32, batch*10), make([]float32, batch*md.Len())
	var correct, onDigit, total int
	err = data.Each(context.Background(), nbio.Order{}, batch, func(pix []uint8, labels []int32, n int) error {
		for j := 0; j < n; j++ {
			prep.Normalize(x[j*in.Len():(j+1)*in.Len()], pix[j*in.Len():(j+1)*in.Len()])
		}
		if err := net.ForwardMaps(x, n, probs, nil, maps); err != nil {
			return err
		}
		for j := 0; j < n; j++ {
			total++
			y := int(labels[j])
			if argmax(probs[j*10:(j+1)*10]) != y {
				continue
			}
			correct++
			mp := maps[j*md.Len() : (j+1)*md.Len()]
			means := make([]float32, 10)
			for p := 0; p < hw; p++ {
				for k := range means {
					means[k] += mp[p*10+k] / float32(hw)
				}
			}
			if argmax(means) != y {
				t.Errorf("image %d: label %d is right but its map's mean is not the largest (%v)", total-1, y, means)
			}
			peak := 0
			for p := 1; p < hw; p++ {
				if mp[p*10+y] > mp[peak*10+y] {
					peak = p
				}
			}
			// the centre of the peak's receptive field, in input pixels
			cx, cy := offset+stride*float64(peak%md.W), offset+stride*float64(peak/md.W)
			x0, y0, x1, y1 := in.W, in.H, -1, -1
			img := pix[j*in.Len() : (j+1)*in.Len()]
			for yy := 0; yy < in.H; yy++ {
				for xx := 0; xx < in.W; xx++ {
					if img[yy*in.W+xx] >= 128 {
						x0, y0, x1, y1 = min(x0, xx), min(y0, yy), max(x1, xx), max(y1, yy)
					}
				}
			}
			if cx >= float64(x0) && cx <= float64(x1) && cy >= float64(y0) && cy <= float64(y1) {
				onDigit++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	frac := float64(onDigit) / float64(correct)
	t.Logf("%d images, %d correct; the label map's peak on the digit for %d (%.2f%%)", total, correct, onDigit, 100*frac)
	if total != 10000 || correct < 9900 || frac < 0.90 {
		t.Fatalf("peak on the digit for %.2f%% of %d correct images (want ≥ 90%%)", 100*frac, correct)
	}
}

func argmax(v []float32) int {
	b := 0
	for i, x := range v {
		if x > v[b] {
			b = i
		}
	}
	return b
}

// TestMapsCommand: the figure and the JSON of the shipped model's maps, one
// correctly classified image per class; outputs that would overwrite an
// input or a foreign file are refused.
func TestMapsCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("MNIST")
	}
	test := mnistTest(t)
	dir := t.TempDir()
	out, js := filepath.Join(dir, "maps.png"), filepath.Join(dir, "maps.json")
	model := "../../models/nin-mnist.nin"
	if code, _, e := runCLI(t, "maps", "--model", model, "--out", out, "--json", js, test); code != 0 {
		t.Fatalf("maps: exit %d %s", code, e)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 11*84 || img.Bounds().Dy() < 10*84 {
		t.Fatalf("figure: %v %v", err, img.Bounds())
	}
	var doc struct {
		MapH   int `json:"map_h"`
		MapW   int `json:"map_w"`
		Images []struct {
			Label, Pred int
			Maps        [][]float32
		}
	}
	b, _ := os.ReadFile(js)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, im := range doc.Images {
		if im.Label != im.Pred || len(im.Maps) != 10 || len(im.Maps[0]) != 49 {
			t.Fatalf("image label %d pred %d, %d maps of %d", im.Label, im.Pred, len(im.Maps), len(im.Maps[0]))
		}
		seen[im.Label] = true
	}
	if len(seen) != 10 || len(doc.Images) != 10 || doc.MapH != 7 || doc.MapW != 7 {
		t.Fatalf("%d images over %d classes, want one per class", len(doc.Images), len(seen))
	}
	// overlay and the most confident mistakes draw too
	for _, args := range [][]string{{"--overlay", "--rows", "16"}, {"--pick", "wrong", "--rows", "4"}} {
		if code, _, e := runCLI(t, append([]string{"maps", "--model", model, "--out", out}, append(args, test)...)...); code != 0 {
			t.Fatalf("maps %v: exit %d %s", args, code, e)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", test}, "is one of the inputs"},
		{[]string{"--out", model}, "is one of the inputs"},
		{[]string{"--out", out, "--json", out}, "not a file this command wrote"},
		{[]string{"--out", out, "--pick", "best"}, `--pick \"best\"`},
	} {
		st, _ := os.Stat(test)
		code, _, e := runCLI(t, append(append([]string{"maps", "--model", model}, c.args...), test)...)
		if code != 2 || !strings.Contains(e, c.want) {
			t.Errorf("maps %v: exit %d %s", c.args, code, e)
		}
		if st2, _ := os.Stat(test); st2.Size() != st.Size() {
			t.Fatal("the input was changed")
		}
	}
}

// TestRunMapsColumn: run --maps writes a map column DuckDB reads back, one
// row-major H×W list per row as the metadata's shape says; --maps label
// follows the label column (the same map as top1 where they agree); a
// rerun asking for the column redoes an output written without it.
func TestRunMapsColumn(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "in", "quad.parquet")
	os.MkdirAll(filepath.Dir(data), 0o755)
	writeTinyDataset(t, data, 60, 4)
	out := filepath.Join(dir, "out")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, data); code != 0 {
		t.Fatalf("run: %d %s", code, e)
	}
	scored := filepath.Join(out, "quad.parquet")
	code, _, e := runCLI(t, "run", "--model", model, "--maps", "top1", "--out", out, data)
	if code != 0 || !strings.Contains(e, `"done":1`) {
		t.Fatalf("rerun with --maps: %d %s", code, e) // other columns asked for: redone, not skipped
	}
	labelOut := filepath.Join(dir, "out-label")
	if code, _, e := runCLI(t, "run", "--model", model, "--maps", "label", "--out", labelOut, data); code != 0 {
		t.Fatalf("run --maps label: %d %s", code, e)
	}
	meta := duck(t, fmt.Sprintf(`SELECT decode(value) AS v FROM parquet_kv_metadata('%s') WHERE decode(key) = 'ninbatch.map'`, scored))
	if len(meta) != 1 {
		t.Fatalf("no ninbatch.map metadata: %v", meta)
	}
	var shape struct {
		Column string
		H, W   int
		Class  string
	}
	if err := json.Unmarshal([]byte(meta[0]["v"].(string)), &shape); err != nil || shape.Column != "map" || shape.Class != "top1" || shape.H != 6 || shape.W != 6 {
		t.Fatalf("map metadata %s: %v", meta[0]["v"], err)
	}
	rows := duck(t, fmt.Sprintf(`SELECT count(*)::INT AS n, count(*) FILTER (WHERE len(map) = %d)::INT AS sized,
		count(*) FILTER (WHERE list_max(map) > list_min(map))::INT AS varied FROM '%s'`, shape.H*shape.W, scored))
	if fmt.Sprint(rows[0]["n"]) != "60" || fmt.Sprint(rows[0]["sized"]) != "60" || fmt.Sprint(rows[0]["varied"]) == "0" {
		t.Fatalf("map column: %v", rows[0])
	}
	same := duck(t, fmt.Sprintf(`SELECT count(*) FILTER (WHERE a.label = a.top1)::INT AS agree,
		count(*) FILTER (WHERE a.label = a.top1 AND a.map = b.map)::INT AS same,
		count(*) FILTER (WHERE a.label <> a.top1 AND a.map = b.map)::INT AS same_wrong
		FROM read_parquet('%s', file_row_number = true) b JOIN read_parquet('%s', file_row_number = true) a USING (file_row_number)`,
		scored, filepath.Join(labelOut, "quad.parquet")))
	if a := fmt.Sprint(same[0]["agree"]); a == "0" || a == "60" || same[0]["agree"] != same[0]["same"] || fmt.Sprint(same[0]["same_wrong"]) != "0" {
		t.Fatalf("label maps against top1 maps: %v", same[0])
	}
	// a file without labels cannot have label maps; bad values are refused
	if code, _, e := runCLI(t, "run", "--model", model, "--maps", "label", "--map-label-col", "nope", "--out", filepath.Join(dir, "o3"), data); code == 0 || !strings.Contains(e, `no label column \"nope\"`) {
		t.Fatalf("--maps label without the column: %d %s", code, e)
	}
	if code, _, e := runCLI(t, "run", "--model", model, "--maps", "all", "--out", filepath.Join(dir, "o4"), data); code != 2 || !strings.Contains(e, `--maps \"all\"`) {
		t.Fatalf("--maps all: %d %s", code, e)
	}
}
