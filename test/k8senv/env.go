package k8senv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Deadlines of the phases of Start (each also bounded by Start's ctx).
const (
	readyTimeout = 60 * time.Second
	crdTimeout   = 30 * time.Second
	pollEvery    = 75 * time.Millisecond
)

// Options configures Start.
type Options struct {
	// CRDDir is a directory of CustomResourceDefinition YAML files
	// (*.yaml, *.yml; multi-document files are fine) to install and wait for.
	// Empty means none.
	CRDDir string
	// Dir, when set, is the Env's directory (logs, certificates, kubeconfig, etcd
	// data) instead of a new temporary one: it is created if missing and, like the
	// temporary one, removed by Stop. The lab uses it to keep everything it makes
	// under its state directory.
	Dir string
	// Logf, when set, receives progress messages of Start and Stop.
	Logf func(format string, args ...any)
}

// Env is a running etcd plus kube-apiserver on 127.0.0.1. Create it with
// Start and release it with Stop.
type Env struct {
	// Kubeconfig is the path of a kubeconfig file (the server's CA and an
	// admin bearer token in group system:masters) usable by kubectl and
	// client-go.
	Kubeconfig string
	// Config is the client-go configuration loaded from Kubeconfig.
	Config *rest.Config
	// BinDir is the directory holding kube-apiserver, kubectl and etcd.
	BinDir string

	dir       string  // temporary directory owned by the Env
	procs     []*proc // started processes, in start order
	logf      func(format string, args ...any)
	stopOnce  sync.Once
	stopErr   error
	apiPort   int
	etcdPorts [2]int // client, peer
}

// Start builds (or finds) the binaries, starts etcd and kube-apiserver on
// free loopback ports, writes an admin kubeconfig, creates the default
// ServiceAccount in namespace default and installs the CRDs in
// opts.CRDDir. On failure everything started is stopped and the error
// carries the tail of the etcd and kube-apiserver logs.
//
// Note that kube-apiserver delays every create of a custom resource by 2 s
// while its CRD became Established less than 2 s ago (an HA safeguard in
// apiextensions-apiserver); Start does not wait that window out, so the
// first creates right after Start may take 2 s.
func Start(ctx context.Context, opts Options) (*Env, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t0 := time.Now()
	bin, err := BinDir(ctx)
	if err != nil {
		return nil, fmt.Errorf("find control plane binaries: %w", err)
	}
	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "tabby-k8senv-")
	} else {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, fmt.Errorf("create the env directory: %w", err)
	}
	e := &Env{BinDir: bin, dir: dir, logf: logf}
	if err := e.start(ctx, opts); err != nil {
		err = fmt.Errorf("%w\n--- etcd.log (tail) ---\n%s\n--- kube-apiserver.log (tail) ---\n%s",
			err, tailFile(filepath.Join(dir, "etcd.log"), 15), tailFile(filepath.Join(dir, "kube-apiserver.log"), 25))
		if serr := e.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	logf("k8senv: control plane at %s ready in %v (dir %s)", e.Config.Host, time.Since(t0).Round(time.Millisecond), dir)
	return e, nil
}

// start does the work of Start once the Env and its directory exist.
func (e *Env) start(ctx context.Context, opts Options) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	e.etcdPorts = [2]int{ports[0], ports[1]}
	e.apiPort = ports[2]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	p, err := startProc("etcd", filepath.Join(e.BinDir, "etcd"), filepath.Join(e.dir, "etcd.log"),
		"--data-dir", filepath.Join(e.dir, "etcd"),
		"--name", "default",
		"--listen-client-urls", etcdURL,
		"--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync",
		"--log-level=error",
	)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)

	// Prepare the apiserver's files while etcd starts.
	certDir := filepath.Join(e.dir, "certs")
	saKey := filepath.Join(e.dir, "sa.key")
	tokenFile := filepath.Join(e.dir, "tokens.csv")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	if err := writeRSAKey(saKey); err != nil {
		return err
	}
	token, err := randomToken()
	if err != nil {
		return fmt.Errorf("generate token: %w", err)
	}
	if err := os.WriteFile(tokenFile, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	if err := e.waitEtcd(ctx, etcdURL); err != nil {
		return err
	}

	p, err = startProc("kube-apiserver", filepath.Join(e.BinDir, "kube-apiserver"), filepath.Join(e.dir, "kube-apiserver.log"),
		"--etcd-servers", etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port", strconv.Itoa(e.apiPort),
		"--cert-dir", certDir,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey,
		"--token-auth-file", tokenFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--allow-privileged=true",
		"--profiling=false",
		// Logs go to stderr (the log file); 1.32 has no --logtostderr.
	)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	caFile := filepath.Join(certDir, "apiserver.crt")
	host := "https://127.0.0.1:" + strconv.Itoa(e.apiPort)
	if err := e.waitReady(ctx, host, caFile, token); err != nil {
		return err
	}
	if err := e.writeKubeconfig(host, caFile, token); err != nil {
		return err
	}
	if err := e.createDefaultSA(ctx); err != nil {
		return err
	}
	if opts.CRDDir != "" {
		if err := installCRDs(ctx, e.Config, opts.CRDDir, e.logf); err != nil {
			return err
		}
	}
	return nil
}

