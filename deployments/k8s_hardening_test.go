package deployments

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// decodeStrict turns a parsed manifest into a k8s.io/api type, refusing fields the
// type does not have (a misspelt or misplaced field would be dropped by the API server
// without a word).
func decodeStrict(t *testing.T, where string, doc any, into any) {
	t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%s does not decode as %T: %v", where, into, err)
	}
}

func typedDeployment(t *testing.T, d *deployment) *appsv1.Deployment {
	t.Helper()
	var dep appsv1.Deployment
	decodeStrict(t, d.obj.file, d.obj.doc, &dep)
	return &dep
}

// restrictedViolations evaluates a pod template with the upstream Pod Security
// evaluator (what the API server's admission runs) at the restricted level.
func restrictedViolations(t *testing.T, tmpl *corev1.PodTemplateSpec) []string {
	t.Helper()
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	var out []string
	for _, r := range eval.EvaluatePod(lv, &tmpl.ObjectMeta, &tmpl.Spec) {
		if !r.Allowed {
			out = append(out, r.ForbiddenReason+" ("+r.ForbiddenDetail+")")
		}
	}
	return out
}

// The namespace enforces the restricted Pod Security profile and every Deployment's
// pods pass it. The evaluator is shown to refuse the same pods without their seccomp
// profile, so a pass means something.
func TestKubernetesPodsPassRestrictedPodSecurity(t *testing.T) {
	applied, _ := loadK8s(t)
	ns := str(readYAML(t, "k8s/kustomization.yaml")[0]["namespace"])
	var enforced bool
	for _, o := range applied {
		if o.kind() == "Namespace" {
			var n corev1.Namespace
			decodeStrict(t, o.file, o.doc, &n)
			enforced = n.Name == ns && n.Labels[psaapi.EnforceLevelLabel] == string(psaapi.LevelRestricted)
		}
	}
	if !enforced {
		t.Errorf("kustomization.yaml applies no Namespace %q with %s=restricted", ns, psaapi.EnforceLevelLabel)
	}
	for role, d := range deployments(t, applied) {
		dep := typedDeployment(t, d)
		if v := restrictedViolations(t, &dep.Spec.Template); len(v) > 0 {
			t.Errorf("%s (%s): the restricted Pod Security profile forbids its pods: %s", d.obj.file, role, strings.Join(v, "; "))
		}
		weakened := dep.Spec.Template.DeepCopy()
		weakened.Spec.SecurityContext.SeccompProfile = nil
		for i := range weakened.Spec.Containers {
			weakened.Spec.Containers[i].SecurityContext.SeccompProfile = nil
		}
		if len(restrictedViolations(t, weakened)) == 0 {
			t.Errorf("%s: the evaluator allows the pods without a seccomp profile; it is not checking restricted", d.obj.file)
		}
	}
}

// Every Deployment runs a pinned sluice image, and kustomization.yaml's images entry
// pins the same tag (the one place to change it).
func TestKubernetesImagesArePinned(t *testing.T) {
	applied, _ := loadK8s(t)
	var pinned string
	for _, img := range list(readYAML(t, "k8s/kustomization.yaml")[0]["images"]) {
		if str(get(img, "name")) == "sluice" {
			pinned = str(get(img, "newTag"))
		}
	}
	if pinned == "" || pinned == "latest" {
		t.Errorf("kustomization.yaml images: no pinned newTag for sluice (got %q)", pinned)
	}
	for role, d := range deployments(t, applied) {
		for _, c := range typedDeployment(t, d).Spec.Template.Spec.Containers {
			name, tag, _ := strings.Cut(c.Image, ":")
			if name != "sluice" || tag == "" || tag == "latest" {
				t.Errorf("%s (%s): image %q, want sluice:<version>", d.obj.file, role, c.Image)
			} else if tag != pinned {
				t.Errorf("%s (%s): image tag %s, kustomization.yaml pins %s", d.obj.file, role, tag, pinned)
			}
		}
	}
}

