package datastore

import (
	"context"
	"fmt"
)

// Get is Store.Get for a known Go type: Get[*v1.IPPool](ctx, s, "", "pool1").
func Get[T Object](ctx context.Context, s Store, namespace, name string) (T, error) {
	var zero T
	k, err := kindFor[T]()
	if err != nil {
		return zero, err
	}
	o, err := s.Get(ctx, k, namespace, name)
	if err != nil {
		return zero, err
	}
	return o.(T), nil
}

// List is Store.List for a known Go type.
func List[T Object](ctx context.Context, s Store, opts ListOptions) ([]T, error) {
	k, err := kindFor[T]()
	if err != nil {
		return nil, err
	}
	objs, err := s.List(ctx, k, opts)
	if err != nil {
		return nil, err
	}
	out := make([]T, len(objs))
	for i, o := range objs {
		out[i] = o.(T)
	}
	return out, nil
}

// Create is Store.Create returning the stored object with its Go type.
func Create[T Object](ctx context.Context, s Store, obj T) (T, error) {
	var zero T
	o, err := s.Create(ctx, obj)
	if err != nil {
		return zero, err
	}
	return o.(T), nil
}

// Update is Store.Update returning the stored object with its Go type.
func Update[T Object](ctx context.Context, s Store, obj T) (T, error) {
	var zero T
	o, err := s.Update(ctx, obj)
	if err != nil {
		return zero, err
	}
	return o.(T), nil
}

func kindFor[T Object]() (Kind, error) {
	var zero T
	k, ok := byTypeOf(zero)
	if !ok {
		return Kind{}, fmt.Errorf("%w: %T", ErrUnknownKind, zero)
	}
	return k, nil
}
