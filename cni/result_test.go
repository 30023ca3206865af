package cni

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
)

func TestResultVersions(t *testing.T) {
	r := buildResult(attachment{HostIfName: "cali0123456789a", HostMAC: "ee:ee:ee:ee:ee:ee", IfName: "eth0",
		MAC: "aa:bb:cc:00:11:22", Netns: "/run/netns/pod", IP: netip.MustParseAddr("10.65.0.9")})
	for _, v := range SupportedVersions {
		res, err := resultAs(r, v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var buf bytes.Buffer
		if err := res.PrintTo(&buf); err != nil {
			t.Fatal(err)
		}
		var got struct {
			CNIVersion string `json:"cniVersion"`
			Interfaces []struct {
				Name, Mac, Sandbox string
			}
			IPs []struct {
				Version   string `json:"version"`
				Interface *int   `json:"interface"`
				Address   string `json:"address"`
				Gateway   string `json:"gateway"`
			} `json:"ips"`
			Routes []struct {
				Dst string `json:"dst"`
				GW  string `json:"gw"`
			} `json:"routes"`
		}
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v\n%s", v, err, buf.String())
		}
		if got.CNIVersion != v {
			t.Errorf("%s: cniVersion %q", v, got.CNIVersion)
		}
		if len(got.Interfaces) != 2 || got.Interfaces[1].Name != "eth0" || got.Interfaces[1].Sandbox != "/run/netns/pod" ||
			got.Interfaces[1].Mac != "aa:bb:cc:00:11:22" || got.Interfaces[0].Sandbox != "" {
			t.Errorf("%s: interfaces %+v", v, got.Interfaces)
		}
		if len(got.IPs) != 1 || got.IPs[0].Address != "10.65.0.9/32" || got.IPs[0].Gateway != "169.254.1.1" ||
			got.IPs[0].Interface == nil || *got.IPs[0].Interface != 1 {
			t.Errorf("%s: ips %+v", v, got.IPs)
		}
		// 0.4.0 results name the IP version; 1.0.0 dropped the field.
		if wantVer := map[string]string{"0.4.0": "4"}[v]; got.IPs[0].Version != wantVer {
			t.Errorf("%s: ips[0].version %q, want %q", v, got.IPs[0].Version, wantVer)
		}
		if len(got.Routes) != 1 || got.Routes[0].Dst != "0.0.0.0/0" || got.Routes[0].GW != "169.254.1.1" {
			t.Errorf("%s: routes %+v", v, got.Routes)
		}
	}
}

func TestVersionInfo(t *testing.T) {
	got := VersionInfo.SupportedVersions()
	want := []string{"0.4.0", "1.0.0", "1.1.0"}
	if len(got) != len(want) {
		t.Fatalf("versions %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("versions %v, want %v", got, want)
		}
	}
}
