package agent

import (
	"context"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReleaseEmptyBlocks: the loop hands an emptied block of this node back to its pool.
func TestReleaseEmptyBlocks(t *testing.T) {
	s := datastore.NewMemory()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Create(ctx, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.IPPoolSpec{CIDR: "10.90.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	a := ipam.New(s, ipam.Options{})
	if _, err := a.Assign(ctx, ipam.Request{HandleID: "h", Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReleaseHandle(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseEmptyBlocks(loopCtx, a, "n1", 10*time.Millisecond, 0, zap.NewNop())
	}()
	for {
		blocks, err := datastore.List[*v1.IPAMBlock](ctx, s, datastore.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(blocks) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("empty block never released")
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	<-done
}
