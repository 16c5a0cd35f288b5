// Command ablation-head summarises the runs of scripts/ablation-head.sh:
// a Markdown table (test error mean ± standard deviation over seeds, the
// parameters, the median epoch time) on stdout and the validation-error
// curves as a PNG.
//
//	go run ./scripts/ablation-head -work DIR -png docs/gap-vs-fc.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

var variants = []struct{ name, label string }{
	{"gap", "GAP (NIN)"},
	{"fc", "FC"},
	{"fc-dropout", "FC + dropout 0.5"},
	{"gap-lr1", "GAP, last conv at 1x lr"},
	{"gap-nofinal", "GAP, no ReLU on the last conv"},
}

type run struct {
	seed    int
	testErr float64
	history []pipeline.EpochMetrics
	params  int64
	head    int64
}

func main() {
	work := flag.String("work", "", "the script's work directory")
	out := flag.String("png", "", "write the curves here")
	flag.Parse()
	if err := summarise(*work, *out); err != nil {
		fmt.Fprintln(os.Stderr, "ablation-head:", err)
		os.Exit(1)
	}
}

func summarise(work, out string) error {
	runs := map[string][]run{}
	re := regexp.MustCompile(`^(.*)-s(\d+)\.nin$`)
	files, _ := filepath.Glob(filepath.Join(work, "*-s*.nin"))
	for _, f := range files {
		m := re.FindStringSubmatch(filepath.Base(f))
		if m == nil {
			continue
		}
		seed, _ := strconv.Atoi(m[2])
		r, err := load(f, seed)
		if err != nil {
			return err
		}
		runs[m[1]] = append(runs[m[1]], r)
	}
	if len(runs) == 0 {
		return fmt.Errorf("no finished runs in %s", work)
	}
	fmt.Println("| head | parameters (head) | test error, mean ± sd | per seed | final train loss | last conv > 0 | s / epoch (median) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	p := plot.New()
	p.Title.Text = "nin-mnist: validation error by head (each seed)"
	p.X.Label.Text, p.Y.Label.Text = "epoch", "test error %"
	p.Add(plotter.NewGrid())
	colors := []color.RGBA{{33, 144, 140, 255}, {220, 40, 40, 255}, {60, 80, 200, 255}, {230, 160, 0, 255}, {120, 60, 160, 255}}
	for vi, v := range variants {
		rs := runs[v.name]
		if len(rs) == 0 {
			continue
		}
		sort.Slice(rs, func(i, j int) bool { return rs[i].seed < rs[j].seed })
		var errs, losses, secs, alive []float64
		var per []string
		for _, r := range rs {
			errs = append(errs, 100*r.testErr)
			per = append(per, fmt.Sprintf("%.2f", 100*r.testErr))
			if n := len(r.history); n > 0 {
				losses = append(losses, r.history[n-1].TrainLoss)
				alive = append(alive, r.history[n-1].AliveFrac)
			}
			for _, h := range r.history {
				secs = append(secs, h.Seconds)
			}
			xy := make(plotter.XYs, len(r.history))
			for i, h := range r.history {
				xy[i].X, xy[i].Y = float64(h.Epoch), 100*(1-h.ValAcc)
			}
			l, err := plotter.NewLine(xy)
			if err != nil {
				return err
			}
			l.Color, l.Width = colors[vi], vg.Points(1.2)
			p.Add(l)
			if r.seed == rs[0].seed {
				p.Legend.Add(v.label, l)
			}
		}
		mean, sd := meanSD(errs)
		var al []string
		for _, a := range alive {
			al = append(al, fmt.Sprintf("%.2f", a))
		}
		fmt.Printf("| %s | %s (%s) | %.2f%% ± %.2f | %s | %.4f | %s | %.1f |\n", v.label, thousands(rs[0].params), thousands(rs[0].head),
			mean, sd, strings.Join(per, ", "), median(losses), strings.Join(al, ", "), median(secs))
	}
	if out == "" {
		return nil
	}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = pipeline.Ticks125{}
	p.Legend.Top = true
	return p.Save(8*vg.Inch, 4.5*vg.Inch, out)
}

func load(model string, seed int) (run, error) {
	r := run{seed: seed}
	m, err := nin.LoadFile(model)
	if err != nil {
		return r, err
	}
	layers, err := m.Spec.Plan()
	if err != nil {
		return r, err
	}
	r.params, _ = nin.Totals(layers)
	if r.head, _, err = m.Spec.HeadParams(); err != nil {
		return r, err
	}
	var ev struct {
		Error float64 `json:"top1_error"`
		N     int     `json:"n"`
	}
	b, err := os.ReadFile(strings.TrimSuffix(model, ".nin") + ".eval.json")
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &ev); err != nil || ev.N == 0 {
		return r, fmt.Errorf("%s.eval.json: %v", model, err)
	}
	r.testErr = ev.Error
	b, err = os.ReadFile(model + ".metrics.jsonl")
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var em pipeline.EpochMetrics
		if err := json.Unmarshal([]byte(line), &em); err != nil {
			return r, fmt.Errorf("%s.metrics.jsonl: %w", model, err)
		}
		r.history = append(r.history, em)
	}
	return r, nil
}

func meanSD(v []float64) (mean, sd float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	for _, x := range v {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(v)-1))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func thousands(v int64) string {
	s := fmt.Sprint(v)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
