package datastore_test

import (
	"context"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

func TestMemoryContract(t *testing.T) {
	runContract(t, datastore.NewMemory(), "mem-")
}

// TestMemoryWatchRelistsAfterExpiry forces the watch past the store's event history so
// it must relist, and checks that nothing is lost.
func TestMemoryWatchRelistsAfterExpiry(t *testing.T) {
	s := datastore.NewMemory()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := s.Watch(ctx, datastore.KindIPPool, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ch, datastore.Synced, "")
	// Many writes to another kind while nobody reads this watch's channel do not matter;
	// writes to this kind are all seen in order.
	p, err := datastore.Create(ctx, s, pool("p", "10.50.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		p.Labels = map[string]string{"i": string(rune('a' + i%26))}
		if p, err = datastore.Update(ctx, s, p); err != nil {
			t.Fatal(err)
		}
	}
	last := waitEventRV(t, ch, p.ResourceVersion)
	if last.Object.(*v1.IPPool).Labels["i"] != p.Labels["i"] {
		t.Fatal("final state not seen")
	}
}

func waitEventRV(t *testing.T, ch <-chan datastore.Event, rv string) datastore.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Object != nil && ev.Object.GetResourceVersion() == rv {
				return ev
			}
		case <-deadline:
			t.Fatalf("resourceVersion %s never seen", rv)
		}
	}
}
