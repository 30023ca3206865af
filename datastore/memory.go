package datastore

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// historyLen is how many past events the memory store keeps for watches that resume.
const historyLen = 4096

// NewMemory returns an in-process Store for unit tests. It keeps the real Store's
// contract (validation, compare-and-swap, watch with resourceVersions) but nothing else
// of a Kubernetes API server.
func NewMemory() Store {
	return &store{b: &memory{objs: map[string]map[string]Object{}, watchers: map[*memWatch]bool{}}}
}

type memory struct {
	mu       sync.Mutex
	rv       int64
	uid      int64
	objs     map[string]map[string]Object // kind -> namespace/name -> object
	history  []memEvent
	watchers map[*memWatch]bool
}

type memEvent struct {
	kind     string
	typ      EventType
	obj, old Object
	rv       int64
}

type memWatch struct {
	kind   string
	opts   ListOptions
	sel    labels.Selector
	mu     sync.Mutex
	queue  []rawEvent
	notify chan struct{}
}

func kindKey(k Kind) string { return k.GVR.String() }

func (m *memory) get(_ context.Context, k Kind, ns, name string) (Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[kindKey(k)][ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("get %s %q: %w", k.Name, name, ErrNotFound)
	}
	return copyObj(o), nil
}

func (m *memory) list(_ context.Context, k Kind, opts ListOptions) ([]Object, string, error) {
	sel, err := labels.Parse(opts.LabelSelector)
	if err != nil {
		return nil, "", fmt.Errorf("list %s: label selector: %w", k.Name, err)
	}
	if err := checkFieldSelector(opts.FieldSelector); err != nil {
		return nil, "", fmt.Errorf("list %s: %w", k.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Object
	for _, o := range m.objs[kindKey(k)] {
		if matches(o, opts, sel) {
			out = append(out, copyObj(o))
		}
	}
	return out, strconv.FormatInt(m.rv, 10), nil
}

func matches(o Object, opts ListOptions, sel labels.Selector) bool {
	if o == nil {
		return false
	}
	if opts.Namespace != "" && o.GetNamespace() != opts.Namespace {
		return false
	}
	if opts.FieldSelector != "" {
		fs, err := fields.ParseSelector(opts.FieldSelector) // checked by list and watch
		if err != nil || !fs.Matches(objectFields(o)) {
			return false
		}
	}
	return sel.Matches(labels.Set(o.GetLabels()))
}

// memoryFields are the fields the in-memory Store can select on.
var memoryFields = map[string]bool{"metadata.name": true, "metadata.namespace": true, "spec.nodeName": true}

// checkFieldSelector parses a field selector and refuses fields the memory Store
// does not know (the API server would answer a bad field with an error too).
func checkFieldSelector(s string) error {
	if s == "" {
		return nil
	}
	fs, err := fields.ParseSelector(s)
	if err != nil {
		return fmt.Errorf("field selector: %w", err)
	}
	for _, r := range fs.Requirements() {
		if !memoryFields[r.Field] {
			return fmt.Errorf("field selector: field %q is not supported", r.Field)
		}
	}
	return nil
}

// objectFields are o's selectable fields: its name and namespace, and a Pod's node.
func objectFields(o Object) fields.Set {
	f := fields.Set{"metadata.name": o.GetName(), "metadata.namespace": o.GetNamespace()}
	if p, ok := o.(*corev1.Pod); ok {
		f["spec.nodeName"] = p.Spec.NodeName
	}
	return f
}

func (m *memory) create(_ context.Context, k Kind, obj Object) (Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if obj.GetName() == "" && obj.GetGenerateName() != "" {
		m.uid++
		obj.SetName(fmt.Sprintf("%s%05d", obj.GetGenerateName(), m.uid))
	}
	key := obj.GetNamespace() + "/" + obj.GetName()
	kk := kindKey(k)
	if _, ok := m.objs[kk][key]; ok {
		return nil, fmt.Errorf("create %s %q: %w", k.Name, obj.GetName(), ErrAlreadyExists)
	}
	if m.objs[kk] == nil {
		m.objs[kk] = map[string]Object{}
	}
	m.uid++
	obj.SetUID(types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", m.uid)))
	obj.SetCreationTimestamp(metav1.NewTime(time.Now().UTC().Truncate(time.Second)))
	obj.SetGeneration(1)
	m.store(kk, key, Added, obj, nil)
	return copyObj(obj), nil
}

func (m *memory) update(_ context.Context, k Kind, obj Object) (Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := obj.GetNamespace() + "/" + obj.GetName()
	kk := kindKey(k)
	old, ok := m.objs[kk][key]
	if !ok {
		return nil, fmt.Errorf("update %s %q: %w", k.Name, obj.GetName(), ErrNotFound)
	}
	if old.GetResourceVersion() != obj.GetResourceVersion() {
		return nil, fmt.Errorf("update %s %q: %w (have %s, stored %s)", k.Name, obj.GetName(), ErrConflict, obj.GetResourceVersion(), old.GetResourceVersion())
	}
	obj.SetUID(old.GetUID())
	obj.SetCreationTimestamp(old.GetCreationTimestamp())
	obj.SetGeneration(old.GetGeneration() + 1)
	m.store(kk, key, Modified, obj, old)
	return copyObj(obj), nil
}

func (m *memory) delete(_ context.Context, k Kind, ns, name, rv string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := ns + "/" + name
	kk := kindKey(k)
	old, ok := m.objs[kk][key]
	if !ok {
		return fmt.Errorf("delete %s %q: %w", k.Name, name, ErrNotFound)
	}
	if rv != "" && old.GetResourceVersion() != rv {
		return fmt.Errorf("delete %s %q: %w", k.Name, name, ErrConflict)
	}
	delete(m.objs[kk], key)
	m.rv++
	m.publish(memEvent{kind: kk, typ: Deleted, obj: old, rv: m.rv})
	return nil
}

// store writes obj with a new resourceVersion and tells the watchers; m.mu is held.
func (m *memory) store(kk, key string, typ EventType, obj, old Object) {
	m.rv++
	obj.SetResourceVersion(strconv.FormatInt(m.rv, 10))
	stored := copyObj(obj)
	m.objs[kk][key] = stored
	m.publish(memEvent{kind: kk, typ: typ, obj: stored, old: old, rv: m.rv})
}

func (m *memory) publish(ev memEvent) {
	m.history = append(m.history, ev)
	if len(m.history) > historyLen {
		m.history = m.history[len(m.history)-historyLen:]
	}
	for w := range m.watchers {
		w.offer(ev)
	}
}

func (m *memory) watch(ctx context.Context, k Kind, opts ListOptions, rv string) (<-chan rawEvent, error) {
	from, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("watch %s: bad resourceVersion %q", k.Name, rv)
	}
	sel, err := labels.Parse(opts.LabelSelector)
	if err != nil {
		return nil, fmt.Errorf("watch %s: label selector: %w", k.Name, err)
	}
	if err := checkFieldSelector(opts.FieldSelector); err != nil {
		return nil, fmt.Errorf("watch %s: %w", k.Name, err)
	}
	w := &memWatch{kind: kindKey(k), opts: opts, sel: sel, notify: make(chan struct{}, 1)}
	m.mu.Lock()
	if len(m.history) > 0 && m.history[0].rv > from+1 {
		m.mu.Unlock()
		out := make(chan rawEvent, 1)
		out <- rawEvent{err: errExpired}
		close(out)
		return out, nil
	}
	for _, ev := range m.history {
		if ev.rv > from {
			w.offer(ev)
		}
	}
	m.watchers[w] = true
	m.mu.Unlock()

	out := make(chan rawEvent)
	go func() {
		defer close(out)
		defer func() {
			m.mu.Lock()
			delete(m.watchers, w)
			m.mu.Unlock()
		}()
		for {
			w.mu.Lock()
			q := w.queue
			w.queue = nil
			w.mu.Unlock()
			for _, ev := range q {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-w.notify:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// offer queues ev if it concerns the watch, turning label changes into Added/Deleted as
// an API server does.
func (w *memWatch) offer(ev memEvent) {
	if ev.kind != w.kind {
		return
	}
	now := ev.typ != Deleted && matches(ev.obj, w.opts, w.sel)
	before := (ev.typ == Deleted && matches(ev.obj, w.opts, w.sel)) || matches(ev.old, w.opts, w.sel)
	var re rawEvent
	switch {
	case now && before:
		re = rawEvent{typ: Modified, obj: copyObj(ev.obj)}
	case now:
		re = rawEvent{typ: Added, obj: copyObj(ev.obj)}
	case before:
		re = rawEvent{typ: Deleted, obj: copyObj(ev.obj)}
	default:
		return
	}
	re.rv = strconv.FormatInt(ev.rv, 10)
	w.mu.Lock()
	w.queue = append(w.queue, re)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func copyObj(o Object) Object { return o.DeepCopyObject().(Object) }
