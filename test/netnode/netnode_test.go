package netnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCleanupOrderOnceAndLate(t *testing.T) {
	var got []string
	var logged []string
	c := &Cleanup{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }}
	for _, s := range []string{"a", "b", "c"} {
		c.Add(s, func() error { got = append(got, s); return nil })
	}
	c.Add("fails", func() error { return errors.New("boom") })
	err := c.Run()
	if err == nil || !strings.Contains(err.Error(), "fails: boom") {
		t.Errorf("Run: %v", err)
	}
	if err := c.Run(); err != nil {
		t.Errorf("second Run: %v", err)
	}
	c.Add("late", func() error { got = append(got, "late"); return errors.New("late boom") })
	if want := []string{"c", "b", "a", "late"}; !reflect.DeepEqual(got, want) {
		t.Errorf("steps ran %v, want %v", got, want)
	}
	if want := []string{"teardown: fails: boom", "teardown: late: late boom"}; !reflect.DeepEqual(logged, want) {
		t.Errorf("logged %q, want %q", logged, want)
	}
}

func TestLeftByDeadRun(t *testing.T) {
	id, err := RunID("tbtest-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, fmt.Sprintf("tbtest-%d-", os.Getpid())) || len(id) != len(fmt.Sprintf("tbtest-%d-", os.Getpid()))+6 {
		t.Fatalf("RunID %q", id)
	}
	for name, want := range map[string]bool{
		id + "-node":                   false, // this process
		"tbtest-1-abcdef-node":         false, // pid 1 is alive
		"tbtest-2147483646-abcdef-pod": true,  // no such process
		"tbtest-2147483646-abcdef":     false, // not a name of a run's thing
		"other-2147483646-abcdef-node": false,
	} {
		if got := LeftByDeadRun("tbtest-", name); got != want {
			t.Errorf("LeftByDeadRun(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(context.Background(), time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("Poll: %v after %d calls", err, n)
	}
	err := Poll(context.Background(), 20*time.Millisecond, time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Errorf("Poll past its deadline: %v", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{}, {Prefix: "x", UplinkCIDR: "10.0.0.1/30"}, {Prefix: "x", UplinkCIDR: "10.0.0.1/30", Gateway: "10.0.1.2"}} {
		if _, err := New(context.Background(), o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}
