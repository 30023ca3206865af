package felix

import (
	"context"
	"fmt"
)

// publish records the outcome of an apply and wakes the waiters.
func (f *Felix) publish(st Status, eps []EndpointStatus, ready bool) {
	byKey := make(map[string]EndpointStatus, len(eps))
	for _, e := range eps {
		byKey[e.Namespace+"/"+e.Name] = e
	}
	st.Endpoints = eps
	f.smu.Lock()
	f.status, f.epStatus, f.ready = st, byKey, ready
	close(f.changed)
	f.changed = make(chan struct{})
	f.smu.Unlock()
}

// Status reports the dataplane as of the last apply.
func (f *Felix) Status() Status {
	f.smu.Lock()
	defer f.smu.Unlock()
	st := f.status
	st.Endpoints = append([]EndpointStatus{}, f.status.Endpoints...)
	return st
}

// Ready reports whether every datastore watch has synced and the apply that followed is
// done (deletes are then allowed and the kernel was compared with the whole datastore).
func (f *Felix) Ready() bool {
	f.smu.Lock()
	defer f.smu.Unlock()
	return f.ready
}

// WaitEndpointProgrammed waits until the endpoint namespace/name is known and its
// routes and sysctls are in the kernel, or ctx ends (the error then says what is
// missing).
func (f *Felix) WaitEndpointProgrammed(ctx context.Context, namespace, name string) error {
	return f.WaitEndpoint(ctx, namespace, name, func(s EndpointStatus) bool { return s.Programmed })
}

// WaitPolicyProgrammed waits until the endpoint namespace/name is programmed and its
// policy enforced (Config.Policy), or ctx ends.
func (f *Felix) WaitPolicyProgrammed(ctx context.Context, namespace, name string) error {
	return f.WaitEndpoint(ctx, namespace, name, func(s EndpointStatus) bool { return s.Programmed && s.PolicyProgrammed })
}

// WaitEndpoint waits until the endpoint namespace/name is known and ok returns true for
// its status, or ctx ends. A caller that knows what it wrote can check more than
// Programmed, e.g. the interface and addresses, so that the status of an earlier
// endpoint of the same name cannot satisfy it.
func (f *Felix) WaitEndpoint(ctx context.Context, namespace, name string, ok func(EndpointStatus) bool) error {
	key := namespace + "/" + name
	for {
		f.smu.Lock()
		st, known := f.epStatus[key]
		ch := f.changed
		f.smu.Unlock()
		if known && ok(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			why := "not seen in the datastore yet"
			if known {
				why = st.Message
				if why == "" {
					why = "not in the wanted state"
				}
			}
			return fmt.Errorf("endpoint %s not programmed (%s): %w", key, why, ctx.Err())
		}
	}
}
