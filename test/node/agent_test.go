package node_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
)

// Where the agent listens inside the node namespace (a fresh namespace: nothing else
// is there).
const (
	healthAddr  = "127.0.0.1:19099"
	metricsAddr = "127.0.0.1:19091"
)

// agentProc is one run of tabby-node inside the node namespace.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed
}

// agentFiles are the agent's socket, node-name file and log, kept across restarts.
type agentFiles struct {
	dir, socket, nodename, log, pinDir string
}

func newAgentFiles(t *testing.T) agentFiles {
	dir := t.TempDir()
	// The agent's own BPF pins, on a private bpffs: the default is the host agent's,
	// and `ip netns exec` remounts /sys.
	pins := ebpftest.PinDir(t)
	return agentFiles{dir: dir, socket: filepath.Join(dir, "run", "tabby-node.sock"),
		nodename: filepath.Join(dir, "nodename"), log: filepath.Join(dir, "tabby-node.log"), pinDir: pins}
}

// startAgent starts tabby-node with `ip netns exec` (which execs it: the process is the
// agent). It is killed when the top-level test ends, if still running.
func (h *harness) startAgent(t *testing.T, f agentFiles) *agentProc {
	t.Helper()
	logf, err := os.OpenFile(f.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "----- start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := h.n.Command(context.Background(), filepath.Join(h.binDir, "tabby-node"),
		"--node-name", h.node, "--kubeconfig", h.kubeconfig, "--socket", f.socket,
		"--health-addr", healthAddr, "--metrics-addr", metricsAddr, "--nodename-file", f.nodename,
		"--log-level", "debug", "--resync-interval", "3s", "--bpf-pin-dir", f.pinDir, "--vm-endpoints=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tabby-node: %v", err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	h.root.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends sig and waits for the agent to exit.
func (p *agentProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(20 * time.Second):
		t.Fatalf("tabby-node did not exit within 20s of %v", sig)
		return nil
	}
}

// dumpLogOnFailure prints the agent's log when the test failed.
func dumpLogOnFailure(t *testing.T, f agentFiles) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b, _ := os.ReadFile(f.log)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 150 {
			lines = lines[len(lines)-150:]
		}
		t.Logf("tabby-node log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
	})
}

// nodeHTTP is an HTTP client whose connections are made inside the node namespace.
func (h *harness) nodeHTTP() *http.Client {
	tr := &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := h.n.Do(func() error {
				var err error
				c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func (h *harness) httpGet(url string) (int, string, error) {
	resp, err := h.nodeHTTP().Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady waits for /readyz to answer 200.
func (h *harness) waitReady(t *testing.T, p *agentProc, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, "tabby-node /readyz", timeout, func() error {
		select {
		case <-p.done:
			t.Fatalf("tabby-node exited: %v", p.err)
		default:
		}
		code, body, err := h.httpGet("http://" + healthAddr + "/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("%d %s", code, strings.TrimSpace(body))
		}
		return nil
	})
	return time.Since(start)
}

// tabbyctl runs the built tabbyctl on the host (the socket is a file: any network
// namespace reaches it).
func (h *harness) tabbyctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.binDir, "tabbyctl"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tabbyctl %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// pinger is a continuous ping from a pod namespace, its replies counted as they come.
type pinger struct {
	cmd     *exec.Cmd
	count   int
	mu      sync.Mutex
	replies int
	lastSeq int
	missing []string // "no answer yet for icmp_seq=N" lines
	summary string
	done    chan struct{}
	err     error
}

var (
	replyRE   = regexp.MustCompile(`icmp_seq=(\d+) ttl=`)
	summaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

// startPinger pings ip from podNS every 10 ms, count times (-O reports a missing
// reply as soon as the next probe goes out).
func startPinger(t *testing.T, podNS, ip string, count int) *pinger {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", podNS, "ping", "-n", "-O", "-i", "0.01", "-W", "1",
		"-c", strconv.Itoa(count), ip)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &pinger{cmd: cmd, count: count, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			switch {
			case strings.Contains(line, "no answer yet"):
				p.missing = append(p.missing, line)
			case replyRE.MatchString(line):
				p.replies++
				p.lastSeq, _ = strconv.Atoi(replyRE.FindStringSubmatch(line)[1])
			case summaryRE.MatchString(line) || strings.Contains(line, "packet loss"):
				p.summary += line + "\n"
			}
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pinger) progress() (replies, lastSeq int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.replies, p.lastSeq
}

// result waits for the ping to finish and returns what it sent and received.
func (p *pinger) result(t *testing.T) (transmitted, received int, missing []string, summary string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Duration(p.count)*10*time.Millisecond + 60*time.Second):
		t.Fatal("ping did not finish")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := summaryRE.FindStringSubmatch(p.summary)
	if m == nil {
		t.Fatalf("no ping summary (exit %v): %q", p.err, p.summary)
	}
	transmitted, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return transmitted, received, p.missing, p.summary
}
