package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/bgp/controller"
	"go.uber.org/zap"
)

// BGP is what the agent reports of the node's BGP controller on the local API;
// *controller.Controller satisfies it. The agent does not run it: cmd/tabby-node does.
type BGP interface {
	Peers(ctx context.Context) ([]bgp.PeerState, error)
	Problems() []controller.Problem
}

var _ BGP = (*controller.Controller)(nil)

// bgpPeersTimeout bounds one question to the speaker.
const bgpPeersTimeout = 5 * time.Second

// bgpStatus builds the answer of GET /bgp/peers.
func (a *Agent) bgpStatus(ctx context.Context) (localapi.BGPStatus, error) {
	if a.bgp == nil {
		return localapi.BGPStatus{Peers: []localapi.BGPPeer{}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, bgpPeersTimeout)
	defer cancel()
	ps, err := a.bgp.Peers(ctx)
	if err != nil {
		return localapi.BGPStatus{}, err
	}
	out := localapi.BGPStatus{Enabled: true, Peers: make([]localapi.BGPPeer, 0, len(ps))}
	for _, p := range ps {
		bp := localapi.BGPPeer{Address: p.Address.String(), Type: p.Type, ASN: p.ASN, State: string(p.State),
			PrefixesReceived: p.PrefixesReceived, PrefixesAccepted: p.PrefixesAccepted,
			PrefixesAdvertised: p.PrefixesAdvertised, LastError: p.LastError, AdminDown: p.AdminDown}
		if !p.Since.IsZero() {
			t := p.Since
			bp.Since = &t
		}
		out.Peers = append(out.Peers, bp)
	}
	for _, pr := range a.bgp.Problems() {
		out.Problems = append(out.Problems, pr.String())
	}
	return out, nil
}

func (a *Agent) serveBGPPeers(w http.ResponseWriter, r *http.Request) {
	st, err := a.bgpStatus(r.Context())
	if err != nil {
		a.log.Warn("list BGP peers for the local API", zap.Error(err))
		writeJSON(w, http.StatusInternalServerError, localapi.Error{Error: "list BGP peers: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}
