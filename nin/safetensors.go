package nin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// maxHeaderSize is the reference safetensors reader's header limit
// (MAX_HEADER_SIZE = 100_000_000 bytes).
const maxHeaderSize = 100_000_000

// checkHeader rejects what the reference safetensors reader rejects, so a
// .nin that loads here also loads in Python: a header that is not UTF-8
// or does not start with '{', a key twice in one object (__metadata__, or
// dtype in one tensor entry: serde refuses duplicate fields), a tensor
// entry without its exactly spelled dtype, shape and data_offsets (Go's
// json matches field names without case; serde does not), and
// __metadata__ values that are not strings.
func checkHeader(hb []byte) error {
	if !utf8.Valid(hb) {
		return errors.New("header is not valid UTF-8")
	}
	if len(hb) == 0 || hb[0] != '{' {
		return errors.New("header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(hb))
	dec.UseNumber()
	top, err := readObject(dec, "header", 0)
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("header has data after its JSON object")
	}
	for name, v := range top {
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("header entry %q is not a JSON object", name)
		}
		if name == "__metadata__" {
			for k, mv := range obj {
				if _, ok := mv.(string); !ok {
					return fmt.Errorf("__metadata__ %q is not a string", k)
				}
			}
			continue
		}
		for _, k := range []string{"dtype", "shape", "data_offsets"} {
			if _, ok := obj[k]; !ok {
				return fmt.Errorf("tensor %s: no %q field", name, k)
			}
		}
	}
	return nil
}

// readObject reads one JSON object (its '{' not yet read) into a map,
// refusing duplicate keys at any depth; nested values are read whole.
func readObject(dec *json.Decoder, where string, depth int) (map[string]any, error) {
	if depth > 64 {
		return nil, fmt.Errorf("%s: nested too deeply", where)
	}
	t, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%s is not a JSON object: %w", where, err)
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("%s: not a JSON object", where)
	}
	out := map[string]any{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s is not a JSON object: %w", where, err)
		}
		k := kt.(string)
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s: key %q appears twice", where, k)
		}
		v, err := readValue(dec, where+"."+k, depth+1)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, fmt.Errorf("%s is not a JSON object: %w", where, err)
	}
	return out, nil
}

func readValue(dec *json.Decoder, where string, depth int) (any, error) {
	if depth > 64 {
		return nil, fmt.Errorf("%s: nested too deeply", where)
	}
	// peek: objects and arrays are walked for duplicate keys
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object: %w", where, err)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("%s: empty value", where)
	}
	switch raw[0] {
	case '{':
		sub := json.NewDecoder(bytes.NewReader(raw))
		sub.UseNumber()
		return readObject(sub, where, depth)
	case '[':
		sub := json.NewDecoder(bytes.NewReader(raw))
		sub.UseNumber()
		sub.Token() // '['
		var arr []any
		for sub.More() {
			v, err := readValue(sub, where+"[]", depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return v, nil
}
