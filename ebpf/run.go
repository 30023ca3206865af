package ebpf

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Result is what the program did with one packet in RunPacket.
type Result int

const (
	// Pass: the program returned TC_ACT_UNSPEC (continue to the next program or filter).
	Pass Result = -1
	// Drop: the program returned TC_ACT_SHOT.
	Drop Result = 2
)

func (r Result) String() string {
	switch r {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("result(%d)", int(r))
}

// RunPacket runs the program of dir on one Ethernet frame with BPF_PROG_TEST_RUN,
// as if it arrived on the loopback interface (ifindex 1). It really updates the maps
// (conntrack, counters, drop events): use it for tests and to explain a verdict on a
// datapath loaded under a scratch pin directory.
func (d *Datapath) RunPacket(dir Direction, frame []byte) (Result, error) {
	p, err := d.program(dir)
	if err != nil {
		return 0, err
	}
	if err := d.check(); err != nil {
		return 0, err
	}
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return 0, fmt.Errorf("test run %v: %w", dir, wrapNotSupported(err))
	}
	return Result(int32(ret)), nil
}

// LoopbackIfindex is the interface RunPacket's packets appear to arrive on.
const LoopbackIfindex = 1
