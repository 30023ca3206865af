package cni

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestCNIErrorCodes(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("assign an address to pod a/b on node n: %w", err) }
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{wrap(ipam.ErrNoFreeAddress), CodePoolExhausted},
		{wrap(ipam.ErrAddressInUse), CodeAddressInUse},
		{wrap(ipam.ErrNotInPool), CodeNotInPool},
		{wrap(ipam.ErrNoPool), CodeNoPool},
		{wrap(fmt.Errorf("get Pod: %w: dial tcp 127.0.0.1:1: connection refused", datastore.ErrUnavailable)), CodeTryAgainLater},
		{wrap(context.DeadlineExceeded), CodeTryAgainLater},
		{wrap(datastore.ErrConflict), CodeTryAgainLater},
		{wrap(v1.ErrInvalid), CodeWriteRejected},
		{newErr(CodePodNotFound, "pod a/b not found", datastore.ErrNotFound), CodePodNotFound},
		{fmt.Errorf("outer: %w", newErr(CodeDataplane, "cannot create the veth pair", errors.New("EEXIST"))), CodeDataplane},
		{types.NewError(CodeNotAvailable, "x", ""), CodeNotAvailable},
		{fmt.Errorf("create WorkloadEndpoint \"x\": %w", apierrors.NewForbidden(schema.GroupResource{Group: "tabby.dev", Resource: "workloadendpoints"}, "x", errors.New("RBAC"))), CodeAccessDenied},
		{errors.New("something odd"), CodeInternal},
	} {
		ce := CNIError(tc.err)
		if ce.Code != tc.code {
			t.Errorf("%v: code %d, want %d", tc.err, ce.Code, tc.code)
		}
		if ce.Msg == "" {
			t.Errorf("%v: empty message", tc.err)
		}
		wantDetails := tc.err.Error()
		var top *Error
		if errors.As(tc.err, &top) && error(top) == tc.err {
			wantDetails = top.Err.Error()
		}
		if tc.code != CodeNotAvailable && ce.Details != wantDetails {
			t.Errorf("%v: details %q, want %q", tc.err, ce.Details, wantDetails)
		}
	}
	if CNIError(nil) != nil {
		t.Fatal("CNIError(nil) != nil")
	}
	// Tabby's codes stay out of the spec's range and are distinct.
	seen := map[uint]bool{}
	for _, c := range []uint{CodePodNotFound, CodePoolExhausted, CodeAddressInUse, CodeNotInPool, CodeNoPool,
		CodeBadAnnotation, CodeDataplane, CodeWriteRejected, CodeCheckFailed, CodeInterfaceTaken, CodeAccessDenied} {
		if c < 100 || seen[c] {
			t.Fatalf("code %d reused or in the spec's range", c)
		}
		seen[c] = true
	}
}
