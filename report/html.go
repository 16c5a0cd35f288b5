package report

import (
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

// Page is what one report shows: an evaluation of a model on labelled
// data (eval --report), and for a training run also its curves and epochs.
type Page struct {
	Title      string
	Generated  string // RFC 3339
	Version    string // ninbatch's
	Machine    string // the ISA and CPU flags the scores were computed with
	Command    string // the command line that made the report
	ModelPath  string
	Model      *nin.Model
	Data       []string // the evaluation data
	Eval       *pipeline.EvalResult
	GridPNG    []byte               // one correctly classified image per class, with its class maps
	Mistakes   []pipeline.MapSample // most confident first
	MistakePNG []byte
	CurvesPNG  []byte                  // training runs
	History    []pipeline.EpochMetrics // training runs
	Note       string                  // shown under the title, e.g. why a section is missing
}

// maxMatrixClasses bounds the confusion matrix drawn as a table; above it
// the page lists the largest confusions instead.
const maxMatrixClasses = 50

// WriteHTML writes p as one self-contained HTML page: no network, the
// pictures inlined as data URIs, a few lines of script that report an image
// that failed to decode on the console.
func WriteHTML(w io.Writer, p *Page) error {
	v, err := p.view()
	if err != nil {
		return err
	}
	return pageTmpl.Execute(w, v)
}

type cell struct {
	N     int
	Style template.CSS
	Title string
}

type bar struct {
	Name     string
	Acc      float64
	N        int
	Y, Width float64
}

type confusion struct {
	True, Pred string
	N          int
	Share      float64
}

type kv struct{ K, V string }

type view struct {
	*Page
	Classes    []string
	Matrix     [][]cell
	Bars       []bar
	BarsHeight float64
	Worst      []bar
	Confusions []confusion
	Provenance []kv
	Grid       template.URL
	MistakeImg template.URL
	Curves     template.URL
}

func dataURL(b []byte) template.URL {
	if len(b) == 0 {
		return ""
	}
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b))
}

func (p *Page) view() (*view, error) {
	if p.Model == nil {
		return nil, fmt.Errorf("report: no model")
	}
	v := &view{Page: p, Grid: dataURL(p.GridPNG), MistakeImg: dataURL(p.MistakePNG), Curves: dataURL(p.CurvesPNG)}
	c := p.Model.Spec.Classes()
	for k := 0; k < c; k++ {
		v.Classes = append(v.Classes, className(p.Model.Classes, k))
	}
	if e := p.Eval; e != nil {
		if c <= maxMatrixClasses {
			for t, row := range e.Confusion {
				var cells []cell
				for q, n := range row {
					cells = append(cells, matrixCell(n, e.ClassN[t], t == q, v.Classes[t], v.Classes[q]))
				}
				v.Matrix = append(v.Matrix, cells)
			}
		}
		var bars []bar
		for k, a := range e.PerClass {
			if e.ClassN[k] > 0 {
				bars = append(bars, bar{Name: v.Classes[k], Acc: a, N: e.ClassN[k]})
			}
		}
		if len(bars) <= maxMatrixClasses {
			for i := range bars {
				bars[i].Y, bars[i].Width = float64(i*18), 400*bars[i].Acc
			}
			v.Bars, v.BarsHeight = bars, float64(len(bars)*18)
		} else {
			sort.SliceStable(bars, func(i, j int) bool { return bars[i].Acc < bars[j].Acc })
			v.Worst = bars[:20]
		}
		for t, row := range e.Confusion {
			for q, n := range row {
				if t != q && n > 0 {
					v.Confusions = append(v.Confusions, confusion{v.Classes[t], v.Classes[q], n, float64(n) / float64(e.ClassN[t])})
				}
			}
		}
		sort.SliceStable(v.Confusions, func(i, j int) bool { return v.Confusions[i].N > v.Confusions[j].N })
		v.Confusions = v.Confusions[:min(len(v.Confusions), 10)]
	}
	v.Provenance = provenance(p)
	return v, nil
}

// matrixCell colours a confusion count by its share of the true class's
// images (viridis; text dark on the light end).
func matrixCell(n, total int, diag bool, t, q string) cell {
	share := 0.0
	if total > 0 {
		share = float64(n) / float64(total)
	}
	c := cell{N: n, Title: fmt.Sprintf("true %s, predicted %s: %d of %d (%.2f%%)", t, q, n, total, 100*share)}
	if n == 0 {
		c.Style = "color:#bbb"
		return c
	}
	// a square-root scale: a few confusions among thousands still show
	col := Viridis(math.Sqrt(share))
	fg := "#fff"
	if 0.2126*float64(col.R)+0.7152*float64(col.G)+0.0722*float64(col.B) > 140 {
		fg = "#111"
	}
	style := fmt.Sprintf("background:#%02x%02x%02x;color:%s", col.R, col.G, col.B, fg)
	if diag {
		style += ";font-weight:bold"
	}
	c.Style = template.CSS(style)
	return c
}

