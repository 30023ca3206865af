package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/vmguest"
	"libvirt.org/go/libvirt"
)

// event is one lifecycle event, stamped when the event loop delivered it.
type event struct {
	uuid string
	kind libvirt.DomainEventType
	at   time.Time
}

// lifecycle is the benchmark's own libvirt connection and the lifecycle events it
// heard since the last reset.
type lifecycle struct {
	conn *libvirt.Connect

	mu     sync.Mutex
	events []event
	wake   chan struct{}
}

// watchLifecycle registers libvirt's default event loop (before connecting, as
// libvirt requires), runs it, connects to the shared libvirtd and registers for every
// domain's lifecycle events; cl closes the connection.
func watchLifecycle(ctx context.Context, cl *netnode.Cleanup) (*lifecycle, error) {
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		return nil, fmt.Errorf("register the libvirt event loop: %w", err)
	}
	go func() {
		for ctx.Err() == nil {
			if err := libvirt.EventRunDefaultImpl(); err != nil {
				return
			}
		}
	}()
	conn, err := libvirt.NewConnect(vmguest.URI)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", vmguest.URI, err)
	}
	l := &lifecycle{conn: conn, wake: make(chan struct{}, 1)}
	cbID, err := conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		at := time.Now()
		uuid, err := d.GetUUIDString()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.events = append(l.events, event{uuid: uuid, kind: ev.Event, at: at})
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		_, _ = conn.Close()
		return nil, fmt.Errorf("register for lifecycle events: %w", err)
	}
	cl.Add("close the benchmark's libvirt connection", func() error {
		_ = conn.DomainEventDeregister(cbID)
		_, err := conn.Close()
		return err
	})
	return l, nil
}

func (l *lifecycle) reset() {
	l.mu.Lock()
	l.events = nil
	l.mu.Unlock()
}

// started waits for the STARTED event of the domain since the last reset and returns
// its time and that of the first RESUMED event (STARTED's when none came).
func (l *lifecycle) started(ctx context.Context, uuid string) (started, resumed time.Time, err error) {
	deadline := time.NewTimer(perStart)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, e := range l.events {
			if e.uuid != uuid {
				continue
			}
			switch {
			case e.kind == libvirt.DOMAIN_EVENT_RESUMED && resumed.IsZero():
				resumed = e.at
			case e.kind == libvirt.DOMAIN_EVENT_STARTED && started.IsZero():
				started = e.at
			}
		}
		l.mu.Unlock()
		if !started.IsZero() {
			if resumed.IsZero() {
				resumed = started
			}
			return started, resumed, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, time.Time{}, ctx.Err()
		case <-deadline.C:
			return time.Time{}, time.Time{}, fmt.Errorf("no STARTED event within %v", perStart)
		case <-l.wake:
		}
	}
}

// domainUUID is the UUID of the named domain.
func domainUUID(conn *libvirt.Connect, name string) (string, error) {
	d, err := conn.LookupDomainByName(name)
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", name, err)
	}
	defer func() { _ = d.Free() }()
	uuid, err := d.GetUUIDString()
	if err != nil {
		return "", fmt.Errorf("uuid of %s: %w", name, err)
	}
	return uuid, nil
}

// ready is when the endpoint on a tap first showed in GET /endpoints, was first
// programmed, and first programmed with its policy enforced.
type ready struct {
	seen, programmed, policed time.Time
}

// waitEndpoint polls GET /endpoints every pollEvery until the endpoint on tap is
// programmed and its policy enforced.
func waitEndpoint(ctx context.Context, api *localapi.Client, tap string) (ready, error) {
	var r ready
	deadline := time.Now().Add(perStart)
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		eps, err := api.Endpoints(ctx)
		now := time.Now()
		if err != nil {
			return r, fmt.Errorf("endpoints: %w", err)
		}
		for _, e := range eps {
			if e.Interface != tap {
				continue
			}
			if r.seen.IsZero() {
				r.seen = now
			}
			if e.Programmed && r.programmed.IsZero() {
				r.programmed = now
			}
			if e.Programmed && e.PolicyEnforced {
				r.policed = now
				return r, nil
			}
		}
		if now.After(deadline) {
			return r, fmt.Errorf("the endpoint on %s is not programmed and policed within %v: %+v", tap, perStart, eps)
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-t.C:
		}
	}
}

// waitGone waits until no endpoint is on tap.
func waitGone(ctx context.Context, api *localapi.Client, tap string) error {
	return netnode.Poll(ctx, perStart, 10*time.Millisecond, func() error {
		eps, err := api.Endpoints(ctx)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.Interface == tap {
				return fmt.Errorf("the endpoint on %s is still there: %+v", tap, e)
			}
		}
		return nil
	})
}

// logTail reads tabby-node's JSON log from where it last stopped, for the breakdown.
type logTail struct {
	path string
	off  int64
}

// logMarks are the times of the log lines that split one start: the watcher's
// WorkloadEndpoint write done, and felix's first apply that wrote a route after it.
type logMarks struct {
	wepCreated, applied time.Time
}

// next reads the lines logged since the last call and finds the marks of the endpoint
// on tap (zero when a line is missing).
func (l *logTail) next(tap string) (logMarks, error) {
	var m logMarks
	f, err := os.Open(l.path)
	if err != nil {
		return m, fmt.Errorf("open the node log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return m, fmt.Errorf("seek the node log: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return m, fmt.Errorf("read the node log: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	l.off += int64(len(b))
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct {
			TS            string `json:"ts"`
			Msg           string `json:"msg"`
			Name          string `json:"name"`
			RoutesWritten int    `json:"routesWritten"`
		}
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, e.TS)
		if err != nil {
			continue
		}
		switch {
		case e.Msg == "WorkloadEndpoint created" && strings.HasSuffix(e.Name, "-"+tap) && m.wepCreated.IsZero():
			m.wepCreated = ts
		case e.Msg == "applied" && e.RoutesWritten > 0 && !m.wepCreated.IsZero() && m.applied.IsZero():
			m.applied = ts
		}
	}
	return m, nil
}

// sequence names the domain's events since the last reset with their times relative
// to t0, e.g. "RESUMED@+48.1ms STARTED@+48.2ms".
func (l *lifecycle) sequence(uuid string, t0 time.Time) string {
	names := map[libvirt.DomainEventType]string{libvirt.DOMAIN_EVENT_DEFINED: "DEFINED",
		libvirt.DOMAIN_EVENT_STARTED: "STARTED", libvirt.DOMAIN_EVENT_SUSPENDED: "SUSPENDED",
		libvirt.DOMAIN_EVENT_RESUMED: "RESUMED", libvirt.DOMAIN_EVENT_STOPPED: "STOPPED",
		libvirt.DOMAIN_EVENT_SHUTDOWN: "SHUTDOWN"}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if e.uuid != uuid {
			continue
		}
		n := names[e.kind]
		if n == "" {
			n = fmt.Sprint(int(e.kind))
		}
		out = append(out, fmt.Sprintf("%s@%+.1fms", n, float64(e.at.Sub(t0).Microseconds())/1000))
	}
	return strings.Join(out, " ")
}
