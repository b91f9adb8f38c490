package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berthd/berth/container"
)

func TestParseBind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want container.Mount
		err  bool
	}{
		{"/srv/data", container.Mount{Type: "bind", Source: "/srv/data", Target: "/srv/data"}, false},
		{"/srv/data:/data", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data"}, false},
		{"/srv/data:/data:ro", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data", ReadOnly: true}, false},
		{"/srv/data:/data:rw", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data"}, false},
		{"/srv/data:/data:rx", container.Mount{}, true},
		{"/srv/data:data", container.Mount{}, true},
		{"/a:/b:ro:x", container.Mount{}, true},
	} {
		got, err := parseBind(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("parseBind(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512M": 512 << 20, "2G": 2 << 30, "1.5G": 3 << 29, "1048576": 1 << 20, "64k": 64 << 10, "1GB": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "lots", "0"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestMachineID(t *testing.T) {
	dir := t.TempDir()
	a, err := machineID("", dir, "web")
	if err != nil || len(a) != 32 {
		t.Fatal(a, err)
	}
	if b, _ := machineID("", dir, "web"); b != a {
		t.Error("the derived ID must be stable")
	}
	if b, _ := machineID("", dir, "db"); b == a {
		t.Error("different names must get different IDs")
	}
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
	if b, _ := machineID("", dir, "web"); b != "0123456789abcdef0123456789abcdef" {
		t.Errorf("the tree's /etc/machine-id should win: %s", b)
	}
	if b, _ := machineID("01234567-89AB-CDEF-0123-456789ABCDEF", dir, "web"); b != "0123456789abcdef0123456789abcdef" {
		t.Errorf("flag: %s", b)
	}
	if _, err := machineID("nope", dir, "web"); err == nil {
		t.Error("bad flag accepted")
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "my root": "my-root", ".hidden": "hidden", "": "machine", "a/b": "a-b"} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
