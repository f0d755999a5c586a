package deployments

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// composeService is one service of docker-compose.yml, merges resolved.
type composeService struct {
	name string
	raw  map[string]any
	role string // ingress, worker, edge for sluice's own services
	env  map[string]string
}

func loadCompose(t *testing.T) map[string]*composeService {
	t.Helper()
	docs := readYAML(t, "../docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml: %d documents", len(docs))
	}
	out := map[string]*composeService{}
	for name, v := range mapOf(docs[0]["services"]) {
		s := &composeService{name: name, raw: mapOf(v), env: map[string]string{}}
		for k, e := range mapOf(s.raw["environment"]) {
			s.env[k] = str(e)
		}
		if strings.HasPrefix(str(s.raw["image"]), "sluice") {
			s.role = str(get(s.raw, "command", 0))
		}
		out[name] = s
	}
	return out
}

func byRole(services map[string]*composeService, role string) []*composeService {
	var out []*composeService
	for _, s := range services {
		if s.role == role {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *composeService) int { return strings.Compare(a.name, b.name) })
	return out
}

// containerPorts lists the container side of a service's published ports.
func containerPorts(s *composeService) []int {
	var ports []int
	for _, p := range list(s.raw["ports"]) {
		spec := str(p)
		n, _ := strconv.Atoi(spec[strings.LastIndexByte(spec, ':')+1:])
		ports = append(ports, n)
	}
	return ports
}

// The production shape: one ingress, two workers, two edges, each running the role its
// name says with only variables that role reads, against the three NATS nodes with
// replicated streams, Redis, MinIO, on the ports the roles listen on, stopped no
// sooner than their graceful shutdown takes.
func TestComposeRunsTheRoles(t *testing.T) {
	services := loadCompose(t)
	want := map[string]int{"ingress": 1, "worker": 2, "edge": 2}
	for role, n := range want {
		if got := len(byRole(services, role)); got < n {
			t.Errorf("docker-compose.yml runs %d %s services, want at least %d", got, role, n)
		}
	}
	nats := natsServices(t, services)
	for _, s := range services {
		if s.role == "" || s.role == "init" { // init: TestComposeInitRunsFirst
			continue
		}
		if _, ok := listenSetting[s.role]; !ok {
			t.Errorf("service %s runs `sluice %s`, not a server role", s.name, s.role)
			continue
		}
		if b := mapOf(s.raw["build"]); b != nil {
			repoFile(t, str(b["dockerfile"]))
		}
		where := "docker-compose.yml service " + s.name
		checkEnv(t, where, s.role, s.env)
		if s.role != "edge" {
			urls := strings.Split(s.env["SLUICE_NATS_URL"], ",")
			var hosts []string
			for _, u := range urls {
				pu, err := url.Parse(u)
				if err != nil || pu.Scheme != "nats" || pu.Port() != "4222" {
					t.Errorf("%s: SLUICE_NATS_URL entry %q is not nats://<node>:4222", where, u)
					continue
				}
				hosts = append(hosts, pu.Hostname())
			}
			slices.Sort(hosts)
			if !slices.Equal(hosts, nats) {
				t.Errorf("%s: SLUICE_NATS_URL reaches %v, the cluster is %v", where, hosts, nats)
			}
			if s.env["SLUICE_NATS_REPLICAS"] != "3" {
				t.Errorf("%s: SLUICE_NATS_REPLICAS=%q, want 3 (replicated streams)", where, s.env["SLUICE_NATS_REPLICAS"])
			}
		}
		if u, err := url.Parse(s.env["SLUICE_REDIS_URL"]); err != nil || services[u.Hostname()] == nil {
			t.Errorf("%s: SLUICE_REDIS_URL %q does not name a service", where, s.env["SLUICE_REDIS_URL"])
		}
		if host := strings.Split(s.env["SLUICE_S3_ENDPOINT"], ":")[0]; services[host] == nil || !strings.HasPrefix(str(services[host].raw["image"]), "minio/minio") {
			t.Errorf("%s: SLUICE_S3_ENDPOINT %q is not the MinIO service", where, s.env["SLUICE_S3_ENDPOINT"])
		}
		if s.role != "ingress" && s.env["SLUICE_SIGNING_KEYS"] == "" {
			t.Errorf("%s: no SLUICE_SIGNING_KEYS; workers and edges need the same keys", where)
		}
		port := listenPort(t, s.role, s.env)
		if ports := containerPorts(s); len(ports) > 0 && !slices.Contains(ports, port) {
			t.Errorf("%s publishes container ports %v, but `sluice %s` listens on %d", where, ports, s.role, port)
		}
		grace := 10 * time.Second // Docker's default before SIGKILL
		if g := str(s.raw["stop_grace_period"]); g != "" {
			grace = duration(t, g)
		}
		if budget := shutdownBudget(t, s.role, s.env); grace < budget {
			t.Errorf("%s: stop_grace_period %s is shorter than its graceful shutdown (%s): Docker would SIGKILL it mid-drain", where, grace, budget)
		}
	}
	redis := services["redis"]
	if redis == nil || !strings.Contains(strings.Join(strAll(list(redis.raw["command"])), " "), "--maxmemory-policy noeviction") {
		t.Error("the Redis service must run with --maxmemory-policy noeviction (the admission ledger must never be evicted)")
	}
	// Every bind-mounted file exists.
	for _, s := range services {
		for _, v := range list(s.raw["volumes"]) {
			if src := strings.Split(str(v), ":")[0]; strings.HasPrefix(src, "./") {
				repoFile(t, src)
			}
		}
	}
}

