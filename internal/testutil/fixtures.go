package testutil

import "math/rand/v2"

// TinySpecJSON is a two-block NIN small enough to train in a test: 12×12
// gray input, 4 classes (the quadrants of Quadrants).
const TinySpecJSON = `{"name":"tiny","input":{"h":12,"w":12,"c":1},"pooling":"ceil","no_final_relu":true,"blocks":[
 {"kernel":3,"stride":1,"pad":1,"channels":[8,6],"pool":{"type":"max","size":3,"stride":2},"dropout":0.5},
 {"kernel":3,"stride":1,"pad":1,"channels":[8,4]}]}`

// QuadrantClasses names Quadrants' labels.
var QuadrantClasses = []string{"tl", "tr", "bl", "br"}

// Quadrants is a learnable 4-class task for TinySpecJSON: n 12×12 gray
// images (n×144 bytes), image i of class i%4 with that quadrant bright,
// plus noise; the same seed gives the same images.
func Quadrants(n int, seed uint64) (pix []uint8, labels []int32) {
	r := rand.New(rand.NewPCG(seed, 1))
	pix, labels = make([]uint8, n*144), make([]int32, n)
	for i := 0; i < n; i++ {
		c := i % 4
		labels[i] = int32(c)
		for y := 0; y < 12; y++ {
			for x := 0; x < 12; x++ {
				v := r.IntN(60)
				if (y < 6) == (c < 2) && (x < 6) == (c%2 == 0) {
					v += 150
				}
				pix[i*144+y*12+x] = uint8(v)
			}
		}
	}
	return pix, labels
}

// RandSlice is n standard-normal float32s.
func RandSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}
