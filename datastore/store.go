package datastore

import (
	"context"
	"errors"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// Sentinel errors; every error the Store returns for these cases wraps one of them (and
// v1.ErrInvalid for a rejected object).
var (
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("conflict: the object changed since it was read")
	ErrAlreadyExists = errors.New("already exists")
	ErrUnavailable   = errors.New("datastore unavailable")
	ErrUnknownKind   = errors.New("unknown kind")
)

// Object is any resource the Store handles: Tabby's and the core Kubernetes objects.
type Object = v1.Object

// ListOptions narrows a List or a Watch.
type ListOptions struct {
	// Namespace of namespaced kinds; "" means every namespace.
	Namespace string
	// LabelSelector in Kubernetes syntax (app=web,tier!=db).
	LabelSelector string
	// FieldSelector in Kubernetes syntax (spec.nodeName=node-1): the API server
	// filters, so a node watches only its own Pods. The in-memory Store knows
	// metadata.name, metadata.namespace and a Pod's spec.nodeName.
	FieldSelector string
	// AllowStale lets the API server answer from its watch cache, which may lag the
	// latest write by a moment, instead of a consistent read. A consistent list of a
	// kind nobody wrote lately can wait ~70 ms for etcd's progress notification (API
	// servers with ConsistentListFromCache, 1.31+); use this for reads the caller caches
	// or re-checks anyway. Ignored by Watch.
	AllowStale bool
}

// DeleteOptions carries an optional precondition.
type DeleteOptions struct {
	// ResourceVersion, when set, makes Delete fail with ErrConflict if the object has
	// changed since that version.
	ResourceVersion string
}

// WatchOptions narrows a Watch and sets its resync.
type WatchOptions struct {
	ListOptions
	// ResyncPeriod relists every period and reports any difference the watch missed;
	// 0 means never (a relist still happens after every watch error).
	ResyncPeriod time.Duration
}

// EventType says what happened to an object.
type EventType string

// Event types. Synced follows the events of the initial list, once.
const (
	Added    EventType = "Added"
	Modified EventType = "Modified"
	Deleted  EventType = "Deleted"
	Synced   EventType = "Synced"
)

// Event is one change seen by a Watch. Object is nil for Synced; for Deleted it is the
// last known state.
type Event struct {
	Type   EventType
	Object Object
}

// Store reads and writes resources. Every method is safe for concurrent use.
type Store interface {
	// Get returns one object, or an error wrapping ErrNotFound.
	Get(ctx context.Context, kind Kind, namespace, name string) (Object, error)
	// List returns every object of a kind that matches opts, sorted by namespace/name.
	List(ctx context.Context, kind Kind, opts ListOptions) ([]Object, error)
	// Create writes a new object (defaulted and validated if it is Tabby's) and returns it
	// as stored, with its resourceVersion. ErrAlreadyExists if the name is taken.
	Create(ctx context.Context, obj Object) (Object, error)
	// Update replaces an object if its resourceVersion still matches obj's, and returns it
	// as stored; ErrConflict when another writer got there first, ErrNotFound when gone.
	// An empty resourceVersion is refused: updates are always compare-and-swap.
	Update(ctx context.Context, obj Object) (Object, error)
	// Delete removes an object; ErrNotFound if it is not there.
	Delete(ctx context.Context, kind Kind, namespace, name string, opts DeleteOptions) error
	// Watch lists the kind, reports each object as Added then one Synced event, and then
	// every change, until ctx ends (the channel is closed then). It relists and reports the
	// difference after a broken watch and every ResyncPeriod.
	Watch(ctx context.Context, kind Kind, opts WatchOptions) (<-chan Event, error)
}