// Replicas of a role spread over zones and nodes, counting only that role's pods.
func TestKubernetesTopologySpread(t *testing.T) {
	applied, _ := loadK8s(t)
	for role, d := range deployments(t, applied) {
		spec := typedDeployment(t, d).Spec.Template.Spec
		keys := map[string]bool{}
		for _, c := range spec.TopologySpreadConstraints {
			if c.LabelSelector == nil || !selects(anyMap(c.LabelSelector.MatchLabels), d.labels) {
				t.Errorf("%s (%s): spread over %s counts pods its selector does not match", d.obj.file, role, c.TopologyKey)
				continue
			}
			for k, v := range c.LabelSelector.MatchLabels {
				if v != str(d.labels[k]) {
					t.Errorf("%s (%s): spread selector %s=%s", d.obj.file, role, k, v)
				}
			}
			if _, ok := c.LabelSelector.MatchLabels["app.kubernetes.io/component"]; !ok {
				t.Errorf("%s (%s): spread over %s counts every sluice pod, not this role's", d.obj.file, role, c.TopologyKey)
			}
			keys[c.TopologyKey] = true
		}
		for _, k := range []string{corev1.LabelTopologyZone, corev1.LabelHostname} {
			if !keys[k] {
				t.Errorf("%s (%s): no topology spread over %s", d.obj.file, role, k)
			}
		}
	}
}

func anyMap(m map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// NetworkPolicies deny traffic into sluice pods by default and let through exactly the
// port each role serves: the API and downloads from anywhere, the metrics ports of the
// workers and the edges from the monitoring namespace only.
func TestKubernetesNetworkPolicy(t *testing.T) {
	applied, _ := loadK8s(t)
	var policies []networkingv1.NetworkPolicy
	for _, o := range applied {
		if o.kind() == "NetworkPolicy" {
			var p networkingv1.NetworkPolicy
			decodeStrict(t, o.file, o.doc, &p)
			policies = append(policies, p)
		}
	}
	for role, d := range deployments(t, applied) {
		var isolated bool
		// from lists, per port the policies open, the peers each rule admits.
		from := map[int][][]networkingv1.NetworkPolicyPeer{}
		for _, p := range policies {
			if !selects(anyMap(p.Spec.PodSelector.MatchLabels), d.labels) || !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				continue
			}
			isolated = true
			for _, rule := range p.Spec.Ingress {
				for _, rp := range rule.Ports {
					if rp.Port != nil {
						port := d.resolvePort(rp.Port.String())
						from[port] = append(from[port], rule.From)
					}
				}
				if len(rule.Ports) == 0 {
					t.Errorf("NetworkPolicy %s lets every port of the %s pods through", p.Name, role)
				}
			}
		}
		if !isolated {
			t.Errorf("no NetworkPolicy isolates the %s pods", role)
		}
		port, mport := listenPort(t, role, d.env), metricsPort(t, role, d.env)
		for _, p := range []int{port, mport} {
			if _, open := from[p]; !open {
				t.Errorf("no NetworkPolicy lets traffic reach port %d, where `sluice %s` listens", p, role)
			}
		}
		// A metrics port of its own (workers, edges) is Prometheus' only.
		if role == "worker" || mport != port {
			for _, peers := range from[mport] {
				if len(peers) == 0 {
					t.Errorf("the %s's metrics port is open to every pod; only Prometheus needs it", role)
				}
				for _, peer := range peers {
					if peer.NamespaceSelector == nil || peer.NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != "monitoring" {
						t.Errorf("the %s's metrics port is open to %v, not the monitoring namespace", role, peer)
					}
				}
			}
		}
	}
	var defaultDeny bool
	for _, p := range policies {
		defaultDeny = defaultDeny || (len(p.Spec.Ingress) == 0 && maps.Equal(p.Spec.PodSelector.MatchLabels, map[string]string{"app.kubernetes.io/name": "sluice"}))
	}
	if !defaultDeny {
		t.Error("no default-deny NetworkPolicy for the sluice pods")
	}
}

