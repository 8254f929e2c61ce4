package origin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config configures a Server. The zero value serves no files, only
// generated objects, health and stats, and logs nothing.
type Config struct {
	// Root is the directory served. If empty, the origin serves no files:
	// only /gen, /healthz and /_origin/stats answer, everything else is 404.
	Root string `yaml:"root"`

	// Rules choose a file's Cache-Control by its path under Root; the first
	// rule that matches wins. If empty, every file gets
	// DefaultCacheControl.
	Rules []Rule `yaml:"rules"`

	// DefaultCacheControl is the Cache-Control of files no rule matches.
	// If empty, "public, max-age=60". For files with no Cache-Control at
	// all, end Rules with {Path: "/", CacheControl: ""}.
	DefaultCacheControl string `yaml:"default_cache_control"`

	// LogRequests logs one line per request when it ends. If false, no
	// request is logged. DefaultConfig sets it.
	LogRequests bool `yaml:"log_requests"`

	// Logger receives request lines and server errors. If nil,
	// slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Rule sets the Cache-Control of the files whose path matches Path.
type Rule struct {
	// Path is matched against the served file's path from Root, with a
	// leading slash (a request for /docs/ serves /docs/index.html). It is
	// either a path.Match glob such as "/static/*.css" (a * does not cross
	// a /), or, when it ends in "/", a prefix that matches everything
	// under it, such as "/img/" or "/v*/" (globs allowed in its segments).
	Path string `yaml:"path"`

	// CacheControl is the header's value. If empty, matching files are
	// served without Cache-Control, so caches fall back to heuristic
	// freshness from Last-Modified.
	CacheControl string `yaml:"cache_control"`
}

// defaultCacheControl is DefaultCacheControl when the field is empty.
const defaultCacheControl = "public, max-age=60"

// DefaultConfig returns the configuration the origin program starts from:
// no root, no rules, "public, max-age=60", request logging on.
func DefaultConfig() Config {
	return Config{DefaultCacheControl: defaultCacheControl, LogRequests: true}
}

// ParseConfig decodes YAML over DefaultConfig and validates the result.
// Unknown fields are errors naming the field and its line. A relative Root
// is relative to the working directory.
func ParseConfig(data []byte) (Config, error) {
	cfg, err := decodeConfig(data)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LoadConfig reads a YAML file as ParseConfig does, except that a relative
// Root is taken relative to the file's directory.
func LoadConfig(file string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := decodeConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", file, err)
	}
	if cfg.Root != "" && !filepath.IsAbs(cfg.Root) {
		cfg.Root = filepath.Join(filepath.Dir(file), cfg.Root)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", file, err)
	}
	return cfg, nil
}

func decodeConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	return cfg, nil
}

// Validate reports every problem at once, each naming its field as the
// YAML spells it, such as `rules[2].path: bad glob "[": ...`. It checks that
// Root is a directory.
func (c Config) Validate() error {
	var errs []error
	if c.Root != "" {
		if fi, err := os.Stat(c.Root); err != nil {
			errs = append(errs, fmt.Errorf("root: %w; want a directory to serve", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("root: %q is not a directory; want a directory to serve", c.Root))
		}
	}
	for i, r := range c.Rules {
		switch {
		case !strings.HasPrefix(r.Path, "/"):
			errs = append(errs, fmt.Errorf("rules[%d].path: %q, want a path starting with /, such as /static/*.css or /img/", i, r.Path))
		default:
			if _, err := path.Match(r.Path, "/"); err != nil {
				errs = append(errs, fmt.Errorf("rules[%d].path: bad glob %q: %w", i, r.Path, err))
			}
		}
		if err := checkHeaderValue(r.CacheControl); err != nil {
			errs = append(errs, fmt.Errorf("rules[%d].cache_control: %w", i, err))
		}
	}
	if err := checkHeaderValue(c.DefaultCacheControl); err != nil {
		errs = append(errs, fmt.Errorf("default_cache_control: %w", err))
	}
	return errors.Join(errs...)
}

// checkHeaderValue refuses values net/http would mangle.
func checkHeaderValue(v string) error {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("%q holds control character %q, want a header value such as \"public, max-age=60\"", v, c)
		}
	}
	return nil
}

// cacheControl returns the Cache-Control for the file at name (a clean
// path with a leading slash) and whether to send one at all.
func (c *Config) cacheControl(name string) (string, bool) {
	for _, r := range c.Rules {
		if r.matches(name) {
			return r.CacheControl, r.CacheControl != ""
		}
	}
	return c.DefaultCacheControl, c.DefaultCacheControl != ""
}

func (r Rule) matches(name string) bool {
	if !strings.HasSuffix(r.Path, "/") {
		ok, _ := path.Match(r.Path, name)
		return ok
	}
	// A prefix: match it against as many leading segments of name.
	segs := strings.Count(r.Path, "/")
	end := 0
	for range segs {
		i := strings.IndexByte(name[end:], '/')
		if i < 0 {
			return false
		}
		end += i + 1
	}
	ok, _ := path.Match(r.Path, name[:end])
	return ok
}
