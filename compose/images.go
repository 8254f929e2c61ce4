package compose

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The lab's Dockerfile (compose/Dockerfile) starts from two ordinary Docker
// Hub names. MakeImages makes local images under those names for hosts
// that cannot pull (no registry, air-gapped labs), from Debian packages
// (debootstrap) and the host's own Go toolchain and module cache, so the
// same Dockerfile and the same `docker compose up` work there.
const (
	DebianImage = "debian:bookworm-slim"
	GoImage     = "golang:1.26-bookworm"
	// localLabel marks images MakeImages made, so a user can tell them
	// from pulled ones (docker image inspect).
	localLabel = "org.edgecdn.local-base"
	// modulesLabel on a local GoImage is the digest of the go.mod whose
	// modules its cache holds: with GOPROXY=off, a go.mod that has moved
	// on (a new dependency) needs a new image.
	modulesLabel = "org.edgecdn.go-mod"
)

// ImagesConfig configures MakeImages.
type ImagesConfig struct {
	// Root is the repository root (its go.mod names the modules the
	// golang image carries).
	Root string
	// Mirror is the Debian mirror debootstrap uses. If empty,
	// http://deb.debian.org/debian.
	Mirror string
	// Force remakes images that exist already.
	Force  bool
	Logger *slog.Logger // nil: slog.Default()
}

// MakeImages makes DebianImage (debootstrap --variant=minbase bookworm,
// imported) and GoImage (the same root file system plus the host's GOROOT
// at /usr/local/go and, in /go/pkg/mod/cache/download, every module of
// Root's go.mod, with GOPROXY=off), skipping those that exist unless
// cfg.Force; a local GoImage whose module cache was made for another
// go.mod is made again. It needs root, debootstrap and a Docker engine.
func MakeImages(ctx context.Context, cfg ImagesConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Mirror == "" {
		cfg.Mirror = "http://deb.debian.org/debian"
	}
	if _, err := DockerVersion(ctx); err != nil {
		return err
	}
	sum, err := goModDigest(cfg.Root)
	if err != nil {
		return err
	}
	var need []string
	for _, img := range []string{DebianImage, GoImage} {
		switch {
		case cfg.Force || !imageExists(ctx, img):
			need = append(need, img)
		case img == GoImage && imageLabel(ctx, img, localLabel) == "1" && imageLabel(ctx, img, modulesLabel) != sum:
			log.Info("the image's module cache was made for another go.mod: made again", "image", img)
			need = append(need, img)
		default:
			log.Info("image exists, kept (-force remakes it)", "image", img)
		}
	}
	if len(need) == 0 {
		return nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("images: debootstrap is not installed (apt-get install debootstrap)")
	}
	tmp, err := os.MkdirTemp("", "edgecdn-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	log.Info("debootstrap bookworm (minbase)", "mirror", cfg.Mirror)
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "bookworm", rootfs, cfg.Mirror).CombinedOutput()
	if err != nil {
		return fmt.Errorf("images: debootstrap bookworm %s: %w\n%s", cfg.Mirror, err, tail(out, 20))
	}
	for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		cleanDir(filepath.Join(rootfs, d))
	}
	for _, img := range need {
		var extra func(*tar.Writer) error
		changes := []string{`CMD ["bash"]`, "LABEL " + localLabel + "=1"}
		if img == GoImage {
			files, err := moduleFiles(ctx, cfg.Root)
			if err != nil {
				return err
			}
			goroot, err := goEnv(ctx, "GOROOT")
			if err != nil {
				return err
			}
			extra = func(tw *tar.Writer) error {
				if err := addTree(tw, goroot, "usr/local/go"); err != nil {
					return err
				}
				for dst, src := range files {
					if err := addFile(tw, src, dst); err != nil {
						return err
					}
				}
				return nil
			}
			changes = append(changes,
				"ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"ENV GOPATH=/go", "ENV GOPROXY=off", "ENV GOTOOLCHAIN=local", "WORKDIR /go",
				"LABEL "+modulesLabel+"="+sum)
		}
		log.Info("docker import", "image", img)
		if err := importImage(ctx, img, rootfs, extra, changes); err != nil {
			return fmt.Errorf("images: %s: %w", img, err)
		}
	}
	return nil
}