func strAll(l []any) []string {
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = str(v)
	}
	return out
}

var routeRE = regexp.MustCompile(`nats-route://([a-z0-9-]+):6222`)

// natsServices checks the three NATS nodes: the cluster config from deployments/nats,
// each named after its service, routed to all three, at the version go.mod embeds.
func natsServices(t *testing.T, services map[string]*composeService) []string {
	t.Helper()
	var names []string
	for _, s := range services {
		if strings.HasPrefix(str(s.raw["image"]), "nats:") {
			names = append(names, s.name)
		}
	}
	slices.Sort(names)
	if len(names) != 3 {
		t.Fatalf("docker-compose.yml runs %d NATS servers, want a 3-node cluster", len(names))
	}
	conf, err := os.ReadFile("nats/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, m := range routeRE.FindAllStringSubmatch(string(conf), -1) {
		routes = append(routes, m[1])
	}
	slices.Sort(routes)
	if !slices.Equal(routes, names) {
		t.Errorf("deployments/nats/nats.conf routes to %v, the NATS services are %v", routes, names)
	}
	want := "nats:" + majorMinor(goModVersion(t, "github.com/nats-io/nats-server/v2"))
	for _, n := range names {
		s := services[n]
		if img := str(s.raw["image"]); !strings.HasPrefix(img, want) {
			t.Errorf("service %s runs %s; go.mod embeds nats-server %s, use %s", n, img, goModVersion(t, "github.com/nats-io/nats-server/v2"), want)
		}
		if s.env["NATS_SERVER_NAME"] != n {
			t.Errorf("service %s: NATS_SERVER_NAME=%q, want its service name", n, s.env["NATS_SERVER_NAME"])
		}
		var mounted bool
		for _, v := range list(s.raw["volumes"]) {
			mounted = mounted || strings.HasPrefix(str(v), "./deployments/nats/nats.conf:")
		}
		if !mounted {
			t.Errorf("service %s does not mount deployments/nats/nats.conf", n)
		}
	}
	return names
}

// deployments/nats/nats.conf is a valid nats-server configuration (the real server
// checks it).
func TestNATSConfigIsValid(t *testing.T) {
	bin := testenv.Binary(t, "nats-server", "SLUICE_NATS_SERVER_BIN", "make deps  (builds nats-server into bin/)")
	cmd := exec.Command(bin, "-t", "-c", "nats/nats.conf")
	cmd.Env = append(os.Environ(), "NATS_SERVER_NAME=nats-1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nats-server -t rejects deployments/nats/nats.conf: %v\n%s", err, out)
	}
}

