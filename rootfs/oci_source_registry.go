package rootfs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Limits of a registry's answers (variables for the tests). A registry that
// stalls fails the pull instead of blocking it, and under berthd the whole
// reconcile, forever; there is no limit on a whole download, which may be
// long.
var (
	// registryHeaderTimeout is how long a request waits for the answer's
	// headers.
	registryHeaderTimeout = 60 * time.Second
	// registryIdleTimeout is how long a body may send nothing while berth
	// waits for it.
	registryIdleTimeout = 60 * time.Second
	// registryBackoff is how ggcr retries what failed for a passing reason
	// (a 5xx, 429, a reset connection).
	registryBackoff = remote.Backoff{Duration: time.Second, Factor: 3, Jitter: 0.1, Steps: 3}
	// registryRootCAs are the certificates that sign registries'; nil is
	// the system's (the tests add their own).
	registryRootCAs *x509.CertPool
)

// Resolve fetches the manifest (for an index, the one of the platform) and
// the config. Layers are fetched when opened, each with the context of its
// Open, through the same connection and token.
func (r Registry) Resolve(ctx context.Context) (*LayeredImage, error) {
	ref, err := r.reference()
	if err != nil {
		return nil, err
	}
	want, err := parsePlatform(r.Platform)
	if err != nil {
		return nil, err
	}
	p, err := remote.NewPuller(r.options()...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Ref, err)
	}
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return nil, registryError(r.Ref, err)
	}
	img, child, err := r.image(desc, want)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	li, err := describe(r.Ref, img, child.Digest, want, func(h v1.Hash) blobOpener {
		return func(ctx context.Context) (io.ReadCloser, error) {
			l, err := p.Layer(ctx, repo.Digest(h.String()))
			if err != nil {
				return nil, err
			}
			rc, err := l.Compressed()
			if err != nil {
				return nil, registryError(repo.String(), err)
			}
			return rc, nil
		}
	})
	if err != nil {
		return nil, err
	}
	if child.Platform != nil {
		li.Platform = fromV1(child.Platform).String() // the index's word, variant and all
	}
	return li, nil
}

// image is the manifest desc is, or the one of platform want in the index it
// is, with its descriptor (the index's entry, or the manifest's own).
func (r Registry) image(desc *remote.Descriptor, want wantPlatform) (v1.Image, v1.Descriptor, error) {
	switch mt := desc.MediaType; {
	case mt.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, v1.Descriptor{}, registryError(r.Ref, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, v1.Descriptor{}, registryError(r.Ref, err)
		}
		child, err := choosePlatform(r.Ref, im, want)
		if err != nil {
			return nil, v1.Descriptor{}, err
		}
		img, err := idx.Image(child.Digest)
		if err != nil {
			return nil, v1.Descriptor{}, registryError(r.Ref+"@"+child.Digest.String(), err)
		}
		return img, child, nil
	case mt.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, v1.Descriptor{}, registryError(r.Ref, err)
		}
		return img, v1.Descriptor{Digest: desc.Digest}, nil
	default:
		return nil, v1.Descriptor{}, unsupportedManifest(r.Ref, mt)
	}
}

func (r Registry) options() []remote.Option {
	var kc authn.Keychain = authn.DefaultKeychain
	if r.AuthFile != "" {
		kc = authn.NewMultiKeychain(authFile(r.AuthFile), authn.DefaultKeychain)
	}
	return []remote.Option{
		remote.WithTransport(newRegistryTransport(r.Insecure)),
		remote.WithAuthFromKeychain(kc),
		remote.WithUserAgent("berth"),
		remote.WithRetryBackoff(registryBackoff),
	}
}

// registryError says what a registry's refusal means for the person who
// wrote the reference.
func registryError(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%s: the registry refused access: log in (docker login or podman login write credentials where berth looks) or name an auth file: %w", ref, err)
		case http.StatusNotFound:
			return fmt.Errorf("%s: no such image in the registry (check the repository, the tag or the digest): %w", ref, err)
		}
	}
	return fmt.Errorf("%s: %w", ref, err)
}

// registryTransport is the HTTP client's transport for registries: timeouts
// on every wait for the server, and HTTPS only unless insecure.
type registryTransport struct {
	base     *http.Transport
	insecure bool
}

func newRegistryTransport(insecure bool) *registryTransport {
	return &registryTransport{insecure: insecure, base: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: registryRootCAs, InsecureSkipVerify: insecure},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: registryHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ForceAttemptHTTP2:     true,
	}}
}

func (t *registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !t.insecure {
		return nil, errorf(ErrInvalid, "berth uses plain HTTP only with a registry marked insecure")
	}
	// The request lives in a context of its own, which the idle timer cancels.
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && req.Context().Err() == nil {
			return nil, fmt.Errorf("the registry stalled, no answer in time (try again later): %w", err)
		}
		return nil, err
	}
	resp.Body = newIdleBody(ctx, cancel, resp.Body, registryIdleTimeout, req.URL.Redacted())
	return resp, nil
}
