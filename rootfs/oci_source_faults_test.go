package rootfs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
)

// oddLayer is a blob of a media type that is not a tar layer.
func oddLayer(t *testing.T) v1.Layer {
	return static.NewLayer([]byte("not a tar"), "application/vnd.example.data")
}

// tokenRealm is a registry that wants a bearer token, as Docker Hub does:
// 401 with WWW-Authenticate: Bearer realm=…/token, where the token is given
// for user:pass (basic auth) only.
func tokenRealm(host, user, pass string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
					http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"token":"tok-123","access_token":"tok-123","expires_in":300}`)
				return
			}
			if r.Header.Get("Authorization") != "Bearer tok-123" {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, host))
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// writeAuthFile writes a containers-auth.json with one entry.
func writeAuthFile(t *testing.T, key, user, pass string) string {
	p := filepath.Join(t.TempDir(), "auth.json")
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{key: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRegistryToken pulls from a registry that wants a token: with the
// credentials of an auth file (keyed by the registry, or by the repository
// as podman allows), from $DOCKER_CONFIG, and refused without them.
func TestRegistryToken(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, threeLayers(t)...)
	ref, _ := reg.push(t, "team/app:v1", img)
	reg.serve(tokenRealm(reg.host, "alice", "s3cret"))

	for _, key := range []string{reg.host, "http://" + reg.host + "/v1/", reg.host + "/team", reg.host + "/team/app"} {
		auth := writeAuthFile(t, key, "alice", "s3cret")
		li, err := Registry{Ref: ref, AuthFile: auth, Insecure: true}.Resolve(context.Background())
		if err != nil {
			t.Fatalf("auth file keyed %s: %v", key, err)
		}
		checkImage(t, li, img, hostPlat)
	}

	_, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "refused access", "UNAUTHORIZED")
	wrong := writeAuthFile(t, reg.host, "alice", "wrong")
	_, err = Registry{Ref: ref, AuthFile: wrong, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "refused access")
	other := writeAuthFile(t, "other.example.org", "alice", "s3cret")
	_, err = Registry{Ref: ref, AuthFile: other, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "refused access")
	bad := filepath.Join(t.TempDir(), "auth.json")
	os.WriteFile(bad, []byte("{not json"), 0o600)
	_, err = Registry{Ref: ref, AuthFile: bad, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, bad, "not a containers-auth.json")

	// The usual places: $DOCKER_CONFIG/config.json, read by ggcr's default keychain.
	dc := t.TempDir()
	os.Rename(writeAuthFile(t, reg.host, "alice", "s3cret"), filepath.Join(dc, "config.json"))
	t.Setenv("DOCKER_CONFIG", dc)
	li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, img, hostPlat)
}

// fastTimeouts makes a stall show within a fraction of a second.
func fastTimeouts(t *testing.T) {
	h, i := registryHeaderTimeout, registryIdleTimeout
	registryHeaderTimeout, registryIdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { registryHeaderTimeout, registryIdleTimeout = h, i })
}

// onBlob serves blob requests for digest with fn, the rest as they are.
func onBlob(digest string, fn func(w http.ResponseWriter, r *http.Request, next http.Handler)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
				fn(w, r, next)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// blobBody is what the registry would answer for a blob.
func blobBody(r *http.Request, next http.Handler) []byte {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	return rec.Body.Bytes()
}

// TestRegistryStall: a registry that sends no answer, or stops in the middle
// of a blob, fails the pull in its time limit, naming the image and the layer.
func TestRegistryStall(t *testing.T) {
	fastTimeouts(t)
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, threeLayers(t)...)
	ref, _ := reg.push(t, "test/stall:v1", img)

	reg.serve(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				<-r.Context().Done()
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	start := time.Now()
	_, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "stalled")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stall took %v to show", d)
	}

	reg.serve(nil)
	li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := li.Layers[1]
	reg.serve(onBlob(l.Digest, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		b := blobBody(r, next)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	start = time.Now()
	_, _, err = readLayer(t, l)
	wantErr(t, err, ref, "layer 2/3 "+l.Digest, "stalled")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stall took %v to show", d)
	}
}

// TestRegistryCorruptBlob: a blob that is not what its digest says, that
// ends early or that is longer than its size fails the layer's stream,
// naming the image and the layer.
func TestRegistryCorruptBlob(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, threeLayers(t)...)
	ref, _ := reg.push(t, "test/corrupt:v1", img)
	li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := li.Layers[0]
	what := "layer 1/3 " + l.Digest

	cases := []struct {
		name  string
		serve func(w http.ResponseWriter, b []byte)
		want  string
	}{
		{"a byte flipped", func(w http.ResponseWriter, b []byte) {
			b = bytes.Clone(b)
			b[len(b)-10] ^= 0xff
			w.Write(b)
		}, "digest mismatch"},
		{"cut short, its length too", func(w http.ResponseWriter, b []byte) {
			w.Header().Set("Content-Length", strconv.Itoa(len(b)-100))
			w.Write(b[:len(b)-100])
		}, "truncated"},
		{"cut short, the connection dropped", func(w http.ResponseWriter, b []byte) {
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, "truncated"},
		{"longer", func(w http.ResponseWriter, b []byte) {
			w.Write(append(bytes.Clone(b), make([]byte, 4096)...))
		}, "larger than the"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg.serve(onBlob(l.Digest, func(w http.ResponseWriter, r *http.Request, next http.Handler) { c.serve(w, blobBody(r, next)) }))
			_, _, err := readLayer(t, l)
			wantErr(t, err, ref, what, c.want)
		})
	}
	reg.serve(nil)
	if _, _, err := readLayer(t, l); err != nil {
		t.Errorf("served whole again: %v", err)
	}
}

// TestAuthKeys: the keys of an auth file, however docker login and podman
// login write them, and the order they are looked up in.
func TestAuthKeys(t *testing.T) {
	for in, want := range map[string]string{
		"https://index.docker.io/v1/":   "docker.io",
		"index.docker.io":               "docker.io",
		"docker.io":                     "docker.io",
		"registry-1.docker.io/library":  "docker.io/library",
		"docker.io/library/debian":      "docker.io/library/debian",
		"https://ghcr.io":               "ghcr.io",
		"http://127.0.0.1:5000/v2/":     "127.0.0.1:5000",
		"registry.example.org:5000/":    "registry.example.org:5000",
		"registry.example.org/team/app": "registry.example.org/team/app",
	} {
		if got := authKey(in); got != want {
			t.Errorf("authKey(%q) = %q, want %q", in, got, want)
		}
	}
	for ref, want := range map[string]string{
		"debian:bookworm":                         "docker.io/library/debian docker.io/library docker.io",
		"registry.example.org:5000/team/app/x:1":  "registry.example.org:5000/team/app/x registry.example.org:5000/team/app registry.example.org:5000/team registry.example.org:5000",
		"ghcr.io/owner/image@sha256:" + sha256Hex: "ghcr.io/owner/image ghcr.io/owner ghcr.io",
	} {
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(authKeys(r.Context()), " "); got != want {
			t.Errorf("authKeys(%s) = %s, want %s", ref, got, want)
		}
	}
}

var sha256Hex = strings.Repeat("ab", 32)
