package origin_test

import (
	"bytes"
	"flag"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the demo site's generated images in testdata/www/static/img")

// demoImage is one generated image of the demo site.
type demoImage struct {
	file string // under testdata/www/static/img
	draw func() image.Image
}

// demoImages are the demo site's images, drawn from nothing but
// arithmetic, so they are the same on every run: a landscape at two sizes
// (JPEG), three patterned tiles and an icon (PNG).
func demoImages() []demoImage {
	return []demoImage{
		{"hero-1600.jpg", func() image.Image { return landscape(1600, 800) }},
		{"hero-800.jpg", func() image.Image { return landscape(800, 400) }},
		{"tile-na.png", func() image.Image { return tile(240, 160, color.RGBA{0x22, 0xaa, 0x77, 255}, 0) }},
		{"tile-eu.png", func() image.Image { return tile(240, 160, color.RGBA{0x33, 0x66, 0xcc, 255}, 1) }},
		{"tile-ap.png", func() image.Image { return tile(240, 160, color.RGBA{0xee, 0x99, 0x22, 255}, 2) }},
		{"icon-64.png", func() image.Image { return icon(64) }},
	}
}

// landscape is a sky gradient, a sun and three ridges of hills.
func landscape(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fw, fh := float64(w), float64(h)
	for y := range h {
		for x := range w {
			fx, fy := float64(x)/fw, float64(y)/fh
			// Sky: deep blue at the top to pale orange at the horizon.
			r, g, b := 40+200*fy, 90+120*fy, 200-40*fy
			if d := math.Hypot(fx-0.72, (fy-0.35)*fh/fw); d < 0.06 {
				r, g, b = 255, 230, 150
			} else if d < 0.12 {
				k := (0.12 - d) / 0.06
				r, g, b = r+(255-r)*k*0.5, g+(220-g)*k*0.5, b+(150-b)*k*0.5
			}
			for i, ridge := range []struct{ base, amp, freq, phase, shade float64 }{
				{0.55, 0.08, 3.1, 0.4, 0.55}, {0.68, 0.06, 5.3, 1.9, 0.38}, {0.82, 0.05, 8.7, 3.3, 0.22},
			} {
				top := ridge.base + ridge.amp*math.Sin(fx*ridge.freq*math.Pi+ridge.phase) + 0.02*math.Sin(fx*41+float64(i))
				if fy > top {
					r, g, b = 30+120*ridge.shade, 70+150*ridge.shade, 40+60*ridge.shade
					// Texture: light stripes along the slope.
					if int(fx*fw/7+fy*fh/11)%5 == 0 {
						r, g, b = r*1.1, g*1.1, b*1.1
					}
				}
			}
			img.SetRGBA(x, y, color.RGBA{clamp(r), clamp(g), clamp(b), 255})
		}
	}
	return img
}

// tile is a pattern of rings (kind 0), a checkerboard (1) or diagonal
// stripes (2) in one colour on white.
func tile(w, h int, c color.RGBA, kind int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			on := false
			switch kind {
			case 0:
				on = int(math.Hypot(float64(x-w/2), float64(y-h/2)))/10%2 == 0
			case 1:
				on = (x/20+y/20)%2 == 0
			default:
				on = (x+y)/14%2 == 0
			}
			if on {
				img.SetRGBA(x, y, c)
			} else {
				img.SetRGBA(x, y, color.RGBA{255, 255, 255, 255})
			}
		}
	}
	return img
}

// icon is three dots, the three regions, on a dark disc with a
// transparent corner.
func icon(n int) image.Image {
	img := image.NewNRGBA(image.Rect(0, 0, n, n))
	c := float64(n) / 2
	dots := []struct {
		x, y float64
		col  color.NRGBA
	}{{0.5, 0.3, color.NRGBA{0x22, 0xaa, 0x77, 255}}, {0.3, 0.65, color.NRGBA{0x33, 0x66, 0xcc, 255}}, {0.7, 0.65, color.NRGBA{0xee, 0x99, 0x22, 255}}}
	for y := range n {
		for x := range n {
			fx, fy := float64(x)+0.5, float64(y)+0.5
			if math.Hypot(fx-c, fy-c) > c {
				continue // transparent
			}
			px := color.NRGBA{0x1b, 0x24, 0x33, 255}
			for _, d := range dots {
				if math.Hypot(fx-d.x*float64(n), fy-d.y*float64(n)) < float64(n)*0.13 {
					px = d.col
				}
			}
			img.SetNRGBA(x, y, px)
		}
	}
	return img
}

func clamp(v float64) uint8 { return uint8(max(0, min(255, v))) }

func encode(t *testing.T, file string, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	if strings.HasSuffix(file, ".jpg") {
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 82})
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&b, img)
	}
	if err != nil {
		t.Fatalf("encode %s: %v", file, err)
	}
	return b.Bytes()
}

// TestDemoImages checks the demo site's committed images against what
// demoImages draws: PNGs pixel for pixel, JPEGs (whose encoder may change
// between Go releases) by size and closeness. go test ./origin -run
// TestDemoImages -update rewrites them.
func TestDemoImages(t *testing.T) {
	dir := filepath.Join("testdata", "www", "static", "img")
	for _, d := range demoImages() {
		want := d.draw()
		path := filepath.Join(dir, d.file)
		if *update {
			if err := os.WriteFile(path, encode(t, d.file, want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("%v (go test ./origin -run TestDemoImages -update makes it)", err)
		}
		got, format, err := image.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got.Bounds() != want.Bounds() {
			t.Errorf("%s: %v, want %v", path, got.Bounds(), want.Bounds())
			continue
		}
		// Mean absolute difference per channel, 0..255.
		var diff float64
		b := want.Bounds()
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r1, g1, b1, a1 := got.At(x, y).RGBA()
				r2, g2, b2, a2 := want.At(x, y).RGBA()
				for _, p := range [][2]uint32{{r1, r2}, {g1, g2}, {b1, b2}, {a1, a2}} {
					diff += math.Abs(float64(p[0]>>8) - float64(p[1]>>8))
				}
			}
		}
		diff /= float64(4 * b.Dx() * b.Dy())
		limit := 0.0
		if format == "jpeg" {
			limit = 4
		}
		if diff > limit {
			t.Errorf("%s differs from what demoImages draws by %.2f a channel on average, want <= %v (-update rewrites it)", path, diff, limit)
		}
	}
}
