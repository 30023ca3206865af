package vmendpoint

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestDesiredGolden")

// TestDesiredGolden: each testdata/*.xml domain (active unless its name says
// inactive) gives the endpoints in testdata/<name>.golden.json.
func TestDesiredGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.xml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	opts := Options{Node: "node-1", DefaultNamespace: "vms", TapPrefixes: []string{"tap", "vnet"}}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".xml")
		t.Run(name, func(t *testing.T) {
			x, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var dx libvirtxml.Domain
			if err := dx.Unmarshal(string(x)); err != nil {
				t.Fatal(err)
			}
			d := Domain{UUID: dx.UUID, Name: dx.Name, Active: !strings.HasPrefix(name, "inactive"), XML: string(x)}
			got, err := DesiredEndpoints(d, opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
			golden := strings.TrimSuffix(f, ".xml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestDesiredGolden -update)", err)
			}
			if string(b) != string(want) {
				t.Fatalf("%s differs\n got %s\nwant %s", golden, b, want)
			}
		})
	}
}

func TestDesiredBadXML(t *testing.T) {
	if _, err := DesiredEndpoints(Domain{Name: "x", XML: "<domain"}, Options{}); err == nil || !strings.Contains(err.Error(), "parse the XML of domain x") {
		t.Fatalf("error %v", err)
	}
}

func TestDesiredNoPrefixTakesEveryTap(t *testing.T) {
	x, err := os.ReadFile("testdata/basic.xml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := DesiredEndpoints(Domain{UUID: "u", Name: "web-1", Active: true, XML: string(x)}, Options{Node: "n", DefaultNamespace: "d"})
	if err != nil {
		t.Fatal(err)
	}
	var taps []string
	for _, e := range got.Endpoints {
		taps = append(taps, e.Tap)
	}
	if strings.Join(taps, ",") != "macvlan9,tap-web1,vnet0" {
		t.Fatalf("taps %v, want every ethernet interface", taps)
	}
}

func TestEndpointName(t *testing.T) {
	for _, tc := range []struct{ node, dom, tap, want string }{
		{"node-1", "web-1", "vnet0", "node-1-libvirt-web-1-vnet0"},
		{"Node-1", "Web-1", "vnet0", "node-1-libvirt-web-1-vnet0"},
		{"node-1", "web_1", "vnet0", "node-1-libvirt-web-1-vnet0-"},
		{"node-1", "web 1", "vnet0", "node-1-libvirt-web-1-vnet0-"},
	} {
		got := EndpointName(tc.node, tc.dom, tc.tap)
		if !strings.HasPrefix(got, tc.want) || (strings.HasSuffix(tc.want, "-") && len(got) != len(tc.want)+hashLen) {
			t.Errorf("EndpointName(%q, %q, %q) = %q, want %q...", tc.node, tc.dom, tc.tap, got, tc.want)
		}
	}
	if EndpointName("n", "web_1", "t") == EndpointName("n", "web 1", "t") {
		t.Error("two domain names that sanitise alike share an endpoint name")
	}
	long := EndpointName("n", strings.Repeat("x", 300), "t")
	if len(long) != maxNameLen {
		t.Errorf("long name has %d characters, want %d", len(long), maxNameLen)
	}
}
