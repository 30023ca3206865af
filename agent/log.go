package agent

import (
	"fmt"
	"io"
	"strings"

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

// NewLogger builds the agent's logger writing to w: JSON lines (format "json", the
// production encoder with ISO 8601 times) or human-readable lines ("console").
func NewLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	switch format {
	case "json", "":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, fmt.Errorf("log format %q is not json or console", format)
	}
	core := zapcore.NewCore(encoder, zapcore.AddSync(w), lvl)
	return zap.New(core, zap.AddCaller()).Named("tabby-node"), nil
}
