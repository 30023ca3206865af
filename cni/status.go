package cni

import (
	"errors"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// status reports whether ADD can succeed: the datastore answers and at least one
// enabled IPPool exists. Otherwise code 50 (not available).
func (p *Plugin) status(c *call) error {
	ctx, cancel := c.ctx()
	defer cancel()
	pools, err := datastore.List[*v1.IPPool](ctx, c.store, datastore.ListOptions{})
	if err != nil {
		return newErr(CodeNotAvailable, "the datastore is not reachable", err)
	}
	if len(pools) == 0 {
		return newErr(CodeNotAvailable, "no IPPool exists: pods cannot get addresses until one is created", nil)
	}
	for _, p := range pools {
		if !p.Spec.Disabled {
			return nil
		}
	}
	return newErr(CodeNotAvailable, "every IPPool is disabled: pods cannot get addresses",
		errors.New("enable a pool (spec.disabled: false) or create one"))
}