// The ServiceMonitor reaches every role's /metrics through a Service, with the role as
// the job label (what the dashboard and alerts.yml filter on).
func TestKubernetesServiceMonitor(t *testing.T) {
	applied, all := loadK8s(t)
	deps := deployments(t, applied)
	ns := str(readYAML(t, "k8s/kustomization.yaml")[0]["namespace"])
	var sm *k8sObject
	for _, o := range all {
		if o.kind() == "ServiceMonitor" {
			sm = &o
		}
	}
	if sm == nil {
		t.Fatal("no ServiceMonitor in deployments/k8s")
	}
	if str(get(sm.doc, "apiVersion")) != "monitoring.coreos.com/v1" {
		t.Errorf("ServiceMonitor apiVersion %v", get(sm.doc, "apiVersion"))
	}
	if !slices.Contains(strAll(list(get(sm.doc, "spec", "namespaceSelector", "matchNames"))), ns) {
		t.Errorf("the ServiceMonitor does not look in namespace %s", ns)
	}
	jobLabel := str(get(sm.doc, "spec", "jobLabel"))
	endpoints := map[string]string{} // port name → path
	for _, e := range list(get(sm.doc, "spec", "endpoints")) {
		endpoints[str(get(e, "port"))] = str(get(e, "path"))
	}
	scraped := map[string]bool{}
	for _, o := range applied {
		if o.kind() != "Service" || !selects(mapOf(get(sm.doc, "spec", "selector", "matchLabels")), mapOf(get(o.doc, "metadata", "labels"))) {
			continue
		}
		var svc corev1.Service
		decodeStrict(t, o.file, o.doc, &svc)
		for role, d := range deps {
			if !selects(anyMap(svc.Spec.Selector), d.labels) {
				continue
			}
			if got := svc.Labels[jobLabel]; got != role {
				t.Errorf("Service %s: the ServiceMonitor's job label %s is %q, want the role %s", svc.Name, jobLabel, got, role)
			}
			for _, p := range svc.Spec.Ports {
				path, ok := endpoints[p.Name]
				if !ok {
					continue
				}
				// Every port the ServiceMonitor selects is scraped: one that is not the
				// role's /metrics would be a target down for ever (SluiceTargetDown).
				if d.resolvePort(p.TargetPort.String()) != metricsPort(t, role, d.env) || (path != "" && path != "/metrics") {
					t.Errorf("Service %s: the ServiceMonitor scrapes port %s (%s%s), which is not the %s's /metrics", svc.Name, p.Name, p.TargetPort.String(), path, role)
					continue
				}
				scraped[role] = true
			}
		}
	}
	for role := range deps {
		if !scraped[role] {
			t.Errorf("the ServiceMonitor scrapes no Service port reaching the %s's /metrics", role)
		}
	}
}

// checkScaleDown: with a minimum above zero, KEDA's cooldownPeriod is ignored, so the
// pace of scaling down is the HPA behavior KEDA passes on.
func checkScaleDown(t *testing.T, o k8sObject) {
	t.Helper()
	if n := str(get(o.doc, "spec", "minReplicaCount")); n != "" && n != "0" && get(o.doc, "spec", "cooldownPeriod") != nil {
		t.Errorf("%s: cooldownPeriod does nothing with minReplicaCount %s; use advanced.horizontalPodAutoscalerConfig.behavior", o.file, n)
	}
	raw := get(o.doc, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior")
	if raw == nil {
		t.Errorf("%s: no advanced.horizontalPodAutoscalerConfig.behavior", o.file)
		return
	}
	var b autoscalingv2.HorizontalPodAutoscalerBehavior
	decodeStrict(t, o.file+" behavior", raw, &b)
	if b.ScaleDown == nil || b.ScaleDown.StabilizationWindowSeconds == nil || *b.ScaleDown.StabilizationWindowSeconds < 60 || len(b.ScaleDown.Policies) == 0 {
		t.Errorf("%s: scaleDown %+v: want a stabilization window of a minute or more and a rate policy", o.file, b.ScaleDown)
	}
}

// The init Job runs `sluice init` in a pod the restricted profile admits, with the
// pinned image and the same NATS and S3 settings as the workers, and only variables
// init reads.
func TestKubernetesInitJob(t *testing.T) {
	applied, _ := loadK8s(t)
	var job *batchv1.Job
	for _, o := range applied {
		if o.kind() == "Job" {
			job = &batchv1.Job{}
			decodeStrict(t, o.file, o.doc, job)
		}
	}
	if job == nil {
		t.Fatal("kustomization.yaml applies no Job running sluice init")
	}
	if v := restrictedViolations(t, &job.Spec.Template); len(v) > 0 {
		t.Errorf("Job %s: the restricted Pod Security profile forbids its pod: %s", job.Name, strings.Join(v, "; "))
	}
	c := job.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "init" {
		t.Fatalf("Job %s runs %v, want sluice init", job.Name, c.Args)
	}
	if name, tag, _ := strings.Cut(c.Image, ":"); name != "sluice" || tag == "" || tag == "latest" {
		t.Errorf("Job %s: image %q, want sluice:<version>", job.Name, c.Image)
	}
	if p := job.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		t.Errorf("Job %s: restartPolicy %q", job.Name, p)
	}
	reads := initSettings(t)
	worker := deployments(t, applied)["worker"]
	for _, e := range c.Env {
		if !reads[e.Name] {
			t.Errorf("Job %s sets %s, which `sluice init` does not read", job.Name, e.Name)
		}
		if e.ValueFrom != nil {
			continue
		}
		if got, ok := worker.env[e.Name]; ok && got != e.Value {
			t.Errorf("Job %s: %s=%q, the workers run with %q", job.Name, e.Name, e.Value, got)
		}
	}
}
