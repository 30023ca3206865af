package ctl

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Where tabby-node keeps what diags reads; the agent's defaults, repeated here so that
// tabbyctl does not link the agent.
const (
	// defaultBPFPinDir is the agent's --bpf-pin-dir default (ebpf.DefaultPinDir).
	defaultBPFPinDir = "/sys/fs/bpf/tabby"
	// Route protocols of Tabby's kernel routes (felix/routes): local workload routes
	// and block blackholes, and routes learned over BGP.
	protoLocal   = 116
	protoLearned = 117
	// diagsMaxMapKeys bounds the keys counted in one pinned map.
	diagsMaxMapKeys = 1 << 22
)

// diagsWorkloadPrefixes start the names of the workload interfaces diags describes
// (pods' cali* veths and libvirt's taps), besides those the agent names.
var diagsWorkloadPrefixes = []string{"cali", "tap", "vnet"}

// diagsFile is one file of the bundle, as the manifest lists it.
type diagsFile struct {
	Name  string `json:"name"`
	What  string `json:"what"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Bytes int    `json:"bytes"`

	data []byte
}

// diagsManifest is manifest.json, the bundle's first file.
type diagsManifest struct {
	Tool     string      `json:"tool"`
	Version  string      `json:"version"`
	Created  time.Time   `json:"created"`
	Host     string      `json:"host"`
	Socket   string      `json:"socket"`
	BPFPin   string      `json:"bpfPinDir"`
	Files    []diagsFile `json:"files"`
	Failures int         `json:"failures"`
}

// diagsBundle collects the parts; a part that fails is listed with its error and the
// others are collected all the same.
type diagsBundle struct {
	files []diagsFile
}

func (b *diagsBundle) add(name, what string, data []byte, err error) {
	f := diagsFile{Name: name, What: what, OK: err == nil}
	if err != nil {
		f.Error = err.Error()
	} else {
		f.data = data
		f.Bytes = len(data)
	}
	b.files = append(b.files, f)
}

func (b *diagsBundle) addJSON(name, what string, v any, err error) {
	if err != nil {
		b.add(name, what, nil, err)
		return
	}
	data, err := json.MarshalIndent(v, "", "  ")
	b.add(name, what, append(data, '\n'), err)
}

func newNodeDiagsCmd(g *globals, client func() *localapi.Client) *cobra.Command {
	var out, pinDir string
	var logLines int
	cmd := &cobra.Command{
		Use:   "diags",
		Short: "Collect a diagnostics bundle (.tar.gz) of this node for a bug report",
		Long: `Collect what a bug report about this node needs into one .tar.gz: the local tabby-node's
answers on its local API (status, endpoints, routes, BGP peers, policy, VMs), its recent
log lines and its metrics, the kernel routes Tabby owns (route protocols 116 and 117, every
table), the workload interfaces (cali*, tap*, vnet* and those the agent names) with their
addresses and proxy_arp, a summary of the pinned BPF maps (name, type, sizes, entries),
the versions of tabbyctl, the agent and the kernel, and manifest.json listing every file
and every part that could not be collected (the others are collected all the same, so a
bundle is written even when the agent is down). It only reads; run it on the node as
root (the socket, the BPF pins).`,
		Example: "  tabbyctl node diags\n  tabbyctl node diags -o /tmp/node-1.tar.gz\n  tabbyctl node diags -o - > bundle.tar.gz",
		Args:    noArgs,
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", `file to write the bundle to, "-" for stdout (default: tabby-diags-<node>-<time>.tar.gz here)`)
	cmd.Flags().StringVar(&pinDir, "bpf-pin-dir", defaultBPFPinDir, "the agent's BPF pin directory (its --bpf-pin-dir)")
	cmd.Flags().IntVar(&logLines, "log-lines", 0, "recent agent log lines to include (0: all the agent keeps)")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if logLines < 0 {
			return usageErrorf("--log-lines: %d is negative", logLines)
		}
		now := g.opts.Now()
		socket := client().Socket()
		b, node := collectDiags(cmd.Context(), socket, pinDir, logLines)
		host, _ := os.Hostname()
		if node == "" {
			node = host
		}
		m := diagsManifest{Tool: "tabbyctl node diags", Version: Version, Created: now.UTC(), Host: host,
			Socket: socket, BPFPin: pinDir}
		for _, f := range b.files {
			m.Files = append(m.Files, f)
			if !f.OK {
				m.Failures++
			}
		}
		mdata, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return fmt.Errorf("encode the manifest: %w", err)
		}
		files := append([]diagsFile{{Name: "manifest.json", What: "what was collected and what failed", OK: true,
			data: append(mdata, '\n'), Bytes: len(mdata) + 1}}, b.files...)
		summary := g.stdout
		if out == "-" {
			if err := writeDiagsTar(g.stdout, files, now); err != nil {
				return fmt.Errorf("write the bundle: %w", err)
			}
			summary = g.stderr
			out = "standard output"
		} else {
			if out == "" {
				out = fmt.Sprintf("tabby-diags-%s-%s.tar.gz", safeFileName(node), now.UTC().Format("20060102-150405"))
			}
			if err := writeDiagsFile(out, files, now); err != nil {
				return err
			}
		}
		return printDiagsSummary(summary, out, files, m.Failures)
	})
	return cmd
}

// collectDiags gathers every part; node is the agent's node name ("" when unknown).
func collectDiags(ctx context.Context, socket, pinDir string, logLines int) (b *diagsBundle, node string) {
	b = &diagsBundle{}
	agent := func(path string) ([]byte, error) {
		rctx, cancel := context.WithTimeout(ctx, nodeRequestTimeout)
		defer cancel()
		return agentGet(rctx, socket, path)
	}

	var st localapi.Status
	raw, err := agent(localapi.PathStatus)
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	b.add("agent/status.json", "GET "+localapi.PathStatus+": the agent's status", raw, err)
	statusErr := err
	answers := map[string][]byte{} // path -> body of a 200 answer
	for _, p := range []struct{ file, path, what string }{
		{"agent/endpoints.json", localapi.PathEndpoints, "the workload endpoints on this node"},
		{"agent/routes.json", localapi.PathRoutes, "the routes the agent programs"},
		{"agent/bgp-peers.json", localapi.PathBGPPeers, "the node's BGP sessions"},
		{"agent/policy.json", localapi.PathPolicy, "what the policy maps hold"},
		{"agent/vms.json", localapi.PathVMs, "the libvirt watcher and its guests"},
	} {
		data, err := agent(p.path)
		b.add(p.file, "GET "+p.path+": "+p.what, data, err)
		answers[p.path] = data
	}

	logPath := localapi.PathLogs
	if logLines > 0 {
		logPath += "?lines=" + strconv.Itoa(logLines)
	}
	raw, err = agent(logPath)
	b.add("agent/logs.json", "GET "+localapi.PathLogs+": the agent's recent log lines", raw, err)
	if err == nil {
		var ll localapi.LogLines
		if err := json.Unmarshal(raw, &ll); err != nil {
			b.add("agent/tabby-node.log", "the agent's recent log lines, one JSON entry a line", nil,
				fmt.Errorf("decode GET %s: %w", localapi.PathLogs, err))
		} else {
			text := strings.Join(ll.Lines, "\n")
			if text != "" {
				text += "\n"
			}
			b.add("agent/tabby-node.log", "the agent's recent log lines, one JSON entry a line", []byte(text), nil)
		}
	}

	if statusErr == nil && st.MetricsAddr != "" {
		rctx, cancel := context.WithTimeout(ctx, nodeRequestTimeout)
		data, err := httpGet(rctx, &http.Client{Transport: &http.Transport{Proxy: nil}}, "http://"+st.MetricsAddr+"/metrics")
		cancel()
		b.add("agent/metrics.txt", "GET /metrics on "+st.MetricsAddr, data, err)
	}

	ifaces := agentInterfaces(answers[localapi.PathEndpoints], answers[localapi.PathVMs])
	routes, err := kernelRoutes()
	b.addJSON("kernel/routes.json", "kernel routes of protocols 116 (local) and 117 (learned), every table", routes, err)
	links, err := workloadInterfaces(ifaces)
	b.addJSON("kernel/interfaces.json", "workload interfaces: link state, addresses, proxy_arp", links, err)
	maps, err := bpfSummary(ctx, pinDir)
	b.addJSON("bpf/maps.json", "pinned BPF maps (name, type, sizes, entries), programs and links", maps, err)

	v := map[string]string{"tabbyctl": Version, "go": runtime.Version(), "os/arch": runtime.GOOS + "/" + runtime.GOARCH}
	if statusErr == nil {
		v["tabby-node"] = st.Version
	} else {
		v["tabby-node"] = "unknown: " + statusErr.Error()
	}
	if k, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		v["kernel"] = strings.TrimSpace(string(k))
	}
	b.addJSON("versions.json", "versions of tabbyctl, the agent and the kernel", v, nil)
	return b, st.Node
}

// agentGet is one GET of the local API, the raw body of a 200 answer.
func agentGet(ctx context.Context, socket, path string) ([]byte, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	data, err := httpGet(ctx, hc, "http://tabby-node"+path)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return nil, fmt.Errorf("%w: %w", localapi.ErrNotRunning, op)
	}
	if err != nil {
		return nil, fmt.Errorf("tabby-node on %s: %w", socket, err)
	}
	return data, nil
}

// httpGet returns the body of a 200 answer; another status is an error naming the
// local API's error message when there is one.
func httpGet(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read GET %s: %w", req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e localapi.Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("GET %s: %s: %s", req.URL.Path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("GET %s: %s", req.URL.Path, resp.Status)
	}
	return body, nil
}

// agentInterfaces are the interfaces the agent names in its answers of GET
// /endpoints and GET /vms (nil when it did not answer): endpoints' and VMs' taps.
func agentInterfaces(endpoints, vms []byte) map[string]bool {
	out := map[string]bool{}
	var l localapi.EndpointList
	if json.Unmarshal(endpoints, &l) == nil {
		for _, e := range l.Endpoints {
			if e.Interface != "" {
				out[e.Interface] = true
			}
		}
	}
	var s localapi.VMStatus
	if json.Unmarshal(vms, &s) == nil {
		for _, d := range s.Domains {
			for _, e := range d.Endpoints {
				if e.Tap != "" {
					out[e.Tap] = true
				}
			}
		}
	}
	return out
}

// diagsRoute is one kernel route of kernel/routes.json.
type diagsRoute struct {
	Dst      string   `json:"dst"`
	Type     string   `json:"type"`
	Dev      string   `json:"dev,omitempty"`
	Via      []string `json:"via,omitempty"`
	Protocol int      `json:"protocol"`
	Table    int      `json:"table"`
	Scope    string   `json:"scope"`
}

// kernelRoutes lists the routes of Tabby's protocols in every table.
func kernelRoutes() ([]diagsRoute, error) {
	names := map[int]string{}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := []diagsRoute{}
	for _, proto := range []netlink.RouteProtocol{protoLocal, protoLearned} {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes of protocol %d: %w", proto, err)
		}
		for _, r := range rs {
			d := diagsRoute{Dst: "default", Type: routeType(r.Type), Protocol: int(r.Protocol), Table: r.Table,
				Scope: r.Scope.String()}
			if r.Dst != nil {
				d.Dst = r.Dst.String()
			}
			if r.LinkIndex > 0 {
				d.Dev = dash(names[r.LinkIndex])
			}
			if r.Gw != nil {
				d.Via = append(d.Via, r.Gw.String())
			}
			for _, nh := range r.MultiPath {
				via := ""
				if nh.Gw != nil {
					via = nh.Gw.String()
				}
				if n := names[nh.LinkIndex]; n != "" {
					via += " dev " + n
				}
				d.Via = append(d.Via, strings.TrimSpace(via))
			}
			out = append(out, d)
		}
	}
	return out, nil
}

func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST:
		return "unicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_LOCAL:
		return "local"
	}
	return strconv.Itoa(t)
}

// diagsInterface is one workload interface of kernel/interfaces.json.
type diagsInterface struct {
	Name      string   `json:"name"`
	Index     int      `json:"index"`
	Type      string   `json:"type"`
	MTU       int      `json:"mtu"`
	MAC       string   `json:"mac,omitempty"`
	OperState string   `json:"operState"`
	Up        bool     `json:"up"`
	Addresses []string `json:"addresses"`
	ProxyARP  string   `json:"proxyARP,omitempty"`
	// NamedByAgent: an endpoint or VM of the agent names this interface.
	NamedByAgent bool `json:"namedByAgent"`
}

// workloadInterfaces describes the links whose names start with a workload prefix or
// that the agent names.
func workloadInterfaces(named map[string]bool) ([]diagsInterface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := []diagsInterface{}
	for _, l := range links {
		a := l.Attrs()
		if !named[a.Name] && !hasAnyPrefix(a.Name, diagsWorkloadPrefixes) {
			continue
		}
		d := diagsInterface{Name: a.Name, Index: a.Index, Type: l.Type(), MTU: a.MTU, OperState: a.OperState.String(),
			Up: a.Flags&net.FlagUp != 0, Addresses: []string{}, NamedByAgent: named[a.Name]}
		if a.HardwareAddr != nil {
			d.MAC = a.HardwareAddr.String()
		}
		if addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL); err == nil {
			for _, ad := range addrs {
				d.Addresses = append(d.Addresses, ad.IPNet.String())
			}
		}
		if v, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", a.Name, "proxy_arp")); err == nil {
			d.ProxyARP = strings.TrimSpace(string(v))
		}
		out = append(out, d)
	}
	return out, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// diagsBPF is bpf/maps.json.
type diagsBPF struct {
	PinDir   string     `json:"pinDir"`
	Maps     []diagsMap `json:"maps"`
	Programs []string   `json:"programs"`
	Links    []string   `json:"links"`
	Other    []string   `json:"other,omitempty"`
	Problems []string   `json:"problems,omitempty"`
}

// diagsMap summarises one pinned map.
type diagsMap struct {
	Pin        string `json:"pin"`
	Name       string `json:"name,omitempty"`
	Type       string `json:"type"`
	KeySize    uint32 `json:"keySize"`
	ValueSize  uint32 `json:"valueSize"`
	MaxEntries uint32 `json:"maxEntries"`
	// Entries counts the keys (for an array: every index); -1 when they cannot be
	// counted (EntriesError says why).
	Entries      int    `json:"entries"`
	EntriesError string `json:"entriesError,omitempty"`
}

// bpfSummary describes the maps pinned at the top of pinDir and names the programs
// (progs/) and links (links/) pinned under it.
func bpfSummary(ctx context.Context, pinDir string) (*diagsBPF, error) {
	ents, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no pin directory %s: policy is off, tabby-node never ran here, or its --bpf-pin-dir is another", pinDir)
	}
	if err != nil {
		return nil, fmt.Errorf("read the pin directory: %w", err)
	}
	out := &diagsBPF{PinDir: pinDir, Maps: []diagsMap{}, Programs: []string{}, Links: []string{}}
	for _, e := range ents {
		path := filepath.Join(pinDir, e.Name())
		if e.IsDir() {
			sub, err := os.ReadDir(path)
			if err != nil {
				out.Problems = append(out.Problems, fmt.Sprintf("read %s: %v", path, err))
				continue
			}
			for _, s := range sub {
				switch e.Name() {
				case "progs":
					out.Programs = append(out.Programs, s.Name())
				case "links":
					out.Links = append(out.Links, s.Name())
				default:
					out.Other = append(out.Other, filepath.Join(e.Name(), s.Name()))
				}
			}
			continue
		}
		m, err := describeMap(ctx, path)
		if err != nil {
			out.Problems = append(out.Problems, fmt.Sprintf("%s: %v", e.Name(), err))
			continue
		}
		out.Maps = append(out.Maps, m)
	}
	sort.Slice(out.Maps, func(i, j int) bool { return out.Maps[i].Pin < out.Maps[j].Pin })
	return out, nil
}

// describeMap opens a pinned map read-only and counts its keys.
func describeMap(ctx context.Context, path string) (diagsMap, error) {
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return diagsMap{}, fmt.Errorf("open the pinned map: %w", err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return diagsMap{}, fmt.Errorf("map info: %w", err)
	}
	d := diagsMap{Pin: filepath.Base(path), Name: info.Name, Type: info.Type.String(), KeySize: info.KeySize,
		ValueSize: info.ValueSize, MaxEntries: info.MaxEntries}
	d.Entries, err = countKeys(ctx, m)
	if err != nil {
		d.Entries, d.EntriesError = -1, err.Error()
	}
	return d, nil
}

// countKeys walks the map's keys (bounded by diagsMaxMapKeys and ctx).
func countKeys(ctx context.Context, m *ebpf.Map) (int, error) {
	var key any
	n := 0
	for {
		next, err := m.NextKeyBytes(key)
		if err != nil {
			return 0, fmt.Errorf("walk the keys: %w", err)
		}
		if next == nil {
			return n, nil
		}
		n++
		if n >= diagsMaxMapKeys {
			return 0, fmt.Errorf("more than %d keys: stopped counting", diagsMaxMapKeys)
		}
		if n%4096 == 0 && ctx.Err() != nil {
			return 0, fmt.Errorf("walk the keys: %w", ctx.Err())
		}
		key = next
	}
}

// writeDiagsFile writes the bundle to path through a temporary file in its directory,
// so a bundle at path is always whole.
func writeDiagsFile(path string, files []diagsFile, now time.Time) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tabby-diags-*.tmp")
	if err != nil {
		return fmt.Errorf("create the bundle: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeDiagsTar(tmp, files, now); err != nil {
		tmp.Close()
		return fmt.Errorf("write the bundle: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write the bundle: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("move the bundle to %s: %w", path, err)
	}
	return nil
}

// writeDiagsTar writes the collected files as a gzipped tar under one directory.
func writeDiagsTar(w io.Writer, files []diagsFile, now time.Time) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		if !f.OK {
			continue
		}
		hdr := &tar.Header{Name: "tabby-diags/" + f.Name, Mode: 0o644, Size: int64(len(f.data)), ModTime: now,
			Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		if _, err := io.Copy(tw, bytes.NewReader(f.data)); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close the tar stream: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("close the gzip stream: %w", err)
	}
	return nil
}

// printDiagsSummary says where the bundle went and what it holds.
func printDiagsSummary(w io.Writer, where string, files []diagsFile, failures int) error {
	total, written := 0, 0
	for _, f := range files {
		if f.OK {
			written++
			total += f.Bytes
		}
	}
	fmt.Fprintf(w, "Wrote %s: %s, %s uncompressed", where, plural(written, "file", "files"), humanBytes(total))
	if failures > 0 {
		fmt.Fprintf(w, "; %s could not be collected (manifest.json says why)", plural(failures, "part", "parts"))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tCONTENT\tRESULT")
	for _, f := range files {
		res := "ok, " + humanBytes(f.Bytes)
		if !f.OK {
			res = "FAILED: " + f.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, f.What, res)
	}
	return tw.Flush()
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// safeFileName keeps letters, digits, '.', '-' and '_' of s.
func safeFileName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
	if s == "" {
		return "node"
	}
	return s
}
