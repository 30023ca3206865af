package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/tabbynet/tabby/datastore"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Exit codes of tabbyctl.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // invalid resource, not found, conflict, server unreachable, ...
	ExitUsage   = 2 // unknown command or flag, missing arguments, unknown kind
)

// Options configures one run of tabbyctl. Zero fields take their defaults.
type Options struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// Context of the run; default context.Background().
	Context context.Context

	// Store, when set, is used as is: no kubeconfig is loaded for the commands that read
	// or write resources, and namespaced kinds default to namespace "default".
	Store datastore.Store
	// NewStore builds the Store from the REST config that --kubeconfig and --context
	// select; default datastore.NewKube.
	NewStore func(cfg *rest.Config) (datastore.Store, error)
	// ServerVersion returns the API server's gitVersion for "version"; default asks
	// discovery. With Store set it is called with a nil config.
	ServerVersion func(cfg *rest.Config) (string, error)
	// Now is the clock "ipam" measures ages against and stamps reports with; default
	// time.Now.
	Now func() time.Time
}

// Execute runs tabbyctl with args (without the program name) against the cluster the
// kubeconfig selects, and returns the exit code. Interrupts cancel the run.
func Execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return Run(args, Options{Stdin: stdin, Stdout: stdout, Stderr: stderr, Context: ctx})
}

// ExecuteWithStore runs tabbyctl against a ready Store (for tests: datastore.NewMemory)
// and returns the exit code. No kubeconfig is read.
func ExecuteWithStore(args []string, store datastore.Store, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(args, Options{Stdin: stdin, Stdout: stdout, Stderr: stderr, Store: store})
}

// Run runs tabbyctl with args and options and returns the exit code.
func Run(args []string, o Options) int {
	if o.Stdin == nil {
		o.Stdin = strings.NewReader("")
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	if o.NewStore == nil {
		o.NewStore = datastore.NewKube
	}
	if o.ServerVersion == nil {
		o.ServerVersion = discoveryVersion
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	g := &globals{opts: o, stdout: o.Stdout, stderr: o.Stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(o.Context)
	if err == nil {
		return ExitOK
	}
	code, msg := classify(err)
	if msg != "" {
		fmt.Fprintf(o.Stderr, "error: %s\n", msg)
	}
	if code == ExitUsage && cmd != nil {
		fmt.Fprintf(o.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// exitError carries an exit code; a nil err means the message was already printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is a bad-usage error (exit code 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// errReported fails the command after its errors were printed.
var errReported = &exitError{code: ExitFailure}

// classify maps an error to its exit code and the message to print (empty if printed).
// Errors that do not carry a code come from cobra itself (unknown command or flag, bad
// arguments): usage errors.
func classify(err error) (int, string) {
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err == nil {
			return ee.code, ""
		}
		return ee.code, ee.err.Error()
	}
	return ExitUsage, err.Error()
}

// runE adapts a command body: any error it returns without a code is a failure (1).
func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return &exitError{code: ExitFailure, err: err}
	}
}

// globals holds the global flags and what is loaded from them, lazily.
type globals struct {
	opts           Options
	stdout, stderr io.Writer

	kubeconfig  string
	kubeContext string
	namespace   string

	clientConfig clientcmd.ClientConfig
	store        datastore.Store
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "tabbyctl",
		Short: "tabbyctl manages Tabby network resources",
		Long: `tabbyctl creates, reads, updates and deletes Tabby resources (IP pools, BGP
configuration, policies, endpoints, ...) in the cluster your kubeconfig selects.

Every object of a file is decoded, defaulted and validated before any is written: if
one is invalid, every error is printed and nothing is written.

Exit codes: 0 success, 1 failure, 2 bad usage.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		CompletionOptions: cobra.CompletionOptions{
			DisableDefaultCmd: true,
		},
	}
	root.SetIn(g.opts.Stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: ExitUsage, err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	pf.StringVar(&g.kubeContext, "context", "", "name of the kubeconfig context to use (default: its current-context)")
	pf.StringVarP(&g.namespace, "namespace", "n", "", `namespace of namespaced kinds (default: the context's namespace, else "default")`)

	root.AddCommand(
		newWriteCmd(g, modeCreate),
		newWriteCmd(g, modeApply),
		newWriteCmd(g, modeReplace),
		newDeleteCmd(g),
		newGetCmd(g),
		newLabelCmd(g),
		newValidateCmd(g),
		newVersionCmd(g),
		newIPAMCmd(g),
		newNodeCmd(g),
		newBGPCmd(g),
		newPolicyCmd(g),
		newLabCmd(g),
		newVMCmd(g),
	)
	return root
}

// loader is the kubeconfig loader, exactly like kubectl's: --kubeconfig, else the
// KUBECONFIG list, else ~/.kube/config; --context overrides the current context.
func (g *globals) loader() clientcmd.ClientConfig {
	if g.clientConfig == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = g.kubeconfig
		overrides := &clientcmd.ConfigOverrides{CurrentContext: g.kubeContext}
		g.clientConfig = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	}
	return g.clientConfig
}

// restConfig loads the REST config of the selected cluster.
func (g *globals) restConfig() (*rest.Config, error) {
	cfg, err := g.loader().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}

// getStore returns the Store: the preset one, or one built from the kubeconfig.
func (g *globals) getStore() (datastore.Store, error) {
	if g.store != nil {
		return g.store, nil
	}
	if g.opts.Store != nil {
		g.store = g.opts.Store
		return g.store, nil
	}
	cfg, err := g.restConfig()
	if err != nil {
		return nil, err
	}
	s, err := g.opts.NewStore(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the datastore: %w", err)
	}
	g.store = s
	return s, nil
}

// namespaceFlagSet reports whether -n was given.
func (g *globals) namespaceFlagSet() bool { return g.namespace != "" }

// defaultNamespace is the namespace of namespaced kinds: -n, else the kubeconfig
// context's namespace, else "default". With a preset Store or offline, no kubeconfig is
// read.
func (g *globals) defaultNamespace(offline bool) string {
	if g.namespace != "" {
		return g.namespace
	}
	if offline || g.opts.Store != nil {
		return "default"
	}
	ns, _, err := g.loader().Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}

// discoveryVersion asks the API server for its version.
func discoveryVersion(cfg *rest.Config) (string, error) {
	if cfg == nil {
		return "", errors.New("no cluster configured")
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("discovery client: %w", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return "", err
	}
	return info.GitVersion, nil
}

// fileFlag adds the repeatable -f/--filename flag.
func fileFlag(fs *pflag.FlagSet, files *[]string, what string) {
	fs.StringArrayVarP(files, "filename", "f", nil, what+": a file, a directory of *.yaml, *.yml and *.json files, or - for stdin (repeatable)")
}

// noArgs is cobra.NoArgs as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
