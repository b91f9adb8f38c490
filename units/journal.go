package units

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
)

// NewLogHandler returns berthd's slog handler: native journal entries when
// berthd runs under systemd (its stderr is the journal, JOURNAL_STREAM, or it is a
// service, INVOCATION_ID, and the journal socket exists), otherwise text on w.
// A person running berthd in a terminal of a systemd host still sees its logs.
func NewLogHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if UseJournal() {
		return NewJournalHandler("berthd", opts)
	}
	return slog.NewTextHandler(w, opts)
}

// UseJournal reports whether logs should go to the journal natively.
func UseJournal() bool {
	if !journal.Enabled() {
		return false
	}
	if ok, _ := journal.StderrIsJournalStream(); ok {
		return true
	}
	return os.Getenv("INVOCATION_ID") != "" && Booted()
}

// JournalHandler is a slog.Handler that sends each record to systemd-journald
// with its attributes as structured fields: slog's key "machine" becomes the
// journal field MACHINE=, a group "net" with key "name" becomes NET_NAME=, so
// `journalctl MACHINE=web` finds every line about machine web.
type JournalHandler struct {
	ident  string
	opts   slog.HandlerOptions
	prefix string // field prefix of the open groups, "NET_"
	attrs  map[string]string
	send   func(msg string, prio journal.Priority, fields map[string]string) error
}

// NewJournalHandler returns a JournalHandler whose entries carry
// SYSLOG_IDENTIFIER=ident. opts.AddSource adds CODE_FILE, CODE_LINE and CODE_FUNC.
func NewJournalHandler(ident string, opts *slog.HandlerOptions) *JournalHandler {
	h := &JournalHandler{ident: ident, attrs: map[string]string{}, send: journal.Send}
	if opts != nil {
		h.opts = *opts
	}
	return h
}

func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.opts.Level != nil {
		min = h.opts.Level.Level()
	}
	return l >= min
}

func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make(map[string]string, len(h.attrs)+r.NumAttrs()+4)
	for k, v := range h.attrs {
		fields[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(fields, h.prefix, a)
		return true
	})
	if h.ident != "" {
		fields["SYSLOG_IDENTIFIER"] = h.ident
	}
	if h.opts.AddSource && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		fields["CODE_FILE"] = f.File
		fields["CODE_LINE"] = strconv.Itoa(f.Line)
		fields["CODE_FUNC"] = f.Function
	}
	return h.send(r.Message, Priority(r.Level), fields)
}

func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := h.clone()
	for _, a := range as {
		addField(c.attrs, c.prefix, a)
	}
	return c
}

func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := h.clone()
	c.prefix += FieldName(name) + "_"
	return c
}

func (h *JournalHandler) clone() *JournalHandler {
	c := *h
	c.attrs = make(map[string]string, len(h.attrs))
	for k, v := range h.attrs {
		c.attrs[k] = v
	}
	return &c
}

// Priority maps a slog level to a syslog priority: debug 7, info 6, warn 4,
// error 3 (levels between round towards the more severe).
func Priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l > slog.LevelInfo:
		return journal.PriNotice
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// addField flattens one attribute (groups become prefixes) into fields.
func addField(fields map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += FieldName(a.Key) + "_"
		}
		for _, g := range a.Value.Group() {
			addField(fields, p, g)
		}
		return
	}
	fields[prefix+FieldName(a.Key)] = valueString(a.Value)
}

func valueString(v slog.Value) string {
	if v.Kind() == slog.KindAny {
		if err, ok := v.Any().(error); ok {
			return err.Error()
		}
	}
	return v.String()
}

// FieldName turns a slog key into a valid journal field name: upper case
// letters, digits and underscores, not starting with an underscore or digit (a
// leading underscore would make it a trusted field that journald drops).
func FieldName(key string) string {
	var b strings.Builder
	for _, c := range key {
		switch {
		case c >= 'a' && c <= 'z':
			b.WriteRune(c - 'a' + 'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		s = "F_" + s
	}
	if len(s) > 64 { // journald's limit on field names
		s = s[:64]
	}
	return s
}

var _ slog.Handler = (*JournalHandler)(nil)
