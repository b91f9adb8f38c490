// Package logctx carries a logger in a context: berthd's reconcile pass puts
// one there with its reconcile ID (and a machine's name), and every package the
// pass calls logs through it, so each line says which pass and machine it
// belongs to.
package logctx

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns ctx carrying l.
func With(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, key{}, l)
}

// From returns the logger ctx carries, or slog's default.
func From(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(key{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
