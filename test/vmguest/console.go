package vmguest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Console lines the guest's /init and udhcpc script print (each starts a line).
var (
	// LineDHCPOK is printed when a lease was applied: ip=<addr>/<len> router=<gw>.
	LineDHCPOK = regexp.MustCompile(`TABBY-VMGUEST: dhcp ok event=(\S+) ip=(\S+) router=(\S+) uptime=(\S+)`)
	// LineDHCPFailed is printed when a round of DHCP tries got no lease (udhcpc keeps
	// trying in the background) or a lease could not be applied.
	LineDHCPFailed = regexp.MustCompile(`TABBY-VMGUEST: dhcp failed [^\n]*`)
	// LineReady is printed when the servers run and the console shell is about to start.
	LineReady = regexp.MustCompile(`TABBY-VMGUEST: ready name=(\S+)`)
	// LineInit is the first line of /init, with the guest's uptime in seconds.
	LineInit = regexp.MustCompile(`TABBY-VMGUEST: init uptime=(\S+)`)
	// LinePoweroff is printed when the power button (ACPI shutdown) was pressed.
	LinePoweroff = regexp.MustCompile(`TABBY-VMGUEST: poweroff`)
)

// Console is a client of a guest's serial console (a unix socket QEMU listens on): it
// keeps everything the guest printed, waits for lines, and runs shell commands.
// QEMU drops what the guest prints while no client is connected, so connect before the
// guest runs (Domain.Start does: it starts the guest paused).
type Console struct {
	path string

	mu      sync.Mutex
	buf     []byte
	changed chan struct{} // closed and replaced whenever buf grows or the reader ends
	conn    net.Conn
	readErr error

	runMu sync.Mutex // one command at a time
}

// DialConsole connects to the console socket at path, waiting up to timeout for it.
func DialConsole(ctx context.Context, path string, timeout time.Duration) (*Console, error) {
	c := &Console{path: path, changed: make(chan struct{})}
	if err := c.dial(ctx, timeout); err != nil {
		return nil, err
	}
	return c, nil
}

// Reconnect drops the connection and connects again (after the guest's QEMU was
// replaced: a shutdown and a new start). The transcript is kept.
func (c *Console) Reconnect(ctx context.Context, timeout time.Duration) error {
	c.mu.Lock()
	old := c.conn
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return c.dial(ctx, timeout)
}

func (c *Console) dial(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", c.path)
		if err == nil {
			c.mu.Lock()
			c.conn, c.readErr = conn, nil
			c.mu.Unlock()
			go c.read(conn)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vmguest: connect console %s: %w", c.path, err)
		case <-time.After(20 * time.Millisecond): // retry interval while QEMU starts
		}
	}
}

func (c *Console) read(conn net.Conn) {
	b := make([]byte, 4096)
	for {
		n, err := conn.Read(b)
		c.mu.Lock()
		if c.conn != conn { // replaced by Reconnect
			c.mu.Unlock()
			return
		}
		c.buf = append(c.buf, b[:n]...)
		if err != nil {
			c.readErr = err
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close ends the connection.
func (c *Console) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.Close()
}

// Transcript is everything the guest printed so far, carriage returns dropped.
func (c *Console) Transcript() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.ReplaceAll(string(c.buf), "\r", "")
}

// Mark is the transcript's length now: pass it to Wait to see only what comes after.
func (c *Console) Mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

// Wait waits until re matches the transcript after offset from (see Mark) and returns
// the match and its submatches; it fails when timeout passes first, or ctx ends, or
// the connection is gone (the error then says so).
func (c *Console) Wait(ctx context.Context, from int, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c.mu.Lock()
		text := ""
		if from < len(c.buf) {
			text = strings.ReplaceAll(string(c.buf[from:]), "\r", "")
		}
		changed, readErr, closed := c.changed, c.readErr, c.conn == nil
		c.mu.Unlock()
		if m := re.FindStringSubmatch(text); m != nil {
			return m, nil
		}
		switch {
		case closed:
			return nil, fmt.Errorf("vmguest: console %s closed while waiting for %q", c.path, re)
		case readErr != nil:
			return nil, fmt.Errorf("vmguest: console %s while waiting for %q: %w", c.path, re, readErr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("vmguest: console %s: no %q within %v: %w", c.path, re, timeout, ctx.Err())
		}
	}
}

// Write sends raw bytes to the guest's console.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return 0, errors.New("vmguest: console not connected")
	}
	n, err := conn.Write(p)
	if err != nil {
		return n, fmt.Errorf("vmguest: write console: %w", err)
	}
	return n, nil
}

var _ io.Writer = (*Console)(nil)

// Run runs cmd (one line of sh, stdin /dev/null, stderr into the output) in the guest's
// console shell and returns its output and exit status. The guest must be ready
// (LineReady). The command is wrapped with unique begin and end markers, written so
// that an echo of the typed line never matches them.
func (c *Console) Run(ctx context.Context, cmd string, timeout time.Duration) (string, int, error) {
	if strings.ContainsAny(cmd, "\n\r") {
		return "", -1, errors.New("vmguest: console command has a newline")
	}
	c.runMu.Lock()
	defer c.runMu.Unlock()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", -1, fmt.Errorf("vmguest: marker: %w", err)
	}
	id := hex.EncodeToString(b)
	from := c.Mark()
	line := fmt.Sprintf("echo '@@B''%s'; ( %s ) </dev/null 2>&1; echo '@@E''%s' $?\n", id, cmd, id)
	if _, err := c.Write([]byte(line)); err != nil {
		return "", -1, err
	}
	re := regexp.MustCompile(`(?s)@@B` + id + `\n(.*?)@@E` + id + ` (\d+)\n`)
	m, err := c.Wait(ctx, from, re, timeout)
	if err != nil {
		return "", -1, fmt.Errorf("vmguest: run %q: %w", cmd, err)
	}
	code, _ := strconv.Atoi(m[2])
	return m[1], code, nil
}
