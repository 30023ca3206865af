package agent

import (
	"context"

	"github.com/tabbynet/tabby/felix"
)

// Dataplane is what the agent needs of felix; *felix.Felix satisfies it, tests give a
// fake.
type Dataplane interface {
	// Run programs the kernel until ctx ends; it never flushes the kernel on exit.
	Run(ctx context.Context) error
	// Ready reports whether the dataplane is in sync with the datastore.
	Ready() bool
	Status() FelixStatus
	Routes() ([]RouteInfo, error)
}

// Felix's types, as the agent reports them.
type (
	FelixStatus    = felix.Status
	EndpointStatus = felix.EndpointStatus
	RouteCounts    = felix.RouteCounts
	RouteInfo      = felix.RouteInfo
	PolicyStatus   = felix.PolicyStatus
)

var _ Dataplane = (*felix.Felix)(nil)
