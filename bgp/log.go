package bgp

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogToZap hands gobgp's slog records to our zap logger. gobgp's Info messages (every
// FSM step, "Add a peer configuration", ...) go to Debug: the speaker logs session
// changes itself at Info.
type slogToZap struct {
	log    *zap.Logger
	attrs  []zap.Field
	prefix string
	// quiet is set while the speaker stops: gobgp's errors then (a second StopBgp, peers
	// going away) are expected and dropped.
	quiet *atomic.Bool
}

func newSlogToZap(log *zap.Logger, quiet *atomic.Bool) *slogToZap {
	return &slogToZap{log: log, quiet: quiet}
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	default:
		return zapcore.DebugLevel
	}
}

func (h *slogToZap) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

func (h *slogToZap) Handle(_ context.Context, r slog.Record) error {
	if h.quiet.Load() && r.Level >= slog.LevelError {
		return nil
	}
	ce := h.log.Check(zapLevel(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, len(h.attrs)+r.NumAttrs())
	fields = append(fields, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, h.field(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *slogToZap) field(a slog.Attr) zap.Field {
	key := h.prefix + a.Key
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return zap.String(key, v.String())
	case slog.KindInt64:
		return zap.Int64(key, v.Int64())
	case slog.KindUint64:
		return zap.Uint64(key, v.Uint64())
	case slog.KindBool:
		return zap.Bool(key, v.Bool())
	case slog.KindDuration:
		return zap.Duration(key, v.Duration())
	case slog.KindTime:
		return zap.Time(key, v.Time())
	case slog.KindFloat64:
		return zap.Float64(key, v.Float64())
	default:
		return zap.Any(key, v.Any())
	}
}

func (h *slogToZap) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.attrs = make([]zap.Field, 0, len(h.attrs)+len(attrs))
	n.attrs = append(n.attrs, h.attrs...)
	for _, a := range attrs {
		n.attrs = append(n.attrs, h.field(a))
	}
	return &n
}

func (h *slogToZap) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}