// checkAlive fails if a started process has exited.
func (e *Env) checkAlive() error {
	for _, p := range e.procs {
		if p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		}
	}
	return nil
}

// poll calls cond every pollEvery until it reports done, returns an error,
// a process dies, timeout passes or ctx ends. last describes the most
// recent failure for the timeout error.
func (e *Env) poll(ctx context.Context, what string, timeout time.Duration, cond func() (done bool, last error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		if err := e.checkAlive(); err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		var done bool
		done, last = cond()
		if done {
			return last
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// waitEtcd polls etcd's /health endpoint.
func (e *Env) waitEtcd(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return e.poll(ctx, "etcd", readyTimeout, func() (bool, error) {
		resp, err := client.Get(url + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return true, nil
		}
		return false, fmt.Errorf("etcd /health: %s", resp.Status)
	})
}

// waitReady polls the apiserver's /readyz with the admin token, trusting
// the self-signed certificate in caFile once it exists.
func (e *Env) waitReady(ctx context.Context, host, caFile, token string) error {
	return e.poll(ctx, "kube-apiserver /readyz", readyTimeout, func() (bool, error) {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return false, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return false, errors.New("no certificate in " + caFile + " yet")
		}
		client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: pool},
		}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+"/readyz", nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return true, nil
		}
		return false, fmt.Errorf("/readyz: %s: %s", resp.Status, tail(body.Bytes(), 5))
	})
}

// writeKubeconfig writes the admin kubeconfig and loads e.Config from it.
func (e *Env) writeKubeconfig(host, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["k8senv"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["k8senv"] = &clientcmdapi.Context{Cluster: "k8senv", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "k8senv"
	path := filepath.Join(e.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 200, 400 // a private apiserver; do not throttle tests
	e.Kubeconfig, e.Config = path, rc
	return nil
}

// createDefaultSA creates ServiceAccount default/default; the apiserver
// creates namespace default shortly after it reports ready, so NotFound is
// retried.
func (e *Env) createDefaultSA(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "default"}}
	return e.poll(ctx, "serviceaccount default/default", crdTimeout, func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{})
		switch {
		case err == nil || apierrors.IsAlreadyExists(err):
			return true, nil
		case apierrors.IsNotFound(err):
			return false, err
		default:
			return true, fmt.Errorf("create serviceaccount default/default: %w", err)
		}
	})
}

// Stop kills kube-apiserver and etcd (whole process groups), waits for them
// and removes the Env's directory (the temporary one, or Options.Dir), unless
// TABBY_KEEP_ENV=1, in which case the directory is kept and its path logged.
// Calling Stop again does nothing and returns the first call's error.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		for i := len(e.procs) - 1; i >= 0; i-- {
			if err := e.procs[i].kill(); err != nil {
				errs = append(errs, err)
			}
		}
		if os.Getenv("TABBY_KEEP_ENV") == "1" {
			e.logf("k8senv: TABBY_KEEP_ENV=1, keeping %s", e.dir)
		} else if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove temp dir: %w", err))
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// Kubectl runs the cached kubectl against the Env (--kubeconfig, and a
// discovery cache private to this Env) and returns its output. A non-zero
// exit is an error that includes stderr.
func (e *Env) Kubectl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	full := append([]string{"--kubeconfig", e.Kubeconfig, "--cache-dir", filepath.Join(e.dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	if err := cmd.Run(); err != nil {
		return out.String(), errb.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(tail(errb.Bytes(), 10)))
	}
	return out.String(), errb.String(), nil
}
