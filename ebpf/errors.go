package ebpf

import "errors"

var (
	// ErrNotSupported: the kernel lacks something the datapath needs (BPF, TCX,
	// BTF, a map type). Wrapped errors from cilium/ebpf also match
	// github.com/cilium/ebpf.ErrNotSupported.
	ErrNotSupported = errors.New("not supported by this kernel")
	// ErrNotFound: no such entry, attachment or interface.
	ErrNotFound = errors.New("not found")
	// ErrClosed: the Datapath or DropReader was closed.
	ErrClosed = errors.New("closed")
	// ErrInvalid: an argument the datapath cannot represent (an IPv6 prefix, too
	// many addresses, an unknown direction or verdict).
	ErrInvalid = errors.New("invalid argument")
)
