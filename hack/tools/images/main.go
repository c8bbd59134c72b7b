// Command images assembles an OCI image index from static Go binaries, one image per platform,
// without Docker, and writes it as an OCI archive (a tarred OCI image layout) that
// `ctr images import` and any registry client read. hack/images.sh runs it for `make images`.
//
// Each image has two layers: a base (an /etc/passwd and /etc/group naming the non-root user, a CA
// bundle at /etc/ssl/certs/ca-certificates.crt, a world-writable /tmp) and the binary. The config
// runs the binary as that user. File times are fixed, so the same inputs give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// binaries collects -binary os/arch=path flags.
type binaries map[string]string

func (b binaries) String() string { return fmt.Sprint(map[string]string(b)) }

func (b binaries) Set(v string) error {
	platform, path, ok := strings.Cut(v, "=")
	if !ok || !strings.Contains(platform, "/") {
		return fmt.Errorf("want os/arch=path, got %q", v)
	}
	b[platform] = path
	return nil
}

func main() {
	bins := binaries{}
	ref := flag.String("ref", "", "image reference the archive names, repository:tag (never :latest)")
	out := flag.String("out", "", "OCI archive to write")
	caBundle := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to install; empty for none")
	user := flag.Int("uid", 65532, "numeric user and group the image runs as")
	flag.Var(bins, "binary", "os/arch=path of the static binary for that platform (repeatable)")
	flag.Parse()
	if err := run(*ref, *out, *caBundle, *user, bins); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ref, out, caBundle string, uid int, bins binaries) error {
	_, tag, ok := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("-ref %q has no tag", ref)
	case tag == "latest":
		return fmt.Errorf("-ref %q: images are versioned, never :latest", ref)
	case out == "" || len(bins) == 0:
		return fmt.Errorf("-out and at least one -binary are required")
	}
	var ca []byte
	if caBundle != "" {
		var err error
		if ca, err = os.ReadFile(caBundle); err != nil {
			return fmt.Errorf("reading the CA bundle: %w", err)
		}
	}
	base, err := baseLayer(uid, ca)
	if err != nil {
		return err
	}

	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for platform, path := range bins {
		img, err := image(platform, path, base, uid)
		if err != nil {
			return fmt.Errorf("%s: %w", platform, err)
		}
		osName, arch, _ := strings.Cut(platform, "/")
		index = mutate.AppendManifests(index, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}},
		})
	}
	return writeArchive(out, ref, tag, index)
}

// image is the image of one platform: the base layer, the binary, a config running it.
func image(platform, path string, base v1.Layer, uid int) (v1.Image, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	entry := "/usr/local/bin/" + filepath.Base(path)
	binLayer, err := layer([]file{{name: entry, mode: 0o555, data: bin}})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), base, binLayer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	osName, arch, _ := strings.Cut(platform, "/")
	cfg.OS, cfg.Architecture = osName, arch
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config.Entrypoint = []string{entry}
	cfg.Config.User = fmt.Sprintf("%d:%d", uid, uid)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
	}
	return mutate.ConfigFile(img, cfg)
}

type file struct {
	name string
	mode int64
	data []byte // nil for a directory
}

// baseLayer holds the user database, the CA bundle and /tmp.
func baseLayer(uid int, ca []byte) (v1.Layer, error) {
	id := strconv.Itoa(uid)
	files := []file{
		{name: "/etc", mode: 0o755},
		{name: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:" + id + ":" + id + ":nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:" + id + ":\n")},
		{name: "/home", mode: 0o755},
		{name: "/home/nonroot", mode: 0o700},
		{name: "/tmp", mode: 0o1777},
	}
	if ca != nil {
		files = append(files, file{name: "/etc/ssl", mode: 0o755}, file{name: "/etc/ssl/certs", mode: 0o755},
			file{name: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca})
	}
	return layer(files, fileOwner{"/home/nonroot": uid})
}

// fileOwner gives a path an owner other than root.
type fileOwner map[string]int

// layer is an uncompressed-then-gzipped tar of files, parents before children.
func layer(files []file, owners ...fileOwner) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: strings.TrimPrefix(f.name, "/"), Mode: f.mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		for _, o := range owners {
			if id, ok := o[f.name]; ok {
				hdr.Uid, hdr.Gid = id, id
			}
		}
		if f.data == nil {
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// writeArchive writes index as an OCI image layout named ref (containerd's name annotation) and
// tag (the OCI ref name), tarred into out.
func writeArchive(out, ref, tag string, index v1.ImageIndex) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(index, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// tarDir tars the files under dir (relative names, fixed times) into out.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = filepath.ToSlash(rel), time.Unix(0, 0), 0, 0, "", ""
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
