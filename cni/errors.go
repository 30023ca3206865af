package cni

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/types"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// CNI error codes the plugin returns. Codes below 100 are the spec's; 100 and up are
// Tabby's own (docs/reference/cni.md lists them).
const (
	CodeInvalidEnv     uint = types.ErrInvalidEnvironmentVariables // 4
	CodeIOFailure      uint = types.ErrIOFailure                   // 5
	CodeInvalidConfig  uint = types.ErrInvalidNetworkConfig        // 7
	CodeInvalidNetNS   uint = types.ErrInvalidNetNS                // 8
	CodeTryAgainLater  uint = types.ErrTryAgainLater               // 11
	CodeNotAvailable   uint = 50                                   // STATUS: cannot serve ADD
	CodeInternal       uint = types.ErrInternal                    // 999
	CodePodNotFound    uint = 100
	CodePoolExhausted  uint = 101
	CodeAddressInUse   uint = 102
	CodeNotInPool      uint = 103
	CodeNoPool         uint = 104
	CodeBadAnnotation  uint = 105
	CodeDataplane      uint = 106
	CodeWriteRejected  uint = 107
	CodeCheckFailed    uint = 108
	CodeInterfaceTaken uint = 109
	CodeAccessDenied   uint = 110
)

// Error is a failure with the CNI code it is reported with. Msg is the short message;
// Err carries the details.
type Error struct {
	Code uint
	Msg  string
	Err  error
}

func newErr(code uint, msg string, err error) *Error { return &Error{Code: code, Msg: msg, Err: err} }

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// classify finds the code and short message for err: the first *Error in its chain,
// else the sentinel it wraps.
func classify(err error) (uint, string) {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Code, ce.Msg
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code, te.Msg
	}
	switch {
	case errors.Is(err, ipam.ErrNoFreeAddress):
		return CodePoolExhausted, "IP pool exhausted: no free address for this node"
	case errors.Is(err, ipam.ErrAddressInUse):
		return CodeAddressInUse, "the requested IP address is already in use"
	case errors.Is(err, ipam.ErrNotInPool):
		return CodeNotInPool, "the requested IP address is not in any usable IP pool"
	case errors.Is(err, ipam.ErrNoPool):
		return CodeNoPool, "no usable IP pool for this node"
	case errors.Is(err, datastore.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, datastore.ErrConflict):
		return CodeTryAgainLater, "the datastore is unavailable, try again later"
	case errors.Is(err, v1.ErrInvalid), errors.Is(err, datastore.ErrAlreadyExists):
		return CodeWriteRejected, "the datastore rejected a write"
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return CodeAccessDenied, "the datastore denied access: check the kubeconfig's credentials and RBAC"
	}
	return CodeInternal, "internal error"
}

// CNIError turns any error into the *types.Error the runtime sees: code, short message
// and, as details, the chain of what went wrong (for an *Error, its cause).
func CNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) && te == err {
		return te
	}
	code, msg := classify(err)
	details := err.Error()
	if ce, ok := err.(*Error); ok {
		details = "" // the message says it all, unless there is a cause
		if ce.Err != nil {
			details = ce.Err.Error()
		}
	}
	if details == msg {
		details = ""
	}
	return types.NewError(code, msg, details)
}