// Prometheus scrapes every sluice service on the port its role serves /metrics on, and
// Grafana is provisioned with Prometheus and the dashboard.
func TestComposeObservability(t *testing.T) {
	services := loadCompose(t)
	docs := readYAML(t, "prometheus/prometheus.yml")
	scraped := map[string]bool{}
	dependencyJobs := map[string]*promJob{}
	for _, job := range list(docs[0]["scrape_configs"]) {
		name := str(get(job, "job_name"))
		if _, ok := listenSetting[name]; !ok {
			dependencyJobs[name] = &promJob{name: name, path: str(get(job, "metrics_path")), targets: strAll(list(get(job, "static_configs", 0, "targets")))}
			continue
		}
		if p := str(get(job, "metrics_path")); p != "" && p != "/metrics" {
			t.Errorf("job %s scrapes %s, sluice serves /metrics", name, p)
		}
		for _, sc := range list(get(job, "static_configs")) {
			for _, target := range list(get(sc, "targets")) {
				host, port, _ := strings.Cut(str(target), ":")
				s := services[host]
				if s == nil || s.role == "" {
					t.Errorf("prometheus target %s of job %s is not a sluice service", target, name)
					continue
				}
				if s.role != name {
					t.Errorf("prometheus job %s scrapes %s, which runs `sluice %s`: the dashboard and alerts take the job for the role", name, host, s.role)
				}
				if p, _ := strconv.Atoi(port); p != metricsPort(t, s.role, s.env) {
					t.Errorf("prometheus scrapes %s on %s, but `sluice %s` serves /metrics on %d", host, port, s.role, metricsPort(t, s.role, s.env))
				}
				scraped[host] = true
			}
		}
	}
	for _, s := range services {
		if s.role != "" && s.role != "init" && !scraped[s.name] {
			t.Errorf("prometheus does not scrape %s", s.name)
		}
	}
	checkDependencyScrapes(t, services, dependencyJobs)

	// Grafana: the provisioning and dashboards directories are mounted where the
	// provider looks, the datasource is the Prometheus service under the uid the
	// dashboard uses.
	g := services["grafana"]
	if g == nil {
		t.Fatal("no grafana service")
	}
	mounts := map[string]string{}
	for _, v := range list(g.raw["volumes"]) {
		parts := strings.Split(str(v), ":")
		mounts[parts[1]] = parts[0]
	}
	if mounts["/etc/grafana/provisioning"] != "./deployments/grafana/provisioning" {
		t.Error("grafana does not mount deployments/grafana/provisioning at /etc/grafana/provisioning")
	}
	provider := readYAML(t, "grafana/provisioning/dashboards/sluice.yml")[0]
	dashDir := str(get(provider, "providers", 0, "options", "path"))
	if src := mounts[dashDir]; src != "./deployments/grafana/dashboards" {
		t.Errorf("the dashboard provider reads %s, where grafana mounts %q", dashDir, src)
	}
	ds := readYAML(t, "grafana/provisioning/datasources/prometheus.yml")[0]
	u, _ := url.Parse(str(get(ds, "datasources", 0, "url")))
	if services[u.Hostname()] == nil || u.Port() != "9090" {
		t.Errorf("the grafana datasource %s is not the prometheus service", u)
	}
	// The dashboard's data source variable starts on the default data source of its type.
	if typ, def := str(get(ds, "datasources", 0, "type")), get(ds, "datasources", 0, "isDefault"); typ != dashboardDatasourceType(t) || def != true {
		t.Errorf("datasource of type %q (default: %v), the dashboard's variable wants the default %q", typ, def, dashboardDatasourceType(t))
	}
}