// importImage streams rootfs (and what extra adds) into docker import.
func importImage(ctx context.Context, name, rootfs string, extra func(*tar.Writer) error, changes []string) error {
	args := []string{"import"}
	for _, c := range changes {
		args = append(args, "--change", c)
	}
	args = append(args, "-", name)
	cmd := exec.CommandContext(ctx, "docker", args...)
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	werr := func() error {
		tw := tar.NewWriter(pw)
		if err := addTree(tw, rootfs, ""); err != nil {
			return err
		}
		if extra != nil {
			if err := extra(tw); err != nil {
				return err
			}
		}
		return tw.Close()
	}()
	pw.CloseWithError(werr)
	err := cmd.Wait()
	if werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("docker import: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// addTree writes the tree at src into tw under prefix, keeping modes,
// owners, symlinks and device nodes.
func addTree(tw *tar.Writer, src, prefix string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		name := filepath.ToSlash(filepath.Join(prefix, rel))
		if name == "." || name == "" {
			return nil
		}
		return addFile(tw, path, name)
	})
}

func addFile(tw *tar.Writer, path, name string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(path); err != nil {
			return err
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	h.Name = name
	if fi.IsDir() {
		h.Name += "/"
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

// moduleFiles maps image paths to the host's module cache files for every
// module of root's build list (go mod download -json all: .info, .mod
// and .zip, which is all a GOPROXY=off build reads).
func moduleFiles(ctx context.Context, root string) (map[string]string, error) {
	cache, err := goEnv(ctx, "GOMODCACHE")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "all")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("images: go mod download all (the modules the golang image carries): %w", err)
	}
	files := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m struct{ Path, Version, Info, GoMod, Zip, Error string }
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if m.Error != "" {
			return nil, fmt.Errorf("images: module %s@%s: %s", m.Path, m.Version, m.Error)
		}
		for _, f := range []string{m.Info, m.GoMod, m.Zip} {
			if f == "" {
				continue
			}
			rel, err := filepath.Rel(cache, f)
			if err != nil || strings.HasPrefix(rel, "..") {
				return nil, fmt.Errorf("images: %s is outside GOMODCACHE %s", f, cache)
			}
			files[filepath.ToSlash(filepath.Join("go/pkg/mod", rel))] = f
		}
	}
	// go mod download in the image also reads the go.mod of every module
	// in the graph (minimal version selection), zips or not.
	cmd = exec.CommandContext(ctx, "go", "mod", "graph")
	cmd.Dir = root
	graph, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("images: go mod graph: %w", err)
	}
	for _, mv := range strings.Fields(string(graph)) {
		path, ver, ok := strings.Cut(mv, "@")
		if !ok {
			continue
		}
		for _, ext := range []string{".mod", ".info"} {
			rel := filepath.Join("cache/download", escapeModule(path), "@v", ver+ext)
			if _, err := os.Stat(filepath.Join(cache, rel)); err == nil {
				files[filepath.ToSlash(filepath.Join("go/pkg/mod", rel))] = filepath.Join(cache, rel)
			}
		}
	}
	return files, nil
}

// escapeModule is the module cache's case encoding: "!" before the lower
// case of each upper case letter.
func escapeModule(path string) string {
	var b strings.Builder
	for _, r := range path {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func goEnv(ctx context.Context, name string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func imageExists(ctx context.Context, name string) bool {
	return exec.CommandContext(ctx, "docker", "image", "inspect", name).Run() == nil
}

// imageLabel is the value of an image's label, or "".
func imageLabel(ctx context.Context, name, label string) string {
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", `{{index .Config.Labels "`+label+`"}}`, name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// goModDigest identifies root's go.mod (its requirements, which decide
// the modules the image carries): the first 16 hex digits of its SHA-256.
func goModDigest(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:8]), nil
}

func cleanDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && e.Name() == "partial" {
			continue
		}
		if !e.IsDir() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
