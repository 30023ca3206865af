package helm

import (
	"flag"
	"os"
	"testing"

	"github.com/tabbynet/tabby/test/k8senv"
)

// env is the package's API server (nil when it could not start: the tests that need it
// skip, or fail under CI=true). The chart installs the CRDs itself, so none are
// preinstalled.
var env *k8senv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // make unit: no helm build, no control plane
		os.Exit(m.Run())
	}
	k8senv.Main(m, k8senv.Options{}, &env)
}
