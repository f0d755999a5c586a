package deployments

import (
	"encoding/base64"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// k8sObject is one manifest.
type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string { return str(o.doc["kind"]) }
func (o k8sObject) name() string { return str(get(o.doc, "metadata", "name")) }

// loadK8s reads the manifests kustomization.yaml applies, plus the documented
// alternatives and the example Secret.
func loadK8s(t *testing.T) (applied, all []k8sObject) {
	t.Helper()
	kust := readYAML(t, "k8s/kustomization.yaml")[0]
	resources := strAll(list(kust["resources"]))
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" {
			continue
		}
		for _, d := range readYAML(t, f) {
			o := k8sObject{file: base, doc: d}
			all = append(all, o)
			if slices.Contains(resources, base) {
				applied = append(applied, o)
			}
		}
	}
	for _, r := range resources {
		if _, err := os.Stat(filepath.Join("k8s", r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	return applied, all
}

// deployment is a sluice Deployment's container as deployed.
type deployment struct {
	obj        k8sObject
	role       string
	labels     map[string]any
	container  map[string]any
	env        map[string]string    // literal values
	fromSecret map[string][2]string // variable → secret name, key
	ports      map[string]int       // port name → container port
}

func deployments(t *testing.T, objs []k8sObject) map[string]*deployment {
	t.Helper()
	out := map[string]*deployment{}
	for _, o := range objs {
		if o.kind() != "Deployment" {
			continue
		}
		c := mapOf(get(o.doc, "spec", "template", "spec", "containers", 0))
		d := &deployment{obj: o, role: str(get(c, "args", 0)), container: c,
			labels: mapOf(get(o.doc, "spec", "template", "metadata", "labels")),
			env:    map[string]string{}, fromSecret: map[string][2]string{}, ports: map[string]int{}}
		for _, e := range list(c["env"]) {
			name := str(get(e, "name"))
			if ref := mapOf(get(e, "valueFrom", "secretKeyRef")); ref != nil {
				d.fromSecret[name] = [2]string{str(ref["name"]), str(ref["key"])}
				d.env[name] = "<secret>"
				continue
			}
			d.env[name] = str(get(e, "value"))
		}
		for _, p := range list(c["ports"]) {
			n, _ := strconv.Atoi(str(get(p, "containerPort")))
			d.ports[str(get(p, "name"))] = n
		}
		out[d.role] = d
	}
	return out
}

// resolvePort turns a probe's or Service's port (a name or a number) into a number.
func (d *deployment) resolvePort(p any) int {
	if n, err := strconv.Atoi(str(p)); err == nil {
		return n
	}
	return d.ports[str(p)]
}

func selects(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if str(labels[k]) != str(v) {
			return false
		}
	}
	return true
}

// The Deployments run the roles with variables those roles read, secrets from the
// Secret, probes on the paths and ports the roles serve, resource requests, and a grace
// period covering the graceful shutdown; Services, PodDisruptionBudgets and the KEDA
// scaler point at them; the scaler watches the stream and consumer the code creates.
func TestKubernetesManifests(t *testing.T) {
	applied, all := loadK8s(t)
	deps := deployments(t, applied)
	for _, role := range []string{"ingress", "worker", "edge"} {
		if deps[role] == nil {
			t.Fatalf("no Deployment runs `sluice %s`", role)
		}
	}
	secretKeys := map[string]bool{}
	for _, o := range all {
		if o.kind() == "Secret" && o.name() == "sluice-secrets" {
			for k := range mapOf(get(o.doc, "stringData")) {
				secretKeys[k] = true
			}
		}
	}
	for role, d := range deps {
		where := d.obj.file + " (" + d.obj.name() + ")"
		if _, ok := listenSetting[role]; !ok {
			t.Errorf("%s runs `sluice %s`, not a server role", where, role)
			continue
		}
		if img := str(d.container["image"]); img != "sluice" && !strings.HasPrefix(img, "sluice:") {
			t.Errorf("%s: image %s, want the sluice image (deployments/Dockerfile)", where, img)
		}
		if !selects(mapOf(get(d.obj.doc, "spec", "selector", "matchLabels")), d.labels) {
			t.Errorf("%s: the selector does not match the pod labels", where)
		}
		checkEnv(t, where, role, d.env)
		for name, ref := range d.fromSecret {
			if ref[0] != "sluice-secrets" || !secretKeys[ref[1]] {
				t.Errorf("%s: %s comes from secret %s key %s, not a key of sluice-secrets (secret.example.yaml)", where, name, ref[0], ref[1])
			}
		}
		for _, secret := range []string{"SLUICE_SIGNING_KEYS", "SLUICE_ADMIN_KEY", "SLUICE_S3_SECRET_KEY"} {
			if _, literal := d.env[secret]; literal && d.fromSecret[secret] == [2]string{} {
				t.Errorf("%s: %s is written in the manifest; take it from the Secret", where, secret)
			}
		}
		if role != "ingress" && d.fromSecret["SLUICE_SIGNING_KEYS"] == [2]string{} {
			t.Errorf("%s: no SLUICE_SIGNING_KEYS from the Secret", where)
		}
		if role != "edge" && d.env["SLUICE_NATS_REPLICAS"] != "3" {
			t.Errorf("%s: SLUICE_NATS_REPLICAS=%q, want 3", where, d.env["SLUICE_NATS_REPLICAS"])
		}
		port := listenPort(t, role, d.env)
		for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
			p := mapOf(get(d.container, probe, "httpGet"))
			if p == nil {
				t.Errorf("%s: no %s", where, probe)
				continue
			}
			if str(p["path"]) != path {
				t.Errorf("%s: %s on %s, want %s", where, probe, p["path"], path)
			}
			if got := d.resolvePort(p["port"]); got != port {
				t.Errorf("%s: %s on port %v (%d), but `sluice %s` listens on %d", where, probe, p["port"], got, role, port)
			}
		}
		for _, r := range []string{"cpu", "memory"} {
			if str(get(d.container, "resources", "requests", r)) == "" {
				t.Errorf("%s: no %s request", where, r)
			}
		}
		if get(d.obj.doc, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: pods do not require runAsNonRoot", where)
		}
		grace := 30 * time.Second // Kubernetes' default
		if g := str(get(d.obj.doc, "spec", "template", "spec", "terminationGracePeriodSeconds")); g != "" {
			n, _ := strconv.Atoi(g)
			grace = time.Duration(n) * time.Second
		}
		if budget := shutdownBudget(t, role, d.env); grace < budget {
			t.Errorf("%s: terminationGracePeriodSeconds %s is shorter than the graceful shutdown (%s)", where, grace, budget)
		}
		if ann, mp := str(get(d.obj.doc, "spec", "template", "metadata", "annotations", "prometheus.io/port")), metricsPort(t, role, d.env); ann != strconv.Itoa(mp) {
			t.Errorf("%s: prometheus.io/port %q, /metrics is on %d", where, ann, mp)
		}
	}

	pdbs := map[string]bool{}
	var scaled bool
	for _, o := range applied {
		switch o.kind() {
		case "Service":
			var target *deployment
			for _, d := range deps {
				if selects(mapOf(get(o.doc, "spec", "selector")), d.labels) {
					target = d
				}
			}
			if target == nil {
				t.Errorf("Service %s selects no sluice Deployment", o.name())
				continue
			}
			for _, p := range list(get(o.doc, "spec", "ports")) {
				got := target.resolvePort(get(p, "targetPort"))
				if got != listenPort(t, target.role, target.env) && got != metricsPort(t, target.role, target.env) {
					t.Errorf("Service %s targets port %v, `sluice %s` listens on %d (and %d for /metrics)", o.name(), get(p, "targetPort"),
						target.role, listenPort(t, target.role, target.env), metricsPort(t, target.role, target.env))
				}
			}
		case "PodDisruptionBudget":
			for role, d := range deps {
				if selects(mapOf(get(o.doc, "spec", "selector", "matchLabels")), d.labels) {
					pdbs[role] = true
				}
			}
		case "ScaledObject":
			scaled = true // checked below with the alternatives
		}
	}
	for role := range deps {
		if !pdbs[role] {
			t.Errorf("no PodDisruptionBudget covers the %s pods", role)
		}
	}
	if !scaled {
		t.Error("kustomization.yaml applies no KEDA ScaledObject for the workers")
	}
	for _, o := range all {
		if o.kind() == "ScaledObject" {
			checkScaledObject(t, o, deps["worker"])
		}
	}
}

