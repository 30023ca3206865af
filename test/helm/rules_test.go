package helm

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// renderedRBAC is the RBAC of one render: roles by namespace/name (namespace "" for
// ClusterRoles) and bindings.
type renderedRBAC struct {
	clusterRoles map[string]*rbacv1.ClusterRole
	roles        map[string]*rbacv1.Role // namespace/name
	crbs         []*rbacv1.ClusterRoleBinding
	rbs          []*rbacv1.RoleBinding
}

func readRBAC(t *testing.T, objs []*unstructured.Unstructured) *renderedRBAC {
	t.Helper()
	r := &renderedRBAC{clusterRoles: map[string]*rbacv1.ClusterRole{}, roles: map[string]*rbacv1.Role{}}
	conv := runtime.DefaultUnstructuredConverter
	for _, o := range objs {
		var err error
		switch o.GetKind() {
		case "ClusterRole":
			v := &rbacv1.ClusterRole{}
			err = conv.FromUnstructured(o.Object, v)
			r.clusterRoles[v.Name] = v
		case "Role":
			v := &rbacv1.Role{}
			err = conv.FromUnstructured(o.Object, v)
			r.roles[v.Namespace+"/"+v.Name] = v
		case "ClusterRoleBinding":
			v := &rbacv1.ClusterRoleBinding{}
			err = conv.FromUnstructured(o.Object, v)
			r.crbs = append(r.crbs, v)
		case "RoleBinding":
			v := &rbacv1.RoleBinding{}
			err = conv.FromUnstructured(o.Object, v)
			r.rbs = append(r.rbs, v)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	return r
}

func bindsSA(subjects []rbacv1.Subject, sa string) bool {
	for _, s := range subjects {
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == namespace {
			return true
		}
	}
	return false
}

func ruleGrants(rules []rbacv1.PolicyRule, p perm) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, p.group) && slices.Contains(r.Resources, p.resource) && slices.Contains(r.Verbs, p.verb) {
			return true
		}
	}
	return false
}

// grants reports whether the rendered RBAC gives p (a plain reading of the rules,
// enough for rules without wildcards, which TestRenderedRBAC checks there are none).
func (r *renderedRBAC) grants(p perm) bool {
	for _, b := range r.crbs {
		if b.RoleRef.Kind == "ClusterRole" && bindsSA(b.Subjects, p.sa) {
			if cr := r.clusterRoles[b.RoleRef.Name]; cr != nil && ruleGrants(cr.Rules, p) {
				return true
			}
		}
	}
	if p.ns == "" {
		return false
	}
	for _, b := range r.rbs {
		if b.Namespace != p.ns || !bindsSA(b.Subjects, p.sa) {
			continue
		}
		if b.RoleRef.Kind == "Role" {
			if ro := r.roles[b.Namespace+"/"+b.RoleRef.Name]; ro != nil && ruleGrants(ro.Rules, p) {
				return true
			}
		}
	}
	return false
}

// noWildcards fails on a "*" in any rule of any role.
func (r *renderedRBAC) noWildcards(t *testing.T) {
	t.Helper()
	check := func(kind, name string, rules []rbacv1.PolicyRule) {
		for i, rule := range rules {
			for _, list := range [][]string{rule.Verbs, rule.Resources, rule.APIGroups, rule.NonResourceURLs} {
				if slices.Contains(list, "*") {
					t.Errorf("%s %s rule %d has a wildcard: %+v", kind, name, i, rule)
				}
			}
			if len(rule.NonResourceURLs) > 0 {
				t.Errorf("%s %s rule %d grants non-resource URLs: %+v", kind, name, i, rule)
			}
		}
	}
	for n, cr := range r.clusterRoles {
		check("ClusterRole", n, cr.Rules)
	}
	for n, ro := range r.roles {
		check("Role", n, ro.Rules)
	}
}

// TestRenderedRBAC checks the rendered roles against the permission list for several
// feature sets: what a feature that is on needs is granted; what only a feature that
// is off needs is not; the denied list never is; no rule has a wildcard.
func TestRenderedRBAC(t *testing.T) {
	cases := []struct {
		name   string
		files  []string
		set    []string
		on     []string
		cniSet bool
	}{
		{"defaults", nil, nil, []string{always, featBGP, featPolicy}, true},
		{"peers-vm", valuesFiles, nil, []string{always, featBGP, featPolicy, featVM}, true},
		{"minimal", nil, []string{"--set", "bgp.enabled=false,policy.enabled=false"}, []string{always}, true},
		{"no-cni", nil, []string{"--set", "cni.install=false,vmEndpoints.enabled=true"}, []string{always, featBGP, featPolicy, featVM}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := render(t, c.files, c.set...)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := parseManifests(out)
			if err != nil {
				t.Fatal(err)
			}
			r := readRBAC(t, objs)
			r.noWildcards(t)
			on := func(p perm) bool {
				return slices.Contains(c.on, p.feature) && (p.sa != saCNI || c.cniSet)
			}
			for _, p := range needed {
				want := on(p)
				if !want {
					// Off unless another entry that is on needs the same thing.
					for _, q := range needed {
						if q.sa == p.sa && q.verb == p.verb && q.group == p.group && q.resource == p.resource && q.ns == p.ns && on(q) {
							want = true
						}
					}
				}
				if got := r.grants(p); got != want {
					t.Errorf("%v (%s; feature %q): granted %v, want %v", p, p.why, p.feature, got, want)
				}
			}
			for _, p := range denied {
				if r.grants(p) {
					t.Errorf("%v: granted, want denied", p)
				}
			}
		})
	}
}
