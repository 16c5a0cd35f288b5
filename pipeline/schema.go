package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	nbio "github.com/ninbatch/ninbatch/io"
)

// Score column names, before --prefix.
const (
	colProbs    = "probs"
	colTop1     = "top1"
	colTop1Prob = "top1_prob"
	colLabel    = "top1_label"
	colTopK     = "topk"
	colMap      = "map"
	colModelID  = "model_id"
	colError    = "error"
)

// standardScoreColumns are the columns a ninbatch output holds when its
// metadata does not list them (outputs written before the list was kept).
var standardScoreColumns = []string{colProbs, colTop1, colTop1Prob, colLabel, colTopK, colModelID, colError}

var topkType = arrow.ListOf(arrow.StructOf(
	arrow.Field{Name: "class", Type: arrow.PrimitiveTypes.Int32},
	arrow.Field{Name: "prob", Type: arrow.PrimitiveTypes.Float32},
	arrow.Field{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
))

// scoreFields are the columns ninbatch adds, in order.
func (r *Runner) scoreFields(labels bool) []arrow.Field {
	p := r.Config.Prefix
	f := []arrow.Field{
		{Name: p + colProbs, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
		{Name: p + colTop1, Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		{Name: p + colTop1Prob, Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	}
	if labels {
		f = append(f, arrow.Field{Name: p + colLabel, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	if r.Config.TopK > 0 {
		f = append(f, arrow.Field{Name: p + colTopK, Type: topkType, Nullable: true})
	}
	if r.Config.Maps != "" {
		f = append(f, arrow.Field{Name: p + colMap, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true,
			Metadata: arrow.NewMetadata([]string{"ninbatch.map"}, []string{r.mapMeta()})})
	}
	return append(f,
		arrow.Field{Name: p + colModelID, Type: arrow.BinaryTypes.String},
		arrow.Field{Name: p + colError, Type: arrow.BinaryTypes.String, Nullable: true})
}

// outputSchema is every passthrough input column, then the score columns.
//
// Column names are compared without case (DuckDB's rule). An input column
// named like a score column is refused, except in a ninbatch output, whose
// own score columns (listed in its ninbatch.score_columns metadata) are
// replaced by the new scores: rescoring a scored file works, and --prefix
// keeps both.
func (r *Runner) outputSchema(p *prepared) error {
	scores := r.scoreFields(p.classNames != nil)
	taken := map[string]string{}
	for _, f := range scores {
		taken[strings.ToLower(f.Name)] = f.Name
	}
	own := map[string]bool{}
	if r.scoredBefore(p) {
		var names []string
		if s, ok := p.meta["ninbatch.score_columns"]; !ok || json.Unmarshal([]byte(s), &names) != nil {
			names = nil
			for _, n := range standardScoreColumns {
				names = append(names, r.Config.Prefix+n)
			}
		}
		for _, n := range names {
			own[n] = true
		}
	}
	var fields []arrow.Field
	p.pass = p.pass[:0]
	for i, f := range p.schema.Fields() {
		if i == p.image.Index {
			continue
		}
		if clash, ok := taken[strings.ToLower(f.Name)]; ok {
			if own[f.Name] {
				p.replaced = append(p.replaced, f.Name)
				continue
			}
			return &InputError{p.in.Path, fmt.Errorf("%s: column %q has the name of ninbatch's output column %q; pass --prefix (for example --prefix nb_) to name ninbatch's columns apart", p.in.Path, f.Name, clash)}
		}
		fields = append(fields, f)
		p.pass = append(p.pass, i)
	}
	p.outSchema = arrow.NewSchema(append(fields, scores...), nil)
	p.scoreNames = make([]string, len(scores))
	for i, f := range scores {
		p.scoreNames[i] = f.Name
	}
	return nil
}

// scoredBefore reports whether an input holds ninbatch scores: it is a
// ninbatch output (its metadata says so), or it has the probs and model_id
// columns a run writes (a scored file joined back to its images, which
// loses the metadata).
func (r *Runner) scoredBefore(p *prepared) bool {
	if _, ok := p.meta["ninbatch.model_id"]; ok {
		return true
	}
	probs, id := p.schema.FieldIndices(r.Config.Prefix+colProbs), p.schema.FieldIndices(r.Config.Prefix+colModelID)
	if len(probs) != 1 || len(id) != 1 {
		return false
	}
	lt, ok := p.schema.Field(probs[0]).Type.(arrow.ListLikeType)
	return ok && arrow.TypeEqual(lt.Elem(), arrow.PrimitiveTypes.Float32) &&
		arrow.IsBaseBinary(p.schema.Field(id[0]).Type.ID())
}

// outputMetadata is the output file's key/value metadata: the input's own
// (the Hugging Face features without the image column and replaced
// scores; not the Arrow schema or pandas index, which describe the input's
// columns), then ninbatch's.
func (r *Runner) outputMetadata(p *prepared) map[string]string {
	md := map[string]string{}
	for k, v := range p.meta {
		if k == "ARROW:schema" || k == "pandas" || strings.HasPrefix(k, "ninbatch.") {
			continue
		}
		md[k] = v
	}
	if hf, ok := md["huggingface"]; ok {
		md["huggingface"] = dropFeatures(hf, append([]string{p.image.Name}, p.replaced...))
	}
	names, _ := json.Marshal(p.scoreNames)
	md["ninbatch.model_id"] = r.Model.ID
	md["ninbatch.version"] = r.Config.Version
	md["ninbatch.isa"] = r.Net.ISA()
	md["ninbatch.precision"] = r.Net.Precision()
	md["ninbatch.input"] = p.in.Abs
	md["ninbatch.input_fingerprint"] = p.fp
	md["ninbatch.score_columns"] = string(names)
	if r.Config.Maps != "" {
		md["ninbatch.map"] = r.mapMeta()
	}
	return md
}

// mapMeta describes the map column (in its field's metadata and the
// file's): its column, shape, which class, and where its pixels sit on the
// input (pixel i centred on input pixel offset + stride·i).
func (r *Runner) mapMeta() string {
	d := r.Net.MapDims()
	stride, offset, _ := r.Model.Spec.MapGrid()
	b, _ := json.Marshal(struct {
		Column string  `json:"column"`
		H      int     `json:"h"`
		W      int     `json:"w"`
		Class  string  `json:"class"`
		Head   string  `json:"head"`
		Stride float64 `json:"stride"`
		Offset float64 `json:"offset"`
	}{r.Config.Prefix + colMap, d.H, d.W, r.Config.Maps, r.Model.Spec.HeadKind(), stride, offset})
	return string(b)
}

// dropFeatures removes columns from Hugging Face metadata's info.features,
// leaving everything else (ClassLabel names among it) as it was; metadata
// it cannot parse is kept unchanged.
func dropFeatures(hf string, cols []string) string {
	var doc map[string]any
	if json.Unmarshal([]byte(hf), &doc) != nil {
		return hf
	}
	info, _ := doc["info"].(map[string]any)
	feats, _ := info["features"].(map[string]any)
	if feats == nil {
		return hf
	}
	for _, c := range cols {
		delete(feats, c)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return hf
	}
	return string(b)
}

// classNamesFor: the model's class names, else the input's Hugging Face
// ClassLabel names for a "label" column when they fit the model.
func (r *Runner) classNamesFor(meta map[string]string) []string {
	if r.Model.Classes != nil {
		return r.Model.Classes
	}
	names := nbio.ClassNames(meta, "label")
	if len(names) != r.Net.Classes() {
		return nil
	}
	return names
}
