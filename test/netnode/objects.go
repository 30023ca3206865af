package netnode

import (
	"context"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Create writes obj to the store for the rest of the test, deletes it when the test
// ends (also when it fails), and returns it as stored.
func Create[T datastore.Object](t testing.TB, s datastore.Store, obj T) T {
	t.Helper()
	k, err := datastore.KindOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	got, err := datastore.Create(Context(t, 30*time.Second), s, obj)
	if err != nil {
		t.Fatal(err)
	}
	ns, name := got.GetNamespace(), got.GetName()
	t.Cleanup(func() { _ = s.Delete(context.Background(), k, ns, name, datastore.DeleteOptions{}) })
	return got
}

// CreateNamespace creates a Kubernetes Namespace for the test.
func CreateNamespace(t testing.TB, s datastore.Store, name string) {
	t.Helper()
	Create(t, s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// CreatePool creates an IPPool for the test.
func CreatePool(t testing.TB, s datastore.Store, name, cidr string, blockSize int) {
	t.Helper()
	Create(t, s, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}})
}
