package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	v1 "github.com/tabbynet/tabby/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// listPageSize bounds one List call; larger results are read in pages.
const listPageSize = 500

// NewKube returns a Store over a Kubernetes API server, for Tabby's CRDs and the core
// objects. Client-side throttling is off unless cfg brings its own RateLimiter: IPAM
// and the agent make bursts of small requests, and the API server's own priority and
// fairness is the right place to limit them.
func NewKube(cfg *rest.Config) (Store, error) {
	c := rest.CopyConfig(cfg)
	if c.RateLimiter == nil {
		c.QPS = -1
	}
	// The API server gzips large responses (lists of blocks) for clients that accept
	// it; to a node next to it that costs more CPU on both sides than it saves.
	c.DisableCompression = true
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dc, err := dynamic.NewForConfigAndClient(c, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	// Lists bypass the dynamic client: its decoding into unstructured maps and then
	// into our types costs twice as much as the request itself (~50 us an object);
	// see list. One HTTP client: one connection pool.
	rc, err := rest.UnversionedRESTClientForConfigAndClient(dynamic.ConfigFor(c), hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &store{b: &kube{dc: dc, rc: rc}}, nil
}

type kube struct {
	dc dynamic.Interface
	rc rest.Interface
}

func (c *kube) res(k Kind, ns string) dynamic.ResourceInterface {
	r := c.dc.Resource(k.GVR)
	if k.Namespaced {
		return r.Namespace(ns)
	}
	return r
}

func (c *kube) get(ctx context.Context, k Kind, ns, name string) (Object, error) {
	u, err := c.res(k, ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, kubeErr("get", k, name, err)
	}
	return fromUnstructured(k, u)
}

func (c *kube) list(ctx context.Context, k Kind, opts ListOptions) ([]Object, string, error) {
	var out []Object
	limit, rv := strconv.Itoa(listPageSize), ""
	if opts.AllowStale {
		// resourceVersion=0: any version the cache has; the cache ignores limit.
		limit, rv = "", "0"
	}
	cont := ""
	for {
		req := c.rc.Get().AbsPath(c.path(k, opts.Namespace)...)
		for name, v := range map[string]string{"labelSelector": opts.LabelSelector, "fieldSelector": opts.FieldSelector, "limit": limit,
			"resourceVersion": rv, "continue": cont} {
			if v != "" {
				req = req.Param(name, v)
			}
		}
		body, err := req.Do(ctx).Raw()
		if err != nil {
			return nil, "", kubeErr("list", k, "", err)
		}
		// Typed decoding straight from the JSON: items one by one into k.New().
		var l struct {
			Metadata metav1.ListMeta   `json:"metadata"`
			Items    []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(body, &l); err != nil {
			return nil, "", fmt.Errorf("list %s: decode: %w", k.Name, err)
		}
		gvk := k.GVR.GroupVersion().WithKind(k.Name)
		for _, item := range l.Items {
			o := k.New()
			if err := json.Unmarshal(item, o); err != nil {
				return nil, "", fmt.Errorf("list %s: decode an item: %w", k.Name, err)
			}
			o.GetObjectKind().SetGroupVersionKind(gvk)
			out = append(out, o)
		}
		if l.Metadata.Continue == "" {
			return out, l.Metadata.ResourceVersion, nil
		}
		cont = l.Metadata.Continue
	}
}

// path is the API path of k's collection (in namespace ns when k is namespaced and ns
// is set), e.g. /apis/tabby.dev/v1/ippools or /api/v1/namespaces/x/pods.
func (c *kube) path(k Kind, ns string) []string {
	p := []string{"/apis", k.GVR.Group, k.GVR.Version}
	if k.GVR.Group == "" {
		p = []string{"/api", k.GVR.Version}
	}
	if k.Namespaced && ns != "" {
		p = append(p, "namespaces", ns)
	}
	return append(p, k.GVR.Resource)
}

func (c *kube) create(ctx context.Context, k Kind, obj Object) (Object, error) {
	u, err := toUnstructured(k, obj)
	if err != nil {
		return nil, err
	}
	got, err := c.res(k, obj.GetNamespace()).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
	if err != nil {
		return nil, kubeErr("create", k, obj.GetName(), err)
	}
	return fromUnstructured(k, got)
}

func (c *kube) update(ctx context.Context, k Kind, obj Object) (Object, error) {
	u, err := toUnstructured(k, obj)
	if err != nil {
		return nil, err
	}
	got, err := c.res(k, obj.GetNamespace()).Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict"})
	if err != nil {
		return nil, kubeErr("update", k, obj.GetName(), err)
	}
	return fromUnstructured(k, got)
}

func (c *kube) delete(ctx context.Context, k Kind, ns, name, rv string) error {
	var opts metav1.DeleteOptions
	if rv != "" {
		opts.Preconditions = &metav1.Preconditions{ResourceVersion: &rv}
	}
	if err := c.res(k, ns).Delete(ctx, name, opts); err != nil {
		return kubeErr("delete", k, name, err)
	}
	return nil
}

func (c *kube) watch(ctx context.Context, k Kind, opts ListOptions, rv string) (<-chan rawEvent, error) {
	w, err := c.res(k, opts.Namespace).Watch(ctx, metav1.ListOptions{
		LabelSelector: opts.LabelSelector, FieldSelector: opts.FieldSelector, ResourceVersion: rv, AllowWatchBookmarks: true,
	})
	if err != nil {
		return nil, kubeErr("watch", k, "", err)
	}
	out := make(chan rawEvent)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				re := translate(k, ev)
				if re.typ == "" && re.err == nil {
					continue // bookmark
				}
				select {
				case out <- re:
				case <-ctx.Done():
					return
				}
				if re.err != nil {
					return
				}
			}
		}
	}()
	return out, nil
}

