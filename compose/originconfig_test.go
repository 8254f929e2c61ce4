package compose

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/origin"
)

// TestLabOriginConfig serves the demo site with the lab origin's
// configuration (compose/lab/origin.yaml, which the origin service runs
// with) and checks each kind of file's Cache-Control and validators: the
// page short and revalidated, images a day, the font a year, the account
// private, the clock seconds.
func TestLabOriginConfig(t *testing.T) {
	cfg, err := origin.LoadConfig("lab/origin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Root = filepath.Join("..", "origin", "testdata", "www")
	cfg.LogRequests = false
	s, err := origin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, tt := range []struct{ path, cc string }{
		{"/", "public, max-age=30, stale-while-revalidate=60"},
		{"/static/app.css", "public, max-age=300"},
		{"/static/app.js", "public, max-age=300"},
		{"/static/img/hero-1600.jpg", "public, max-age=86400"},
		{"/static/img/tile-eu.png", "public, max-age=86400"},
		{"/static/font/dejavu-sans-bold-latin.woff2", "public, max-age=31536000, immutable"},
		{"/account/me.json", "private, max-age=60"},
		{"/clock", "public, max-age="},
	} {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Cache-Control"), tt.cc) ||
			resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
			t.Errorf("GET %s = %d, Cache-Control %q, ETag %q, Last-Modified %q; want 200, %q and both validators", tt.path, resp.StatusCode,
				resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), tt.cc)
		}
	}
	topo, err := Load(t.Context(), "../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := topo.Host("origin")
	if conf, _ := host.Flag("config"); conf != "/etc/edgecdn/origin.yaml" {
		t.Errorf("the origin service runs with -config %q, want /etc/edgecdn/origin.yaml (compose/lab/origin.yaml)", conf)
	}
}

var demoRef = regexp.MustCompile(`(?:src|href)="([^"]*)"|url\("?([^")]*)"?\)|fetch\("([^"]*)"`)

// TestDemoSiteSelfContained: every file the demo page refers to (HTML
// src and href, CSS url(), the script's fetch) is on the lab's origin; no
// URL leaves it (the lab has no Internet).
func TestDemoSiteSelfContained(t *testing.T) {
	www := filepath.Join("..", "origin", "testdata", "www")
	refs := 0
	for _, f := range []string{"index.html", "static/app.css", "static/app.js"} {
		b, err := os.ReadFile(filepath.Join(www, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range demoRef.FindAllStringSubmatch(string(b), -1) {
			ref := m[1] + m[2] + m[3]
			switch {
			case strings.HasPrefix(ref, "#"):
				continue
			case strings.Contains(ref, "//") || !strings.HasPrefix(ref, "/"):
				t.Errorf("%s refers to %q, want a path on this site (no external URLs)", f, ref)
				continue
			case ref == "/clock": // made by the origin
				refs++
				continue
			}
			if _, err := os.Stat(filepath.Join(www, ref)); err != nil {
				t.Errorf("%s refers to %s: %v", f, ref, err)
			}
			refs++
		}
	}
	if refs < 10 {
		t.Errorf("found %d references in the demo page, want its CSS, script, font, images, clock and account", refs)
	}
}