func checkScaledObject(t *testing.T, o k8sObject, worker *deployment) {
	t.Helper()
	if ref := str(get(o.doc, "spec", "scaleTargetRef", "name")); ref != worker.obj.name() {
		t.Errorf("%s scales %q, the worker Deployment is %q", o.file, ref, worker.obj.name())
	}
	checkScaleDown(t, o)
	for _, trig := range list(get(o.doc, "spec", "triggers")) {
		if str(get(trig, "type")) != "nats-jetstream" {
			continue
		}
		md := mapOf(get(trig, "metadata"))
		if str(md["stream"]) != queue.TicketStream || str(md["consumer"]) != queue.AdmissionConsumer {
			t.Errorf("%s watches stream %v consumer %v; the code uses %s and %s", o.file, md["stream"], md["consumer"], queue.TicketStream, queue.AdmissionConsumer)
		}
	}
}

// Each Deployment's container, run from the built binary with the manifest's own
// variables (dependencies pointed at test servers), serves its probe paths on the
// port the probes use: 200 from /healthz and /readyz.
func TestKubernetesProbesAnswer(t *testing.T) {
	applied, _ := loadK8s(t)
	redis := testenv.StartRedis(t)
	nats := testenv.StartNATS(t)
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, role := range []string{"edge", "worker", "ingress"} {
		d := deployments(t, applied)[role]
		t.Run(role, func(t *testing.T) {
			env := maps.Clone(d.env)
			for name := range env {
				if strings.HasPrefix(name, "SLUICE_S3_") {
					delete(env, name) // objects on local disk instead of a MinIO
				}
			}
			env["SLUICE_NATS_URL"] = nats.URL
			env["SLUICE_NATS_REPLICAS"] = "1"
			env["SLUICE_REDIS_URL"] = redis.URL
			env["SLUICE_DATA_DIR"] = t.TempDir()
			if _, ok := d.fromSecret["SLUICE_SIGNING_KEYS"]; ok {
				env["SLUICE_SIGNING_KEYS"] = "k1:" + key
			}
			if _, ok := d.fromSecret["SLUICE_ADMIN_KEY"]; ok {
				env["SLUICE_ADMIN_KEY"] = "slk_probe_test_operator_key"
			}
			// The manifest's ports, moved to free ones on loopback.
			port, mport := testenv.FreePort(t), testenv.FreePort(t)
			env[listenSetting[role]] = "127.0.0.1:" + strconv.Itoa(port)
			if metricsSetting[role] != listenSetting[role] {
				env[metricsSetting[role]] = "127.0.0.1:" + strconv.Itoa(mport)
			} else {
				mport = port
			}
			var kv []string
			for k, v := range env {
				kv = append(kv, k+"="+v)
			}
			p := testenv.Start(t, t.TempDir(), sluiceBin, kv, str(get(d.container, "args", 0)))
			base := "http://127.0.0.1:" + strconv.Itoa(port)
			testenv.WaitHTTP(t, base+str(get(d.container, "livenessProbe", "httpGet", "path")), 20*time.Second, p.Log)
			path := str(get(d.container, "readinessProbe", "httpGet", "path"))
			deadline := time.Now().Add(20 * time.Second)
			for {
				resp, err := http.Get(base + path)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				if time.Now().After(deadline) {
					out, _ := os.ReadFile(p.Log)
					t.Fatalf("`sluice %s` does not answer 200 on %s (readinessProbe): %v %v\n%s", role, path, err, resp, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// /metrics on its port; the edge's public port has neither it nor /debug/edge.
			if code := getStatus(t, "http://127.0.0.1:"+strconv.Itoa(mport)+"/metrics"); code != http.StatusOK {
				t.Errorf("`sluice %s`: /metrics on its metrics port answers %d", role, code)
			}
			if role == "edge" {
				for _, path := range []string{"/metrics", "/debug/edge"} {
					if code := getStatus(t, base+path); code != http.StatusNotFound {
						t.Errorf("the edge's public port answers %d to %s, want 404", code, path)
					}
				}
			}
			// docker-compose.yml's healthcheck: `sluice health <role>` with the role's
			// own environment finds the listener and passes.
			health := exec.Command(sluiceBin, "health", role)
			health.Env = kv
			if out, err := health.CombinedOutput(); err != nil {
				t.Errorf("sluice health %s with the role's environment: %v\n%s", role, err, out)
			}
		})
	}
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