// Download links point at the load balancer, which spreads them over the edges.
func TestComposeEdgeBalancer(t *testing.T) {
	services := loadCompose(t)
	lb := services["edge-lb"]
	if lb == nil {
		t.Fatal("no edge-lb service in front of the edges")
	}
	conf, err := os.ReadFile("nginx/edge.conf")
	if err != nil {
		t.Fatal(err)
	}
	upstreams := regexp.MustCompile(`server ([a-z0-9-]+):(\d+)`).FindAllStringSubmatch(string(conf), -1)
	var names []string
	for _, m := range upstreams {
		s := services[m[1]]
		if s == nil || s.role != "edge" {
			t.Errorf("nginx upstream %s is not an edge service", m[1])
			continue
		}
		if p, _ := strconv.Atoi(m[2]); p != listenPort(t, "edge", s.env) {
			t.Errorf("nginx reaches %s on %s, the edge listens on %d", m[1], m[2], listenPort(t, "edge", s.env))
		}
		names = append(names, m[1])
	}
	for _, e := range byRole(services, "edge") {
		if !slices.Contains(names, e.name) {
			t.Errorf("edge %s is not behind the load balancer", e.name)
		}
	}
	published := strings.Split(str(get(lb.raw, "ports", 0)), ":")[0]
	for _, w := range byRole(services, "worker") {
		u, err := url.Parse(w.env["SLUICE_PUBLIC_EDGE_URL"])
		if err != nil || u.Port() != published {
			t.Errorf("%s: SLUICE_PUBLIC_EDGE_URL %q does not reach the edge load balancer on :%s", w.name, w.env["SLUICE_PUBLIC_EDGE_URL"], published)
		}
	}
}

// promJob is a scrape job of prometheus.yml for something other than a sluice role.
type promJob struct {
	name, path string
	targets    []string
}

// The dependencies are scraped too: every NATS node through its own exporter, Redis
// through redis_exporter, MinIO on its own cluster metrics endpoint with the public auth
// type (no token in prometheus.yml).
func checkDependencyScrapes(t *testing.T, services map[string]*composeService, jobs map[string]*promJob) {
	t.Helper()
	for _, name := range []string{"nats", "redis", "minio"} {
		if jobs[name] == nil {
			t.Errorf("prometheus.yml has no %s job", name)
		}
	}
	target := func(job *promJob, tgt string) (*composeService, string) {
		host, port, _ := strings.Cut(tgt, ":")
		s := services[host]
		if s == nil {
			t.Errorf("prometheus job %s scrapes %s, which is no service of docker-compose.yml", job.name, tgt)
		}
		return s, port
	}
	if job := jobs["nats"]; job != nil {
		var reached []string
		for _, tgt := range job.targets {
			s, port := target(job, tgt)
			if s == nil {
				continue
			}
			if !strings.HasPrefix(str(s.raw["image"]), "natsio/prometheus-nats-exporter:") || port != "7777" {
				t.Errorf("nats target %s is not a prometheus-nats-exporter on :7777", tgt)
				continue
			}
			args := strAll(list(s.raw["command"]))
			if len(args) == 0 {
				t.Errorf("%s has no command naming the node it exports", s.name)
				continue
			}
			u, err := url.Parse(args[len(args)-1])
			if err != nil || u.Port() != "8222" || services[u.Hostname()] == nil {
				t.Errorf("%s exports %q, not a NATS node's monitoring port 8222", s.name, args[len(args)-1])
				continue
			}
			reached = append(reached, u.Hostname())
		}
		slices.Sort(reached)
		if nodes := natsServices(t, services); !slices.Equal(reached, nodes) {
			t.Errorf("the nats job reaches nodes %v through its exporters, the cluster is %v", reached, nodes)
		}
	}
	if job := jobs["redis"]; job != nil {
		for _, tgt := range job.targets {
			if s, _ := target(job, tgt); s != nil {
				if u, err := url.Parse(s.env["REDIS_ADDR"]); err != nil || u.Hostname() != "redis" {
					t.Errorf("redis target %s does not export the redis service (REDIS_ADDR=%q)", tgt, s.env["REDIS_ADDR"])
				}
			}
		}
	}
	if job := jobs["minio"]; job != nil {
		for _, tgt := range job.targets {
			s, port := target(job, tgt)
			if s == nil {
				continue
			}
			if !strings.HasPrefix(str(s.raw["image"]), "minio/minio:") || port != "9000" || job.path != "/minio/v2/metrics/cluster" {
				t.Errorf("minio job scrapes %s%s; MinIO serves its metrics on :9000 at /minio/v2/metrics/cluster", tgt, job.path)
			}
			if s.env["MINIO_PROMETHEUS_AUTH_TYPE"] != "public" {
				t.Errorf("%s: MINIO_PROMETHEUS_AUTH_TYPE=%q; without public (or a bearer token in prometheus.yml) MinIO answers the scrape 403", s.name, s.env["MINIO_PROMETHEUS_AUTH_TYPE"])
			}
		}
	}
}

