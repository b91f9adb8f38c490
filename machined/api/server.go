package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/berthd/berth/internal/errdefs"

	"golang.org/x/sys/unix"
)

// Serve answers the API on a Unix socket at path (0600, in a 0700 directory,
// root only) until ctx ends. The socket speaks JSON over HTTP.
func Serve(ctx context.Context, path string, api API) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	// A socket left behind by a crashed berthd is removed; a live one is not stolen.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("api socket %s: another berthd is already listening", path)
	}
	_ = os.Remove(path)
	old := unix.Umask(0o077)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	srv := &http.Server{Handler: Handler(api), BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	_ = os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Handler routes the API's requests to api.
func Handler(api API) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/machines", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func() (any, error) { return api.List(r.Context()) })
	})
	mux.HandleFunc("GET /v1/machines/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func() (any, error) { return api.Status(r.Context(), r.PathValue("name")) })
	})
	mux.HandleFunc("GET /v1/machines/{name}/definition", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func() (any, error) { return api.Definition(r.Context(), r.PathValue("name")) })
	})
	mux.HandleFunc("POST /v1/machines/{name}/kill", func(w http.ResponseWriter, r *http.Request) {
		var req KillRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, r, func() (any, error) { return struct{}{}, api.Kill(r.Context(), r.PathValue("name"), req) })
	})
	mux.HandleFunc("POST /v1/machines/{name}/{verb}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func() (any, error) {
			return struct{}{}, api.Verb(r.Context(), r.PathValue("name"), r.PathValue("verb"))
		})
	})
	mux.HandleFunc("POST /v1/verbs", func(w http.ResponseWriter, r *http.Request) {
		var req VerbRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, r, func() (any, error) { return api.Verbs(r.Context(), req) })
	})
	mux.HandleFunc("POST /v1/plan", func(w http.ResponseWriter, r *http.Request) {
		var req PlanRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, r, func() (any, error) { return api.Plan(r.Context(), req) })
	})
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		var req ApplyRequest
		if !decode(w, r, &req) {
			return
		}
		res, err := api.Apply(r.Context(), req)
		if err != nil && res != nil && res.Plan != nil && len(res.Plan.Errors) > 0 {
			// Definition errors travel as data, so the CLI can print each one.
			writeJSON(w, http.StatusOK, res)
			return
		}
		reply(w, r, func() (any, error) { return res, err })
	})
	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func() (any, error) { return api.Networks(r.Context()) })
	})
	mux.HandleFunc("GET /v1/daemon", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func() (any, error) { return api.Daemon(r.Context()) })
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		seq, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		follow := r.URL.Query().Get("follow") == "1"
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		fl, _ := w.(http.Flusher)
		err := api.Events(r.Context(), seq, r.URL.Query().Get("machine"), follow, func(e Event) error {
			if err := enc.Encode(e); err != nil {
				return err
			}
			if fl != nil {
				fl.Flush()
			}
			return nil
		})
		if err != nil && r.Context().Err() == nil {
			slog.Debug("events stream ended", "err", err)
		}
	})
	return mux
}

type apiError struct {
	Error string `json:"error"`
	Class string `json:"class,omitempty"`
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad request: " + err.Error(), Class: "invalid"})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, r *http.Request, fn func() (any, error)) {
	v, err := fn()
	if err != nil {
		class, status := errdefs.Class(err)
		writeJSON(w, status, apiError{Error: err.Error(), Class: class})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