func provenance(p *Page) []kv {
	m := p.Model
	var out []kv
	add := func(k, v string) {
		if v != "" {
			out = append(out, kv{k, v})
		}
	}
	add("model file", p.ModelPath)
	add("model id", m.ID)
	if m.FileHash != "" && m.FileHash != m.ID {
		add("file sha256", m.FileHash)
	}
	s := &m.Spec
	layers, _ := s.Plan()
	params, macs := nin.Totals(layers)
	head, fc, _ := s.HeadParams()
	add("architecture", fmt.Sprintf("%s: %d mlpconv blocks, input %s, %s pooling", s.Name, len(s.Blocks), s.Input, s.Pooling))
	if s.HeadKind() == nin.HeadGAP {
		add("head", fmt.Sprintf("global average pooling: 0 parameters (an fc head would add %s)", thousands(fc)))
	} else {
		add("head", fmt.Sprintf("fully connected, dropout %g: %s parameters", s.HeadDropout, thousands(head)))
	}
	add("parameters", fmt.Sprintf("%s (body %s), %.3f GFLOP per image", thousands(params), thousands(params-head), 2*float64(macs)/1e9))
	pp := m.Preprocess
	add("preprocessing", fmt.Sprintf("resize %s %d, %s, scale %g, mean %v, std %v", pp.Resize, pp.ResizeTo, pp.Color, pp.Scale, pp.Mean, pp.Std))
	pv := m.Provenance
	add("created", pv.Created)
	add("made by", strings.TrimSpace(pv.NinbatchVersion+" "+pv.Command))
	add("init", pv.Init)
	add("trained on", pv.Dataset)
	add("training data sha256", pv.DatasetFingerprint)
	if pv.Epochs > 0 {
		add("training", fmt.Sprintf("%d epochs, %.0f s", pv.Epochs, pv.TrainingSeconds))
	}
	if len(pv.Metrics) > 0 {
		keys := make([]string, 0, len(pv.Metrics))
		for k := range pv.Metrics {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %.4g", k, pv.Metrics[k]))
		}
		add("final metrics", strings.Join(parts, ", "))
	}
	add("imported from", strings.TrimSpace(pv.Source+" "+pv.SourceSHA256))
	add("evaluated on", strings.Join(p.Data, ", "))
	add("report by", strings.TrimSpace("ninbatch "+p.Version+", "+p.Generated))
	add("command", p.Command)
	add("machine", p.Machine)
	return out
}

func className(names []string, k int) string {
	if k < len(names) && names[k] != "" {
		return names[k]
	}
	return fmt.Sprint(k)
}

