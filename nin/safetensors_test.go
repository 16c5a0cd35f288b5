package nin

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// withHeader rebuilds a model file with its header changed by edit.
func withHeader(t *testing.T, file []byte, edit func(h string) string) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint64(file[:8])
	h := edit(string(file[8 : 8+n]))
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint64(len(h)))
	out.WriteString(h)
	out.Write(file[8+n:])
	return out.Bytes()
}

// TestDecodeRejectsWhatSafetensorsRejects: one case per rule of the
// reference safetensors reader that Go's encoding/json would let through.
// Each edited file still satisfies everything else ninbatch checks.
func TestDecodeRejectsWhatSafetensorsRejects(t *testing.T) {
	s, _ := Preset("nin-mnist")
	m, _ := NewModel(s)
	m.Params.InitGaussian(1)
	file := encodeModel(t, m)
	if _, err := Decode(bytes.NewReader(file), int64(len(file))); err != nil {
		t.Fatal(err)
	}
	first := `"mlpconv1.0.weight":{`
	cases := []struct {
		name, want string
		edit       func(string) string
	}{
		{"invalid UTF-8 in a metadata value", "UTF-8", func(h string) string {
			return strings.Replace(h, `"format":"ninbatch.nin/1"`, "\"format\":\"ninbatch.nin/1\",\"note\":\"\xff\xfe\"", 1)
		}},
		{"__metadata__ twice", `"__metadata__" appears twice`, func(h string) string {
			return strings.Replace(h, `{"__metadata__":`, `{"__metadata__":{"format":"x"},"__metadata__":`, 1)
		}},
		{"dtype twice in one entry", `"dtype" appears twice`, func(h string) string {
			return strings.Replace(h, first, first+`"dtype":"F16",`, 1)
		}},
		{"DTYPE for dtype", `no "dtype"`, func(h string) string {
			i := strings.Index(h, first)
			return h[:i] + strings.Replace(h[i:], `"dtype"`, `"DTYPE"`, 1)
		}},
		{"header not starting with {", "start with '{'", func(h string) string { return " " + h }},
		{"non-string metadata value", "not a string", func(h string) string {
			return strings.Replace(h, `"format":"ninbatch.nin/1"`, `"format":"ninbatch.nin/1","epochs":3`, 1)
		}},
	}
	for _, c := range cases {
		b := withHeader(t, file, c.edit)
		_, err := Decode(bytes.NewReader(b), int64(len(b)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (want an error with %q)", c.name, err, c.want)
		}
	}
	// the header limit is the reference's 100,000,000 bytes, not 100 MiB
	big := append([]byte(nil), file...)
	binary.LittleEndian.PutUint64(big[:8], 100_000_001)
	if _, err := Decode(bytes.NewReader(big), 200_000_000); err == nil || !strings.Contains(err.Error(), "exceeds the 100000000-byte limit") {
		t.Errorf("header of 100,000,001 bytes: %v", err)
	}
	// trailing spaces (safetensors pads headers to 8 bytes) stay fine
	b := withHeader(t, file, func(h string) string { return h + "    " })
	if _, err := Decode(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Errorf("padded header: %v", err)
	}
}
