package vmendpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"libvirt.org/go/libvirt"
)

// DefaultURI is the libvirt connection of the system's QEMU guests.
const DefaultURI = "qemu:///system"

// LibvirtSource is the real Source, over libvirt.org/go/libvirt. Built with the
// libvirt_dlopen tag it loads libvirt.so.0 at the first connect, so an agent on a
// node without libvirt runs and reports why VM endpoints are off.
type LibvirtSource struct {
	URI    string
	Logger *zap.Logger
}

var eventLoop struct {
	mu      sync.Mutex
	started bool
}

// startEventLoop registers libvirt's default event loop implementation (before any
// connection, as libvirt requires) and runs it, once per process.
func startEventLoop(log *zap.Logger) error {
	eventLoop.mu.Lock()
	defer eventLoop.mu.Unlock()
	if eventLoop.started {
		return nil
	}
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		return fmt.Errorf("register the libvirt event loop (is libvirt.so.0 installed?): %w", err)
	}
	eventLoop.started = true
	go func() {
		for {
			if err := libvirt.EventRunDefaultImpl(); err != nil {
				log.Error("libvirt event loop", zap.Error(err))
				time.Sleep(time.Second) // not a synchronisation: keeps a broken loop from spinning
			}
		}
	}()
	return nil
}

// Connect opens the connection, with keepalive, a close callback and a lifecycle
// event callback for every domain.
func (s *LibvirtSource) Connect(ctx context.Context, notify func(Event)) (Conn, error) {
	log := s.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if err := startEventLoop(log); err != nil {
		return nil, err
	}
	uri := s.URI
	if uri == "" {
		uri = DefaultURI
	}
	c, err := libvirt.NewConnect(uri)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", uri, err)
	}
	lc := &libvirtConn{c: c, done: make(chan struct{})}
	if err := c.RegisterCloseCallback(func(_ *libvirt.Connect, reason libvirt.ConnectCloseReason) {
		log.Info("libvirt connection closed", zap.Int("reason", int(reason)))
		lc.markDone()
	}); err != nil {
		_, _ = c.Close()
		return nil, fmt.Errorf("register the close callback: %w", err)
	}
	// Keepalive notices a libvirtd that hangs; a dead one closes the socket anyway.
	if err := c.SetKeepAlive(5, 3); err != nil {
		log.Debug("libvirt keepalive not set", zap.Error(err))
	}
	id, err := c.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		uuid, err := d.GetUUIDString()
		if err != nil {
			return
		}
		name, _ := d.GetName()
		notify(Event{UUID: uuid, Name: name, Kind: eventKind(ev)})
	})
	if err != nil {
		_ = lc.Close()
		return nil, fmt.Errorf("register for domain lifecycle events: %w", err)
	}
	lc.cbs = append(lc.cbs, id)
	// A change of Tabby's metadata (virsh metadata ... https://tabby.dev/xmlns/vm/1.0)
	// changes labels, namespace or addresses: reconcile the domain again.
	id, err = c.DomainEventMetadataChangeRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventMetadataChange) {
		if ev.Type != libvirt.DOMAIN_METADATA_ELEMENT || ev.NSURI != Namespace {
			return
		}
		uuid, err := d.GetUUIDString()
		if err != nil {
			return
		}
		name, _ := d.GetName()
		notify(Event{UUID: uuid, Name: name, Kind: EventOther})
	})
	if err != nil {
		log.Debug("no metadata change events: changes apply at the next lifecycle event or resync", zap.Error(err))
	} else {
		lc.cbs = append(lc.cbs, id)
	}
	return lc, nil
}

func eventKind(ev *libvirt.DomainEventLifecycle) EventKind {
	switch ev.Event {
	case libvirt.DOMAIN_EVENT_DEFINED:
		return EventDefined
	case libvirt.DOMAIN_EVENT_UNDEFINED:
		return EventUndefined
	case libvirt.DOMAIN_EVENT_STARTED:
		return EventStarted
	case libvirt.DOMAIN_EVENT_RESUMED:
		return EventResumed
	case libvirt.DOMAIN_EVENT_STOPPED:
		if ev.Detail == int(libvirt.DOMAIN_EVENT_STOPPED_MIGRATED) {
			return EventStoppedMigrated
		}
		return EventStopped
	}
	return EventOther
}

