package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/tabbynet/tabby/bgp"
	"go.uber.org/zap"
)

// ErrRestartNeeded is returned by Apply when the speaker's Global (router ID, AS,
// listen port) changed: a speaker starts once, so only a new one can have it.
var ErrRestartNeeded = errors.New("bgp speaker must restart")

// Reconciler brings a speaker to a Desired state. It remembers what it applied and
// makes only the difference: AddPeer, UpdatePeer, RemovePeer, Advertise, Withdraw. An
// item whose call failed is not recorded, so the next Apply tries it again. It is not
// safe for concurrent use.
type Reconciler struct {
	sp      bgp.Speaker
	log     *zap.Logger
	global  *bgp.Global
	peers   map[netip.Addr]bgp.Peer
	adverts map[netip.Prefix]bgp.PathAttrs
	// Global is added to the first Start (LocalRestarting, listen addresses...).
	base bgp.Global
}

// NewReconciler returns a Reconciler of sp, which must not have been started. base
// carries the Global fields Desired does not set (LocalRestarting, SelectionDeferral,
// ListenAddresses).
func NewReconciler(sp bgp.Speaker, base bgp.Global, log *zap.Logger) *Reconciler {
	if log == nil {
		log = zap.NewNop()
	}
	return &Reconciler{sp: sp, log: log, base: base, peers: map[netip.Addr]bgp.Peer{}, adverts: map[netip.Prefix]bgp.PathAttrs{}}
}

// Started reports whether the speaker was started.
func (r *Reconciler) Started() bool { return r.global != nil }

// Applied returns what the speaker was last told, as sessions and originated prefixes.
func (r *Reconciler) Applied() (map[netip.Addr]bgp.Peer, map[netip.Prefix]bgp.PathAttrs) {
	return r.peers, r.adverts
}

// Apply makes the speaker what d says. With no Global (BGP off on this node) a started
// speaker keeps running with no sessions and nothing originated; an unstarted one is
// not started. It returns every failed call's error joined, or an error wrapping
// ErrRestartNeeded when the Global changed (nothing else is done then).
func (r *Reconciler) Apply(ctx context.Context, d *Desired) error {
	wantPeers := map[netip.Addr]bgp.Peer{}
	wantAdverts := map[netip.Prefix]bgp.PathAttrs{}
	if d.Global != nil {
		g := r.base
		g.RouterID, g.ASN, g.ListenPort = d.Global.RouterID, d.Global.ASN, d.Global.ListenPort
		switch {
		case r.global == nil:
			if err := r.sp.Start(ctx, g); err != nil {
				return fmt.Errorf("start bgp speaker: %w", err)
			}
			r.log.Info("bgp speaker started", zap.Stringer("routerID", g.RouterID), zap.Uint32("as", g.ASN),
				zap.Uint16("port", g.ListenPort))
			r.global = &g
		case !reflect.DeepEqual(*r.global, g):
			return fmt.Errorf("%w: router id %s as %d port %d, now router id %s as %d port %d", ErrRestartNeeded,
				r.global.RouterID, r.global.ASN, r.global.ListenPort, g.RouterID, g.ASN, g.ListenPort)
		}
		for a, p := range d.Peers {
			wantPeers[a] = d.SpeakerPeer(p)
		}
		for pfx, a := range d.Adverts {
			wantAdverts[pfx] = bgp.PathAttrs{Communities: a.Communities}
		}
	}
	if r.global == nil {
		return nil
	}
	var errs []error
	for _, a := range sortedKeys(r.peers, netip.Addr.Compare) {
		if _, ok := wantPeers[a]; ok {
			continue
		}
		if err := r.sp.RemovePeer(ctx, a); err != nil {
			errs = append(errs, fmt.Errorf("remove peer %s: %w", a, err))
			continue
		}
		r.log.Info("bgp peer removed", zap.Stringer("peer", a))
		delete(r.peers, a)
	}
	for _, a := range sortedKeys(wantPeers, netip.Addr.Compare) {
		want := wantPeers[a]
		have, ok := r.peers[a]
		var err error
		switch {
		case !ok:
			err = r.sp.AddPeer(ctx, want)
		case !reflect.DeepEqual(have, want):
			err = r.sp.UpdatePeer(ctx, want)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("configure peer %s: %w", a, err))
			continue
		}
		r.log.Info("bgp peer configured", zap.Stringer("peer", a), zap.Uint32("as", want.ASN),
			zap.String("type", want.Type), zap.Bool("new", !ok))
		r.peers[a] = want
	}
	for _, pfx := range sortedKeys(wantAdverts, comparePrefix) {
		want := wantAdverts[pfx]
		if have, ok := r.adverts[pfx]; ok && slices.Equal(have.Communities, want.Communities) {
			continue
		}
		if err := r.sp.Advertise(ctx, pfx, want); err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", pfx, err))
			continue
		}
		r.log.Debug("advertised", zap.Stringer("prefix", pfx), zap.Strings("communities", want.Communities))
		r.adverts[pfx] = want
	}
	for _, pfx := range sortedKeys(r.adverts, comparePrefix) {
		if _, ok := wantAdverts[pfx]; ok {
			continue
		}
		if err := r.sp.Withdraw(ctx, pfx); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", pfx, err))
			continue
		}
		r.log.Debug("withdrawn", zap.Stringer("prefix", pfx))
		delete(r.adverts, pfx)
	}
	return errors.Join(errs...)
}
