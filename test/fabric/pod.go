package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pod is a pod wired on a node.
type Pod struct {
	Node      *Node
	Namespace string     // Kubernetes namespace
	Name      string     // Kubernetes name
	Netns     string     // its network namespace
	IP        netip.Addr // from the CNI result

	once sync.Once
	err  error
}

// PodSpec is what AddPodSpec makes a pod from.
type PodSpec struct {
	Namespace, Name string
	// Labels and Annotations go on the Pod object (e.g. cni.AnnotationIPAddrs for a
	// static address).
	Labels, Annotations map[string]string
	// Ports are the container's ports (named ports for policies).
	Ports []corev1.ContainerPort
	// NetnsTag names the network namespace <node prefix>-<NetnsTag>; empty means Name
	// (set it when pods of several namespaces share a name).
	NetnsTag string
}

// AddPod does what a kubelet does for a pod on the node: creates the Pod object, a
// network namespace, and runs `cnitool add` inside the node namespace. What it made is
// undone by Delete, or by the cluster's Close.
func (n *Node) AddPod(ctx context.Context, namespace, name string) (*Pod, error) {
	return n.AddPodSpec(ctx, PodSpec{Namespace: namespace, Name: name})
}

// AddPodSpec is AddPod for a pod with labels, annotations and container ports.
func (n *Node) AddPodSpec(ctx context.Context, spec PodSpec) (*Pod, error) {
	c := n.C
	namespace, name := spec.Namespace, spec.Name
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: spec.Labels, Annotations: spec.Annotations},
		Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1", Ports: spec.Ports}}}}
	if _, err := datastore.Create(ctx, c.Opts.Store, pod); err != nil {
		return nil, fmt.Errorf("fabric: pod %s/%s: %w", namespace, name, err)
	}
	p := &Pod{Node: n, Namespace: namespace, Name: name}
	c.cl.Add("delete pod "+namespace+"/"+name, p.Delete)
	var err error
	tag := spec.NetnsTag
	if tag == "" {
		tag = name
	}
	if p.Netns, err = n.Net.NewPodNS(ctx, tag); err != nil {
		return nil, fmt.Errorf("fabric: pod %s/%s: %w", namespace, name, err)
	}
	out, stderr, err := n.Runtime.Run(ctx, "add", n.Network, p.Netns, netnode.K8sArgs(namespace, name))
	if err != nil {
		return nil, fmt.Errorf("fabric: cnitool add %s/%s on %s: %w\n%s\n%s", namespace, name, n.Name, err, out, stderr)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) != 1 {
		return nil, fmt.Errorf("fabric: ADD result of %s/%s: %v\n%s", namespace, name, err, out)
	}
	pfx, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		return nil, fmt.Errorf("fabric: ADD result of %s/%s: %w", namespace, name, err)
	}
	p.IP = pfx.Addr()
	return p, nil
}

// Delete undoes AddPod: `cnitool del`, the network namespace, the Pod object. Only the
// first call does; later ones return its result.
func (p *Pod) Delete() error {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
		defer cancel()
		var errs []error
		n := p.Node
		if p.Netns != "" {
			if out, stderr, err := n.Runtime.Run(ctx, "del", n.Network, p.Netns, netnode.K8sArgs(p.Namespace, p.Name)); err != nil {
				errs = append(errs, fmt.Errorf("cnitool del %s/%s: %w\n%s\n%s", p.Namespace, p.Name, err, out, stderr))
			}
			if err := n.Net.DeletePodNS(p.Netns); err != nil {
				errs = append(errs, err)
			}
		}
		if err := n.C.Opts.Store.Delete(ctx, datastore.KindPod, p.Namespace, p.Name, datastore.DeleteOptions{}); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			errs = append(errs, err)
		}
		p.err = errors.Join(errs...)
	})
	return p.err
}

// Ping sends count pings from the pod to addr (1 s apart at most 2 s each) and returns
// an error carrying ping's output when they are not all answered.
func (p *Pod) Ping(ctx context.Context, addr netip.Addr, count int) error {
	out, err := netnode.Run(ctx, "ip", "netns", "exec", p.Netns, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", addr.String())
	if err != nil {
		return fmt.Errorf("ping %s -> %s: %w\n%s", p.IP, addr, err, out)
	}
	return nil
}