type libvirtConn struct {
	c        *libvirt.Connect
	cbs      []int
	done     chan struct{}
	doneOnce sync.Once
	closed   sync.Once
}

func (l *libvirtConn) markDone() { l.doneOnce.Do(func() { close(l.done) }) }

func (l *libvirtConn) Done() <-chan struct{} { return l.done }

func (l *libvirtConn) Close() error {
	var err error
	l.closed.Do(func() {
		for _, id := range l.cbs {
			_ = l.c.DomainEventDeregister(id) // fails on a dead connection: nothing to undo then
		}
		_ = l.c.UnregisterCloseCallback()
		_, err = l.c.Close()
		l.markDone()
	})
	if err != nil {
		return fmt.Errorf("close the libvirt connection: %w", err)
	}
	return nil
}

// ListDomains lists every domain, active or only defined, with its XML (the live XML
// for an active one). A domain that vanishes while it is read is left out: its
// UNDEFINED event follows.
func (l *libvirtConn) ListDomains(ctx context.Context) ([]Domain, error) {
	doms, err := l.c.ListAllDomains(0)
	if err != nil {
		return nil, fmt.Errorf("list all domains: %w", err)
	}
	var out []Domain
	var errs []error
	for i := range doms {
		d, err := readDomain(&doms[i])
		_ = doms[i].Free()
		if isNoDomain(err) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, d)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// LookupDomain reads one domain by UUID.
func (l *libvirtConn) LookupDomain(ctx context.Context, uuid string) (Domain, error) {
	d, err := l.c.LookupDomainByUUIDString(uuid)
	if isNoDomain(err) {
		return Domain{}, fmt.Errorf("domain %s: %w", uuid, ErrNoDomain)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("look up domain %s: %w", uuid, err)
	}
	defer func() { _ = d.Free() }()
	dom, err := readDomain(d)
	if isNoDomain(err) {
		return Domain{}, fmt.Errorf("domain %s: %w", uuid, ErrNoDomain)
	}
	return dom, err
}

func readDomain(d *libvirt.Domain) (Domain, error) {
	uuid, err := d.GetUUIDString()
	if err != nil {
		return Domain{}, fmt.Errorf("domain uuid: %w", err)
	}
	name, err := d.GetName()
	if err != nil {
		return Domain{}, fmt.Errorf("domain %s name: %w", uuid, err)
	}
	active, err := d.IsActive()
	if err != nil {
		return Domain{}, fmt.Errorf("domain %s state: %w", name, err)
	}
	dom := Domain{UUID: uuid, Name: name, Active: active}
	if active {
		state, reason, err := d.GetState()
		if err != nil {
			return Domain{}, fmt.Errorf("domain %s state: %w", name, err)
		}
		dom.Running = state == libvirt.DOMAIN_RUNNING
		// Paused for a migration: the destination from its start until the guest
		// resumes there, the source while the last pages are copied (reason migration),
		// or once the destination runs the guest in post-copy (reason postcopy).
		dom.MigrationPaused = state == libvirt.DOMAIN_PAUSED &&
			(reason == int(libvirt.DOMAIN_PAUSED_MIGRATION) || reason == int(libvirt.DOMAIN_PAUSED_POSTCOPY))
		if dom.MigrationPaused {
			// Both sides are paused at the switch-over; only the source runs the
			// outgoing migration job (the destination's stats call fails: "available
			// only on the source host").
			if js, err := d.GetJobStats(0); err == nil && js.OperationSet && js.Operation == libvirt.DOMAIN_JOB_OPERATION_MIGRATION_OUT {
				dom.MigratingOut = true
			}
		}
	}
	if dom.XML, err = d.GetXMLDesc(0); err != nil {
		return Domain{}, fmt.Errorf("domain %s XML: %w", name, err)
	}
	return dom, nil
}

func isNoDomain(err error) bool {
	var le libvirt.Error
	return errors.As(err, &le) && le.Code == libvirt.ERR_NO_DOMAIN
}
