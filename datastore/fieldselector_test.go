package datastore_test

import (
	"context"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestMemoryFieldSelector: list and watch select Pods by spec.nodeName (and any object
// by name and namespace); an unknown field is an error.
func TestMemoryFieldSelector(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: "n1"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: "n2"}},
	} {
		if _, err := s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.List(ctx, datastore.KindPod, datastore.ListOptions{FieldSelector: "spec.nodeName=n1"})
	if err != nil || len(got) != 1 || got[0].GetName() != "a" {
		t.Fatalf("list spec.nodeName=n1: %v, %v", got, err)
	}
	if got, err = s.List(ctx, datastore.KindPod, datastore.ListOptions{FieldSelector: "metadata.name!=a"}); err != nil || len(got) != 1 || got[0].GetName() != "b" {
		t.Fatalf("list metadata.name!=a: %v, %v", got, err)
	}
	if _, err := s.List(ctx, datastore.KindPod, datastore.ListOptions{FieldSelector: "status.phase=Running"}); err == nil {
		t.Error("an unknown field: no error")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx, datastore.KindPod, datastore.WatchOptions{ListOptions: datastore.ListOptions{FieldSelector: "spec.nodeName=n2"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for ev := range ch {
		if ev.Type == datastore.Synced {
			break
		}
		names = append(names, ev.Object.GetName())
	}
	if len(names) != 1 || names[0] != "b" {
		t.Fatalf("watch spec.nodeName=n2: %v", names)
	}
}
