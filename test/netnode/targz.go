package netnode

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// ReadTarGz returns the files of a .tar.gz whose every entry lies under dir/ (e.g. a
// tabbyctl node diags bundle's "tabby-diags"), by their names below it; t fails on a
// read error or an entry outside dir.
func ReadTarGz(t testing.TB, path, dir string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		name, ok := strings.CutPrefix(h.Name, dir+"/")
		if !ok {
			t.Fatalf("%s: %s is outside %s/", path, h.Name, dir)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, h.Name, err)
		}
		out[name] = b
	}
}
