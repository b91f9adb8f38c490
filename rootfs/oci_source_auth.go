package rootfs

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// authFile is a keychain of one credentials file: containers-auth.json (what
// podman login and skopeo login write, containers-auth.json(5)) or a docker
// config.json, which share their "auths" map. A key is a registry
// (registry.example.org, or a URL such as https://index.docker.io/v1/ as
// docker login writes Docker Hub's) or a repository or namespace in one
// (registry.example.org/team); the most specific that holds the image wins.
// A registry the file has no entry for is asked with the next keychain's
// credentials, or none. Credential helpers are the docker config's
// business: the default keychain, asked next, runs them.
type authFile string

// maxAuthFile bounds what is read of an auth file.
const maxAuthFile = 4 << 20

func (a authFile) Resolve(target authn.Resource) (authn.Authenticator, error) {
	b, err := os.ReadFile(string(a))
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	if len(b) > maxAuthFile {
		return nil, fmt.Errorf("auth file %s: larger than %d bytes: not a credentials file", a, maxAuthFile)
	}
	var f struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("auth file %s: not a containers-auth.json or docker config.json: %w", a, err)
	}
	byKey := map[string]authn.AuthConfig{}
	for k, c := range f.Auths {
		byKey[authKey(k)] = c
	}
	for _, k := range authKeys(target) {
		if c, ok := byKey[k]; ok && c != (authn.AuthConfig{}) {
			return authn.FromConfig(c), nil
		}
	}
	return authn.Anonymous, nil
}

// authKey is a key of the auths map in the form authKeys looks for: a URL is
// its host, Docker Hub is docker.io however it is written.
func authKey(k string) string {
	if rest, ok := strings.CutPrefix(k, "https://"); ok {
		k, _, _ = strings.Cut(rest, "/")
	} else if rest, ok := strings.CutPrefix(k, "http://"); ok {
		k, _, _ = strings.Cut(rest, "/")
	}
	k = strings.TrimSuffix(k, "/")
	for _, hub := range []string{name.DefaultRegistry, "registry-1.docker.io"} {
		if k == hub || strings.HasPrefix(k, hub+"/") {
			return "docker.io" + k[len(hub):]
		}
	}
	return k
}

// authKeys are the keys that may hold target's credentials, most specific
// first: the repository, each namespace above it, the registry.
func authKeys(target authn.Resource) []string {
	reg := authKey(target.RegistryStr())
	repo := authKey(target.String())
	var keys []string
	for p := repo; p != reg && p != "." && p != "/" && p != ""; p = path.Dir(p) {
		keys = append(keys, p)
	}
	return append(keys, reg)
}
