package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestLogRing(t *testing.T) {
	r := NewLogRing(3)
	if lines, dropped := r.Snapshot(0); len(lines) != 0 || dropped != 0 {
		t.Fatalf("empty ring: %q %d", lines, dropped)
	}
	for i := range 5 {
		r.Add(fmt.Sprint("line", i))
	}
	lines, dropped := r.Snapshot(0)
	if strings.Join(lines, ",") != "line2,line3,line4" || dropped != 2 {
		t.Fatalf("got %q, dropped %d", lines, dropped)
	}
	lines, dropped = r.Snapshot(2)
	if strings.Join(lines, ",") != "line3,line4" || dropped != 3 {
		t.Fatalf("last 2: %q, dropped %d", lines, dropped)
	}
	r.Add(strings.Repeat("x", maxLogLineBytes+10))
	lines, _ = r.Snapshot(1)
	if len(lines[0]) > maxLogLineBytes+20 || !strings.HasSuffix(lines[0], "(truncated)") {
		t.Fatalf("long line kept as %d bytes", len(lines[0]))
	}
}

// TestNewLoggerKeepsRecentLines: NewLogger writes every line to its writer and keeps
// it, as JSON with the logger's fields, in the ring GET /logs serves.
func TestNewLoggerKeepsRecentLines(t *testing.T) {
	var out bytes.Buffer
	log, err := NewLogger("info", "console", &out)
	if err != nil {
		t.Fatal(err)
	}
	ring := LogRingOf(log)
	if ring == nil {
		t.Fatal("no ring on the logger NewLogger made")
	}
	child := log.Named("felix").With(zap.String("node", "n1"))
	if LogRingOf(child) != ring {
		t.Fatal("a child logger lost the ring")
	}
	child.Debug("not kept: below the level")
	child.Info("route added", zap.String("dst", "10.0.0.1/32"))
	lines, _ := ring.Snapshot(0)
	if len(lines) != 1 {
		t.Fatalf("ring holds %q", lines)
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatalf("ring line %q is not JSON: %v", lines[0], err)
	}
	if entry["msg"] != "route added" || entry["node"] != "n1" || entry["dst"] != "10.0.0.1/32" ||
		entry["logger"] != "tabby-node.felix" {
		t.Fatalf("ring line %q", lines[0])
	}
	if !strings.Contains(out.String(), "INFO") || !strings.Contains(out.String(), "route added") {
		t.Fatalf("writer got %q", out.String())
	}
}

func TestLogsAPI(t *testing.T) {
	ring := NewLogRing(10)
	log := WithLogRing(zap.NewNop(), ring, zapcore.InfoLevel)
	a, err := New(Options{Config: testConfig(t), Store: datastore.NewMemory(), Dataplane: &fakeDataplane{},
		Registry: prometheus.NewRegistry(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		log.Info("hello", zap.Int("i", i))
	}
	h := a.localAPIHandler()
	get := func(path string) (int, localapi.LogLines) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, path, nil))
		var ll localapi.LogLines
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &ll); err != nil {
				t.Fatal(err)
			}
		}
		return rec.Code, ll
	}
	code, ll := get(localapi.PathLogs)
	if code != http.StatusOK || len(ll.Lines) != 4 || ll.Capacity != 10 || ll.Dropped != 0 {
		t.Fatalf("GET /logs: %d %+v", code, ll)
	}
	code, ll = get(localapi.PathLogs + "?lines=1")
	if code != http.StatusOK || len(ll.Lines) != 1 || !strings.Contains(ll.Lines[0], `"i":3`) || ll.Dropped != 3 {
		t.Fatalf("GET /logs?lines=1: %d %+v", code, ll)
	}
	if code, _ := get(localapi.PathLogs + "?lines=x"); code != http.StatusBadRequest {
		t.Fatalf("GET /logs?lines=x: %d", code)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodPost, localapi.PathLogs, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /logs: %d %s", rec.Code, rec.Body)
	}

	// An agent whose logger keeps no ring says so.
	b, err := New(Options{Config: testConfig(t), Store: datastore.NewMemory(), Dataplane: &fakeDataplane{},
		Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	b.localAPIHandler().ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, localapi.PathLogs, nil))
	if rec.Code != http.StatusNotImplemented {
		t.Fatalf("GET /logs without a ring: %d %s", rec.Code, rec.Body)
	}
}
