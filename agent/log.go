package agent

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ParseLevel reads a log level: debug, info, warn (or warning) or error.
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

// Bounds of the ring of recent log lines NewLogger keeps for GET /logs.
const (
	// DefaultLogRingLines is how many recent lines the ring holds.
	DefaultLogRingLines = 2000
	// maxLogLineBytes truncates a longer line in the ring (not in the log itself), so
	// the ring holds at most DefaultLogRingLines*maxLogLineBytes bytes.
	maxLogLineBytes = 4096
)

// NewLogger builds the agent's logger writing to w: JSON lines (format "json", the
// production encoder with ISO 8601 times) or human-readable lines ("console"). It also
// keeps the last DefaultLogRingLines lines, as JSON, in a LogRing (LogRingOf) that the
// local API serves on GET /logs for `tabbyctl node diags`.
func NewLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	jsonEnc := zapcore.NewJSONEncoder(enc)
	var encoder zapcore.Encoder
	switch format {
	case "json", "":
		encoder = jsonEnc.Clone()
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, fmt.Errorf("log format %q is not json or console", format)
	}
	core := zapcore.NewCore(encoder, zapcore.AddSync(w), lvl)
	ring := NewLogRing(DefaultLogRingLines)
	return zap.New(teeRing(core, ring, jsonEnc, lvl), zap.AddCaller()).Named("tabby-node"), nil
}

// LogRing holds the most recent log lines, a bounded number of them; it is safe for
// concurrent use.
type LogRing struct {
	mu      sync.Mutex
	lines   []string
	next    int    // where the next line goes once the ring is full
	dropped uint64 // lines overwritten since the start
}

// NewLogRing returns a ring of at most n lines (n < 1 means 1).
func NewLogRing(n int) *LogRing {
	return &LogRing{lines: make([]string, 0, max(n, 1))}
}

// Add appends one line, overwriting the oldest when the ring is full.
func (r *LogRing) Add(line string) {
	if len(line) > maxLogLineBytes {
		line = line[:maxLogLineBytes] + "...(truncated)"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < cap(r.lines) {
		r.lines = append(r.lines, line)
		return
	}
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	r.dropped++
}

// Snapshot returns the last n lines held (all of them when n <= 0), oldest first, and
// how many older lines the ring has dropped since the start.
func (r *LogRing) Snapshot(n int) (lines []string, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	out = append(out, r.lines[:r.next]...)
	dropped = r.dropped
	if n > 0 && n < len(out) {
		dropped += uint64(len(out) - n)
		out = out[len(out)-n:]
	}
	return out, dropped
}

// Capacity is how many lines the ring holds at most.
func (r *LogRing) Capacity() int { return cap(r.lines) }

// LogRingOf returns the ring of recent lines of a logger made by NewLogger (or
// WithLogRing), or nil.
func LogRingOf(log *zap.Logger) *LogRing {
	if log == nil {
		return nil
	}
	if c, ok := log.Core().(ringTee); ok {
		return c.ring
	}
	return nil
}

// WithLogRing returns log also writing its entries at lvl and above, JSON-encoded, to
// ring, which LogRingOf finds on it and its children.
func WithLogRing(log *zap.Logger, ring *LogRing, lvl zapcore.LevelEnabler) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return teeRing(c, ring, zapcore.NewJSONEncoder(enc), lvl)
	}))
}

// teeRing writes entries to core and to ring; the result is a ringTee, so LogRingOf
// finds the ring again, also after With.
func teeRing(core zapcore.Core, ring *LogRing, enc zapcore.Encoder, lvl zapcore.LevelEnabler) zapcore.Core {
	return ringTee{Core: zapcore.NewTee(core, &ringCore{LevelEnabler: lvl, enc: enc, ring: ring}), ring: ring}
}

// ringTee marks the tee of the log output and the ring.
type ringTee struct {
	zapcore.Core
	ring *LogRing
}

// With implements zapcore.Core, keeping the mark.
func (t ringTee) With(fields []zapcore.Field) zapcore.Core {
	return ringTee{Core: t.Core.With(fields), ring: t.ring}
}

// ringCore encodes entries into a LogRing.
type ringCore struct {
	zapcore.LevelEnabler
	enc  zapcore.Encoder
	ring *LogRing
}

func (c *ringCore) With(fields []zapcore.Field) zapcore.Core {
	enc := c.enc.Clone()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return &ringCore{LevelEnabler: c.LevelEnabler, enc: enc, ring: c.ring}
}

func (c *ringCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *ringCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	buf, err := c.enc.EncodeEntry(ent, fields)
	if err != nil {
		return fmt.Errorf("encode a log line for the ring: %w", err)
	}
	c.ring.Add(strings.TrimRight(buf.String(), "\n"))
	buf.Free()
	return nil
}

func (c *ringCore) Sync() error { return nil }