var pinnedTagRE = regexp.MustCompile(`^(v?\d+\.\d+\.\d+|RELEASE\.\d{4}-)`)

// Every image is pinned to a release (no latest, no floating major tag) except the one
// compose builds, and every sluice service has a healthcheck that runs `sluice health`
// for its own role through the image's binary (distroless: nothing else to run).
func TestComposeImagesAndHealthchecks(t *testing.T) {
	services := loadCompose(t)
	var binary string
	if entry := parseDockerfile(t, "Dockerfile"); len(entry) > 0 {
		for _, e := range entry[len(entry)-1].find("ENTRYPOINT") {
			var argv []string
			if json.Unmarshal([]byte(e), &argv) == nil && len(argv) > 0 {
				binary = argv[0]
			}
		}
	}
	for _, s := range services {
		img := str(s.raw["image"])
		name, tag, _ := strings.Cut(img[strings.LastIndexByte(img, '/')+1:], ":")
		if s.raw["build"] == nil && !pinnedTagRE.MatchString(tag) {
			t.Errorf("service %s runs %s: pin %s to a release tag", s.name, img, name)
		}
		if s.role == "" || s.role == "init" { // init runs to completion: no healthcheck
			continue
		}
		argv := strAll(list(get(s.raw, "healthcheck", "test")))
		want := []string{"CMD", binary, "health", s.role}
		if !slices.Equal(argv, want) {
			t.Errorf("service %s: healthcheck %v, want %v", s.name, argv, want)
		}
	}
	// The load balancer sends downloads to edges once they are ready.
	for _, e := range byRole(services, "edge") {
		if str(get(services["edge-lb"].raw, "depends_on", e.name, "condition")) != "service_healthy" {
			t.Errorf("edge-lb does not wait for %s to be healthy", e.name)
		}
	}
}

// sluice init runs once, first: after NATS and MinIO are healthy, with the same NATS
// and S3 settings as the roles and only variables init reads; every role waits until
// it has completed.
func TestComposeInitRunsFirst(t *testing.T) {
	services := loadCompose(t)
	inits := byRole(services, "init")
	if len(inits) != 1 {
		t.Fatalf("docker-compose.yml runs %d `sluice init` services, want 1", len(inits))
	}
	init := inits[0]
	reads := initSettings(t)
	for name := range init.env {
		if strings.HasPrefix(name, "SLUICE_") && !reads[name] {
			t.Errorf("service %s sets %s, which `sluice init` does not read", init.name, name)
		}
	}
	for _, dep := range append(natsServices(t, services), "minio") {
		if str(get(init.raw, "depends_on", dep, "condition")) != "service_healthy" {
			t.Errorf("service %s does not wait for %s to be healthy", init.name, dep)
		}
	}
	if r := str(init.raw["restart"]); r != "no" && r != "on-failure" {
		t.Errorf("service %s: restart %q; a completed init must stay completed", init.name, r)
	}
	for _, role := range []string{"ingress", "worker", "edge"} {
		for _, s := range byRole(services, role) {
			if str(get(s.raw, "depends_on", init.name, "condition")) != "service_completed_successfully" {
				t.Errorf("service %s does not wait for %s to complete", s.name, init.name)
			}
			for name, v := range init.env {
				if got, ok := s.env[name]; ok && got != v {
					t.Errorf("service %s: %s=%q, init creates with %q", s.name, name, got, v)
				}
			}
		}
	}
}