func translate(k Kind, ev watch.Event) rawEvent {
	switch ev.Type {
	case watch.Bookmark:
		return rawEvent{}
	case watch.Error:
		err := apierrors.FromObject(ev.Object)
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return rawEvent{err: errExpired}
		}
		return rawEvent{err: fmt.Errorf("watch %s: %w", k.Name, err)}
	}
	u, ok := ev.Object.(*unstructured.Unstructured)
	if !ok {
		return rawEvent{err: fmt.Errorf("watch %s: unexpected object %T", k.Name, ev.Object)}
	}
	o, err := fromUnstructured(k, u)
	if err != nil {
		return rawEvent{err: err}
	}
	typ := map[watch.EventType]EventType{watch.Added: Added, watch.Modified: Modified, watch.Deleted: Deleted}[ev.Type]
	return rawEvent{typ: typ, obj: o, rv: u.GetResourceVersion()}
}

func toUnstructured(k Kind, obj Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s %q: %w", k.Name, obj.GetName(), err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(k.APIVersion())
	u.SetKind(k.Name)
	return u, nil
}

func fromUnstructured(k Kind, u *unstructured.Unstructured) (Object, error) {
	o := k.New()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, o); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", k.Name, u.GetName(), err)
	}
	o.GetObjectKind().SetGroupVersionKind(k.GVR.GroupVersion().WithKind(k.Name))
	return o, nil
}

// kubeErr wraps an API error with the sentinel that says what it means.
func kubeErr(op string, k Kind, name string, err error) error {
	var sentinel error
	switch {
	case apierrors.IsNotFound(err):
		sentinel = ErrNotFound
	case apierrors.IsConflict(err):
		sentinel = ErrConflict
	case apierrors.IsAlreadyExists(err):
		sentinel = ErrAlreadyExists
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		sentinel = v1.ErrInvalid
	case isUnavailable(err):
		sentinel = ErrUnavailable
	}
	what := k.Name
	if name != "" {
		what = fmt.Sprintf("%s %q", k.Name, name)
	}
	if sentinel == nil {
		return fmt.Errorf("%s %s: %w", op, what, err)
	}
	return fmt.Errorf("%s %s: %w: %w", op, what, sentinel, err)
}

func isUnavailable(err error) bool {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		code := se.Status().Code
		return code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
	}
	// Connection refused, DNS and TLS failures come as plain errors from the transport.
	return !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) && apierrors.ReasonForError(err) == metav1.StatusReasonUnknown
}