func thousands(v int64) string {
	s := fmt.Sprint(v)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct":  func(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) },
	"f4":   func(v float64) string { return fmt.Sprintf("%.4f", v) },
	"f1":   func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"prob": func(v float32) string { return fmt.Sprintf("%.1f%%", 100*v) },
	"name": func(names []string, k int) string { return className(names, k) },
	"add":  func(a, b float64) float64 { return a + b },
	"wrong": func(e *pipeline.EvalResult) int {
		return e.N - int(math.Round(e.Top1*float64(e.N)))
	},
}).Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fafafa;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}.note{background:#fff6d6;border:1px solid #eed97a;padding:8px 12px;border-radius:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:12px}
table{border-collapse:collapse;background:#fff}td,th{padding:3px 7px;border:1px solid #e6e6e6;text-align:right}
th{background:#f1f1f1;font-weight:600}table.kv td{text-align:left;vertical-align:top}table.kv td:first-child{color:#555;white-space:nowrap}
table.cm td{min-width:34px;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #e3e3e3;background:#fff}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
svg text{font-size:12px}
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p class="sub">{{.Model.Spec.Name}} · {{.Model.Spec.HeadKind}} head{{if .Eval}} · {{.Eval.N}} images{{end}} · {{.Generated}}</p>
{{if .Note}}<p class="note">{{.Note}}</p>{{end}}
{{with .Eval}}
<div class="cards">
<div class="card"><b>{{pct .Top1}}</b><span>top-1 accuracy</span></div>
<div class="card"><b>{{pct .Error}}</b><span>top-1 error ({{wrong .}} wrong)</span></div>
<div class="card"><b>{{pct .Top5}}</b><span>top-5 accuracy</span></div>
<div class="card"><b>{{f4 .LogLoss}}</b><span>mean log-loss</span></div>
<div class="card"><b>{{f1 .ImgPerSec}}</b><span>images/s</span></div>
</div>
{{end}}
{{if .Matrix}}
<h2>Confusion matrix</h2>
<p>Rows: true class; columns: predicted. Colour: the share of the row's images (square-root scale, viridis).</p>
<table class="cm"><tr><th>true \ pred</th>{{range .Classes}}<th>{{.}}</th>{{end}}<th>n</th></tr>
{{range $t, $row := .Matrix}}<tr><th>{{index $.Classes $t}}</th>{{range $row}}<td style="{{.Style}}" title="{{.Title}}">{{.N}}</td>{{end}}<td>{{index $.Eval.ClassN $t}}</td></tr>
{{end}}</table>
{{end}}
{{if .Bars}}
<h2>Accuracy per class</h2>
<svg width="560" height="{{add .BarsHeight 4}}" role="img" aria-label="accuracy per class">
{{range .Bars}}<g><text x="0" y="{{add .Y 13}}">{{.Name}}</text><rect x="90" y="{{add .Y 2}}" width="{{.Width}}" height="14" fill="#21908c"><title>{{.Name}}: {{pct .Acc}} of {{.N}}</title></rect><text x="{{add .Width 96}}" y="{{add .Y 13}}">{{pct .Acc}}</text></g>
{{end}}</svg>
{{end}}
{{if .Worst}}
<h2>The 20 least accurate classes</h2>
<table><tr><th>class</th><th>accuracy</th><th>images</th></tr>{{range .Worst}}<tr><td>{{.Name}}</td><td>{{pct .Acc}}</td><td>{{.N}}</td></tr>{{end}}</table>
{{end}}
{{if .Confusions}}
<h2>Most frequent confusions</h2>
<table><tr><th>true</th><th>predicted</th><th>images</th><th>of the true class</th></tr>{{range .Confusions}}<tr><td>{{.True}}</td><td>{{.Pred}}</td><td>{{.N}}</td><td>{{pct .Share}}</td></tr>{{end}}</table>
{{end}}
{{if .Grid}}
<h2>Class maps</h2>
<p>One correctly classified image per class, then the last mlpconv's map for every class (upsampled, one colour scale per row). A map's mean is its class's logit; the label's map (framed) should be the brightest and lie on the object.</p>
<img src="{{.Grid}}" alt="class-map grid">
{{end}}
{{if .MistakeImg}}
<h2>Most confident mistakes</h2>
<table><tr><th>image</th><th>label</th><th>predicted</th><th>confidence</th></tr>{{range .Mistakes}}<tr><td>#{{.Index}}</td><td>{{name $.Classes .Label}}</td><td>{{name $.Classes .Pred}}</td><td>{{prob .Prob}}</td></tr>{{end}}</table>
<p>Image numbers count the evaluated rows in file order from 0. Their class maps (the label framed, the prediction underlined):</p>
<img src="{{.MistakeImg}}" alt="class maps of the most confident mistakes">
{{else if .Eval}}
<h2>Most confident mistakes</h2>
<p>None: every image was classified correctly.</p>
{{end}}
{{if .Curves}}
<h2>Training curves</h2>
<img src="{{.Curves}}" alt="training curves">
{{end}}
{{if .History}}
<table><tr><th>epoch</th><th>lr</th><th>train loss</th><th>train acc</th><th>val loss</th><th>val acc</th><th>alive</th><th>img/s</th><th>s</th></tr>
{{range .History}}<tr><td>{{.Epoch}}</td><td>{{printf "%.3g" .LR}}</td><td>{{f4 .TrainLoss}}</td><td>{{pct .TrainAcc}}</td><td>{{f4 .ValLoss}}</td><td>{{pct .ValAcc}}</td><td>{{pct .AliveFrac}}</td><td>{{printf "%.0f" .ImgPerSec}}</td><td>{{printf "%.1f" .Seconds}}</td></tr>
{{end}}</table>
{{end}}
<h2>Provenance</h2>
<table class="kv">{{range .Provenance}}<tr><td>{{.K}}</td><td class="mono">{{.V}}</td></tr>{{end}}</table>
</main>
<script>
// a picture that did not decode is an error on the console (checked by the tests)
window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (img) {
    if (!img.complete || img.naturalWidth === 0) console.error("report: image did not load: " + img.alt);
  });
});
</script>
</body>
</html>
`
