package origin

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRuleMatches(t *testing.T) {
	tests := []struct {
		rule, name string
		want       bool
	}{
		{"/static/*.css", "/static/app.css", true},
		{"/static/*.css", "/static/sub/app.css", false},
		{"/static/*.css", "/static/app.js", false},
		{"/*.html", "/index.html", true},
		{"/*.html", "/docs/index.html", false},
		{"/index.html", "/index.html", true},
		{"/img/", "/img/logo.png", true},
		{"/img/", "/img/a/b/c.png", true},
		{"/img/", "/img", false},
		{"/img/", "/imgs/logo.png", false},
		{"/v*/", "/v2/app.js", true},
		{"/v*/", "/x/app.js", false},
		{"/a/*/", "/a/b/c/d", true},
		{"/a/*/", "/a/b", false},
		{"/", "/anything/at/all", true},
	}
	for _, tt := range tests {
		t.Run(tt.rule+" "+tt.name, func(t *testing.T) {
			if got := (Rule{Path: tt.rule}).matches(tt.name); got != tt.want {
				t.Errorf("Rule{Path: %q}.matches(%q) = %v, want %v", tt.rule, tt.name, got, tt.want)
			}
		})
	}
}

func TestCacheControl(t *testing.T) {
	cfg := Config{
		Rules: []Rule{
			{Path: "/a/*.css", CacheControl: "first"},
			{Path: "/a/", CacheControl: "second"},
			{Path: "/a/*.js", CacheControl: "never"},
			{Path: "/none/", CacheControl: ""},
		},
		DefaultCacheControl: "default",
	}
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"/a/x.css", "first", true},
		{"/a/x.js", "second", true},
		{"/b/x.js", "default", true},
		{"/none/x", "", false},
	}
	for _, tt := range tests {
		if got, ok := cfg.cacheControl(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("cacheControl(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // each in the error; none for a valid config
	}{
		{"zero", Config{}, nil},
		{"default", DefaultConfig(), nil},
		{"full", Config{Root: dir, Rules: []Rule{{Path: "/[a-z]*/", CacheControl: "x"}, {Path: "/", CacheControl: ""}}, DefaultCacheControl: "no-store"}, nil},
		{"missing root", Config{Root: filepath.Join(dir, "missing")}, []string{"root: ", "want a directory"}},
		{"root is a file", Config{Root: file}, []string{`root: "` + file + `" is not a directory`}},
		{"relative rule", Config{Rules: []Rule{{Path: "static/", CacheControl: "x"}}}, []string{`rules[0].path: "static/", want a path starting with /`}},
		{"bad glob", Config{Rules: []Rule{{Path: "/a/", CacheControl: "x"}, {Path: "/[", CacheControl: "x"}}}, []string{`rules[1].path: bad glob "/["`}},
		{"newline in a rule", Config{Rules: []Rule{{Path: "/", CacheControl: "max-age=1\r\nSet-Cookie: x"}}}, []string{"rules[0].cache_control: ", "control character"}},
		{"newline in the default", Config{DefaultCacheControl: "no-store\n"}, []string{"default_cache_control: "}},
		{"every problem at once", Config{
			Root:                file,
			Rules:               []Rule{{Path: "x", CacheControl: "\x00"}, {Path: "/[", CacheControl: "ok"}},
			DefaultCacheControl: "\n",
		}, []string{"root: ", "rules[0].path", "rules[0].cache_control", "rules[1].path", "default_cache_control"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want an error containing %q", err, w)
				}
			}
			if _, err := New(tt.cfg); err == nil {
				t.Errorf("New(%+v) = nil error, want the Validate error", tt.cfg)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml string
		want       Config
		errs       []string
	}{
		{"empty", "", DefaultConfig(), nil},
		{"full", "root: " + dir + "\nrules:\n- path: /static/*.css\n  cache_control: max-age=1\n- {path: /img/, cache_control: ''}\ndefault_cache_control: no-cache\nlog_requests: false\n",
			Config{Root: dir, Rules: []Rule{{"/static/*.css", "max-age=1"}, {"/img/", ""}}, DefaultCacheControl: "no-cache"}, nil},
		{"unknown field", "root: " + dir + "\nrulez: []\n", Config{}, []string{"line 2", "rulez"}},
		{"unknown rule field", "rules:\n- path: /a/\n  cc: x\n", Config{}, []string{"line 3", "cc"}},
		{"wrong type", "rules: 5\n", Config{}, []string{"line 1"}},
		{"invalid rule", "rules:\n- {path: nope, cache_control: x}\n", Config{}, []string{"rules[0].path"}},
		{"logger is not a field", "logger: x\n", Config{}, []string{"logger"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.yaml))
			if len(tt.errs) == 0 {
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Errorf("ParseConfig(%q) = %+v, %v; want %+v", tt.yaml, got, err, tt.want)
				}
				return
			}
			for _, w := range tt.errs {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("ParseConfig(%q) = %v, want an error containing %q", tt.yaml, err, w)
				}
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "origin.yaml")
	if err := os.WriteFile(file, []byte("root: www\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file)
	if want := filepath.Join(dir, "www"); err != nil || cfg.Root != want {
		t.Errorf("LoadConfig(%q) = root %q, %v; want root %q", file, cfg.Root, err, want)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("root: nowhere\n"), 0o644)
	missing := filepath.Join(dir, "missing.yaml")
	for _, f := range []string{bad, missing} {
		if _, err := LoadConfig(f); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("LoadConfig(%q) = %v, want an error naming the file", f, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("rules:\n- {path: /static/*.css, cache_control: max-age=1}\n- {path: /v*/, cache_control: ''}\n"))
	f.Add([]byte("default_cache_control: no-store\nlog_requests: false\n"))
	f.Add([]byte("root: .\n"))
	f.Add([]byte("rules: [{path: '/[', cache_control: x}]\n"))
	f.Add([]byte("rulez: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseConfig(%q) passed, but Validate() = %v", data, err)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("ParseConfig(%q) passed, but New() = %v", data, err)
		}
		for _, name := range []string{"/", "/index.html", "/a/b/c.css"} {
			if cc, _ := s.cfg.cacheControl(name); checkHeaderValue(cc) != nil {
				t.Fatalf("cacheControl(%q) = %q, not a header value", name, cc)
			}
		}
		s.Close()
	})
}
