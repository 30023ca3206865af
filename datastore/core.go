package datastore

import (
	"context"
	"errors"
	"fmt"
	"sort"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// backend is the raw storage under a Store: it stores what it is given. store adds
// validation, the sentinel errors' contract and the watch loop, once for every backend.
type backend interface {
	get(ctx context.Context, k Kind, ns, name string) (Object, error)
	list(ctx context.Context, k Kind, opts ListOptions) (objs []Object, rv string, err error)
	create(ctx context.Context, k Kind, obj Object) (Object, error)
	update(ctx context.Context, k Kind, obj Object) (Object, error)
	delete(ctx context.Context, k Kind, ns, name, rv string) error
	// watch streams changes after rv; the channel closes when the watch ends. An event
	// with err set (errExpired when rv is too old) ends it too.
	watch(ctx context.Context, k Kind, opts ListOptions, rv string) (<-chan rawEvent, error)
}

type rawEvent struct {
	typ EventType
	obj Object
	rv  string
	err error
}

// errExpired says a watch's starting resourceVersion is too old: relist.
var errExpired = errors.New("resource version expired")

type store struct {
	b backend
}

func (s *store) Get(ctx context.Context, k Kind, ns, name string) (Object, error) {
	if k.new == nil {
		return nil, fmt.Errorf("get: %w: empty Kind", ErrUnknownKind)
	}
	return s.b.get(ctx, k, scope(k, ns), name)
}

func (s *store) List(ctx context.Context, k Kind, opts ListOptions) ([]Object, error) {
	if k.new == nil {
		return nil, fmt.Errorf("list: %w: empty Kind", ErrUnknownKind)
	}
	opts.Namespace = scope(k, opts.Namespace)
	objs, _, err := s.b.list(ctx, k, opts)
	if err != nil {
		return nil, err
	}
	sortObjects(objs)
	return objs, nil
}

func (s *store) Create(ctx context.Context, obj Object) (Object, error) {
	k, err := KindOf(obj)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	obj = obj.DeepCopyObject().(Object)
	if err := s.check(ctx, k, obj); err != nil {
		return nil, fmt.Errorf("create %s %q: %w", k.Name, obj.GetName(), err)
	}
	obj.SetResourceVersion("")
	return s.b.create(ctx, k, obj)
}

func (s *store) Update(ctx context.Context, obj Object) (Object, error) {
	k, err := KindOf(obj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if obj.GetResourceVersion() == "" {
		return nil, fmt.Errorf("update %s %q: resourceVersion is required: updates are compare-and-swap", k.Name, obj.GetName())
	}
	obj = obj.DeepCopyObject().(Object)
	if err := s.check(ctx, k, obj); err != nil {
		return nil, fmt.Errorf("update %s %q: %w", k.Name, obj.GetName(), err)
	}
	return s.b.update(ctx, k, obj)
}

func (s *store) Delete(ctx context.Context, k Kind, ns, name string, opts DeleteOptions) error {
	if k.new == nil {
		return fmt.Errorf("delete: %w: empty Kind", ErrUnknownKind)
	}
	return s.b.delete(ctx, k, scope(k, ns), name, opts.ResourceVersion)
}

// check defaults and validates a Tabby object, and an IPPool against the other pools.
func (s *store) check(ctx context.Context, k Kind, obj Object) error {
	if k.Namespaced && obj.GetNamespace() == "" {
		obj.SetNamespace("default")
	}
	if !k.Tabby {
		setCoreTypeMeta(k, obj)
		return nil
	}
	v1.Default(obj)
	if err := v1.Validate(obj); err != nil {
		return err
	}
	if k.Name == KindIPPool.Name {
		pools, _, err := s.b.list(ctx, k, ListOptions{})
		if err != nil {
			return fmt.Errorf("list pools for the overlap check: %w", err)
		}
		if err := v1.ValidateAgainst(obj, pools); err != nil {
			return err
		}
	}
	return nil
}

func setCoreTypeMeta(k Kind, obj Object) {
	gvk := k.GVR.GroupVersion().WithKind(k.Name)
	obj.GetObjectKind().SetGroupVersionKind(gvk)
}

func scope(k Kind, ns string) string {
	if !k.Namespaced {
		return ""
	}
	return ns
}

func sortObjects(objs []Object) {
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].GetNamespace() != objs[j].GetNamespace() {
			return objs[i].GetNamespace() < objs[j].GetNamespace()
		}
		return objs[i].GetName() < objs[j].GetName()
	})
}

func objKey(o Object) string { return o.GetNamespace() + "/" + o.GetName() }
