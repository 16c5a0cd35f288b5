package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/ninbatch/ninbatch/nin"
)

// benchServer answers timing requests on stdin/stdout, one JSON object per
// line, so an outside harness (scripts/bench_peers.py) can interleave
// ninbatch's repetitions with PyTorch's and ONNX Runtime's in one run:
//
//	{"cmd":"calib","preset":"nin-cifar10","batch":64,"threads":2,"target":0.15} -> {"inner":N}
//	{"cmd":"time", "preset":"nin-cifar10","batch":64,"threads":2,"inner":N}       -> {"sec":S}
//
// Optional "tuning": a nin.Tuning object; "precision": fp32 (default) or
// bf16. Timing happens in-process.
type benchServer struct {
	nets map[string]*servedNet
}

type servedNet struct {
	net   *nin.Net
	x     []float32
	probs []float32
	batch int
}

type benchRequest struct {
	Cmd       string     `json:"cmd"`
	Preset    string     `json:"preset"`
	Batch     int        `json:"batch"`
	Threads   int        `json:"threads"`
	Tuning    nin.Tuning `json:"tuning"`
	Precision string     `json:"precision"`
	Target    float64    `json:"target"`
	Inner     int        `json:"inner"`
}

func (s *benchServer) get(r benchRequest) (*servedNet, error) {
	key := fmt.Sprintf("%s/%d/%d/%s/%+v", r.Preset, r.Batch, r.Threads, r.Precision, r.Tuning)
	if n, ok := s.nets[key]; ok {
		return n, nil
	}
	m, _, err := modelFrom(nil, "", r.Preset, 1)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(7, 7))
	x := make([]float32, r.Batch*m.Spec.Input.Len())
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	if r.Precision == nin.PrecisionInt8 {
		if m, err = nin.CalibrateOn(m, x, r.Batch); err != nil {
			return nil, err
		}
	}
	net, err := nin.NewNet(m, nin.Options{MaxBatch: r.Batch, Threads: r.Threads, Precision: r.Precision, Tuning: r.Tuning})
	if err != nil {
		return nil, err
	}
	sn := &servedNet{net: net, x: x, probs: make([]float32, r.Batch*net.Classes()), batch: r.Batch}
	s.nets[key] = sn
	return sn, nil
}

func (sn *servedNet) time(n int) (float64, error) {
	t := time.Now()
	for i := 0; i < n; i++ {
		if err := sn.net.Forward(sn.x, sn.batch, sn.probs, nil); err != nil {
			return 0, err
		}
	}
	return time.Since(t).Seconds(), nil
}

func serveBench(in io.Reader, out io.Writer) error {
	s := &benchServer{nets: map[string]*servedNet{}}
	defer func() {
		for _, n := range s.nets {
			n.net.Close()
		}
	}()
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		var r benchRequest
		resp := map[string]any{}
		err := json.Unmarshal(sc.Bytes(), &r)
		var sn *servedNet
		if err == nil {
			sn, err = s.get(r)
		}
		if err == nil {
			switch r.Cmd {
			case "calib":
				var one float64
				if one, err = sn.time(1); err == nil { // warm-up
					if one, err = sn.time(1); err == nil {
						inner := 1
						if one < r.Target {
							inner = int(r.Target/max(one, 1e-6)) + 1
						}
						resp["inner"] = inner
					}
				}
			case "time":
				var sec float64
				if sec, err = sn.time(max(1, r.Inner)); err == nil {
					resp["sec"] = sec
				}
			default:
				err = fmt.Errorf("unknown cmd %q", r.Cmd)
			}
		}
		if err != nil {
			resp = map[string]any{"error": err.Error()}
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
	return sc.Err()
}
