package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is where compose.yaml, .dockerignore and the build context live.
const repoRoot = ".."

var (
	infraServices = []string{"kafka", "clickhouse", "postgres", "redis"}
	// veilServices run the veil image and wait for migrate.
	veilServices = []string{"ingest", "processor", "control-plane", "gateway"}

	// veilEnv is what every veil container (migrate included) must be given.
	veilEnv = map[string]string{
		"VEIL_POSTGRES_URL":    "postgres://postgres@postgres:5432/veil?sslmode=disable",
		"VEIL_REDIS_ADDR":      "redis:6379",
		"VEIL_CLICKHOUSE_ADDR": "clickhouse:9000",
		"VEIL_KAFKA_BROKERS":   "kafka:9092",
	}
)

// loadCompose parses and validates compose content the way `docker compose`
// does (schema, interpolation, normalization, consistency).
func loadCompose(t *testing.T, content []byte, env map[string]string) (*types.Project, error) {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	details := types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "compose.yaml"), Content: content}},
		Environment: env,
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("veil", true)
	})
}

func readCompose(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "compose.yaml"))
	if err != nil {
		t.Fatalf("read compose.yaml: %v", err)
	}
	return b
}

// checkProject returns every broken property of the stack, one message each,
// in the form "<where>: got X; want Y".
func checkProject(p *types.Project) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	all := slices.Concat(infraServices, []string{"migrate"}, veilServices)
	for _, name := range all {
		if _, err := p.GetService(name); err != nil {
			fail("service %s: got missing; want defined", name)
		}
	}

	// Pinned images, never `latest` (explicit or implied).
	for name, s := range p.Services {
		if tag := imageTag(s.Image); tag == "" || tag == "latest" {
			fail("service %s image: got %q (tag %q); want a pinned tag", name, s.Image, tag)
		}
	}

	// Infrastructure: image, healthcheck, named volume.
	infraImages := map[string]string{
		"kafka":    "apache/kafka:4.1.1",
		"postgres": "postgres:17",
		"redis":    "redis:7",
	}
	for _, name := range infraServices {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		if want, ok := infraImages[name]; ok && s.Image != want {
			fail("service %s image: got %q; want %q", name, s.Image, want)
		}
		if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
			fail("service %s healthcheck: got %s; want a test command", name, describeHealth(hc))
		}
		if !hasNamedVolume(p, s) {
			fail("service %s volumes: got %v; want a named volume", name, volumeSources(s))
		}
	}
	if s, ok := p.Services["clickhouse"]; ok {
		if !strings.HasPrefix(s.Image, "clickhouse/clickhouse-server:") {
			fail("service clickhouse image: got %q; want clickhouse/clickhouse-server:<LTS>", s.Image)
		}
		if u := s.Ulimits["nofile"]; u == nil || (u.Soft == 0 && u.Single == 0) {
			fail("service clickhouse ulimits.nofile: got %v; want set", u)
		}
	}
	if s, ok := p.Services["postgres"]; ok {
		for k, want := range map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_DB": "veil"} {
			if got := envValue(s, k); got != want {
				fail("service postgres env %s: got %q; want %q", k, got, want)
			}
		}
	}
	if s, ok := p.Services["kafka"]; ok {
		kafkaEnv := map[string]string{
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_LISTENERS":                                "PLAINTEXT://:9092,CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://kafka:9092",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@kafka:9093",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                "false",
		}
		for k, want := range kafkaEnv {
			if got := envValue(s, k); got != want {
				fail("service kafka env %s: got %q; want %q", k, got, want)
			}
		}
		if got := envValue(s, "KAFKA_NODE_ID"); got == "" {
			fail("service kafka env KAFKA_NODE_ID: got unset; want a node id")
		}
	}

	// migrate: one shot, after the stores are healthy.
	if s, ok := p.Services["migrate"]; ok {
		if got := strings.Join(s.Command, " "); got != "migrate" {
			fail("service migrate command: got %q; want %q", got, "migrate")
		}
		if s.Restart != "" && s.Restart != types.RestartPolicyNo {
			fail("service migrate restart: got %q; want %q", s.Restart, types.RestartPolicyNo)
		}
		for _, dep := range []string{"postgres", "clickhouse", "kafka"} {
			if got := s.DependsOn[dep].Condition; got != types.ServiceConditionHealthy {
				fail("service migrate depends_on %s: got %q; want %q", dep, got, types.ServiceConditionHealthy)
			}
		}
	}

	// Veil services: built from deploy/Dockerfile, same env, wait for migrate.
	for _, name := range slices.Concat([]string{"migrate"}, veilServices) {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		if s.Build == nil || filepath.ToSlash(s.Build.Dockerfile) != "deploy/Dockerfile" {
			got := "no build"
			if s.Build != nil {
				got = s.Build.Dockerfile
			}
			fail("service %s build.dockerfile: got %q; want %q", name, got, "deploy/Dockerfile")
		}
		for k, want := range veilEnv {
			if got := envValue(s, k); got != want {
				fail("service %s env %s: got %q; want %q", name, k, got, want)
			}
		}
		if name == "migrate" {
			continue
		}
		if got := s.DependsOn["migrate"].Condition; got != types.ServiceConditionCompletedSuccessfully {
			fail("service %s depends_on migrate: got %q; want %q", name, got, types.ServiceConditionCompletedSuccessfully)
		}
	}

	type want struct {
		command string
		port    uint32 // health and published port
	}
	for name, w := range map[string]want{
		"ingest":        {"ingest", 8081},
		"processor":     {"processor", 8082},
		"control-plane": {"control-plane", 8080},
		"gateway":       {"gateway", 8000},
	} {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		if got := strings.Join(s.Command, " "); got != w.command {
			fail("service %s command: got %q; want %q", name, got, w.command)
		}
		wantTest := []string{"CMD", "/usr/local/bin/veil", "healthcheck", "--url", fmt.Sprintf("http://127.0.0.1:%d/readyz", w.port)}
		if s.HealthCheck == nil || s.HealthCheck.Disable || !slices.Equal([]string(s.HealthCheck.Test), wantTest) {
			fail("service %s healthcheck: got %s; want %q", name, describeHealth(s.HealthCheck), wantTest)
		}
	}
	if s, ok := p.Services["ingest"]; ok && envValue(s, "VEIL_INGEST_TOKENS") == "" {
		fail("service ingest env VEIL_INGEST_TOKENS: got empty; want a token")
	}

	// Published ports. hostIP "" means any address is acceptable.
	for _, pt := range []struct {
		service string
		port    uint32
		hostIP  string
	}{
		{"control-plane", 8080, ""},
		{"ingest", 8081, ""},
		{"processor", 8082, ""},
		{"gateway", 8000, ""},
		{"control-plane", 9180, "127.0.0.1"},
		{"ingest", 9181, "127.0.0.1"},
		{"gateway", 9183, "127.0.0.1"},
		{"clickhouse", 9000, ""},
		{"clickhouse", 8123, ""},
	} {
		s, ok := p.Services[pt.service]
		if !ok {
			continue
		}
		if got := published(s, pt.port); got == nil {
			fail("service %s port %d: got not published (ports %v); want published", pt.service, pt.port, portList(s))
		} else if pt.hostIP != "" && got.HostIP != pt.hostIP {
			fail("service %s port %d host_ip: got %q; want %q", pt.service, pt.port, got.HostIP, pt.hostIP)
		}
	}
	// Caddy's admin API is a unix socket in the gateway's data volume,
	// which the control plane mounts; no admin port is published.
	for _, name := range []string{"gateway", "control-plane"} {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		if published(s, 2019) != nil {
			fail("service %s publishes 2019: Caddy's admin API must stay off TCP", name)
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Source == "gateway-data" && v.Target == "/var/lib/veil"
		}) {
			fail("service %s: got no gateway-data volume at /var/lib/veil (volumes %v); want it, for the admin socket", name, volumeSources(s))
		}
	}
	return problems
}

// imageTag returns the tag of an image reference ("" when none is given,
// which Docker reads as latest; digests count as pinned).
func imageTag(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[i:]
	}
	last := image[strings.LastIndex(image, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		return last[i+1:]
	}
	return ""
}

func envValue(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

func describeHealth(hc *types.HealthCheckConfig) string {
	switch {
	case hc == nil:
		return "none"
	case hc.Disable:
		return "disabled"
	default:
		return fmt.Sprintf("%q", []string(hc.Test))
	}
}

func hasNamedVolume(p *types.Project, s types.ServiceConfig) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source != "" {
			if _, ok := p.Volumes[v.Source]; ok {
				return true
			}
		}
	}
	return false
}

func volumeSources(s types.ServiceConfig) []string {
	var out []string
	for _, v := range s.Volumes {
		out = append(out, v.Type+":"+v.Source)
	}
	return out
}

func published(s types.ServiceConfig, port uint32) *types.ServicePortConfig {
	for i, p := range s.Ports {
		if p.Target == port && p.Published == fmt.Sprint(port) {
			return &s.Ports[i]
		}
	}
	return nil
}

func portList(s types.ServiceConfig) []string {
	var out []string
	for _, p := range s.Ports {
		out = append(out, fmt.Sprintf("%s:%s:%d", p.HostIP, p.Published, p.Target))
	}
	return out
}

func TestComposeStack(t *testing.T) {
	p, err := loadCompose(t, readCompose(t), nil)
	if err != nil {
		t.Fatalf("load compose.yaml: got %v; want a valid compose file", err)
	}
	if p.Name != "veil" {
		t.Errorf("project name: got %q; want %q", p.Name, "veil")
	}
	for _, problem := range checkProject(p) {
		t.Error(problem)
	}
}

func TestComposeIngestTokensFromEnvironment(t *testing.T) {
	p, err := loadCompose(t, readCompose(t), map[string]string{"VEIL_INGEST_TOKENS": "t1,t2"})
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	s, err := p.GetService("ingest")
	if err != nil {
		t.Fatalf("service ingest: got %v; want defined", err)
	}
	if got, want := envValue(s, "VEIL_INGEST_TOKENS"), "t1,t2"; got != want {
		t.Errorf("ingest VEIL_INGEST_TOKENS: got %q; want %q", got, want)
	}
}

// TestComposeChecksCatchBreakage proves that checkProject is not vacuous: each
// broken variant of compose.yaml must be reported.
func TestComposeChecksCatchBreakage(t *testing.T) {
	orig := string(readCompose(t))
	for _, tc := range []struct {
		name     string
		old, new string // replaced once in compose.yaml
		want     string // a substring of one reported problem
	}{
		{"migrate condition", "  migrate:\n    condition: service_completed_successfully", "  migrate:\n    condition: service_started", "depends_on migrate: got \"service_started\""},
		{"latest tag", "image: redis:7", "image: redis:latest", "service redis image: got \"redis:latest\""},
		{"no tag", "image: postgres:17", "image: postgres", "tag \"\""},
		{"redis healthcheck removed", "test: [\"CMD\", \"redis-cli\", \"ping\"]", "disable: true", "service redis healthcheck: got disabled"},
		{"kafka address", "VEIL_KAFKA_BROKERS: kafka:9092", "VEIL_KAFKA_BROKERS: localhost:9092", "env VEIL_KAFKA_BROKERS: got \"localhost:9092\""},
		{"ingest port", "\"127.0.0.1:8081:8081\"", "\"127.0.0.1:18081:8081\"", "service ingest port 8081: got not published"},
		{"metrics on all interfaces", "\"127.0.0.1:9183:9183\"", "\"9183:9183\"", "port 9183 host_ip: got \"\"; want \"127.0.0.1\""},
		{"admin port published", "\"127.0.0.1:9183:9183\"", "\"127.0.0.1:9183:9183\"\n      - \"127.0.0.1:2019:2019\"", "service gateway publishes 2019"},
		{"control plane without the admin socket", "admin API is on no TCP port\n      - gateway-data:/var/lib/veil", "admin API is on no TCP port\n      - gateway-data:/srv/elsewhere", "service control-plane: got no gateway-data volume at /var/lib/veil"},
		{"gateway healthcheck url", "http://127.0.0.1:8000/readyz", "http://127.0.0.1:8080/readyz", "service gateway healthcheck"},
		{"service renamed", "\n  processor:\n", "\n  processors:\n", "service processor: got missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(orig, tc.old) {
				t.Fatalf("compose.yaml: got no %q to mutate; want it present (update this test)", tc.old)
			}
			p, err := loadCompose(t, []byte(strings.Replace(orig, tc.old, tc.new, 1)), nil)
			if err != nil {
				t.Fatalf("load mutated compose.yaml: got %v; want it to load", err)
			}
			problems := checkProject(p)
			if !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("problems: got %q; want one containing %q", problems, tc.want)
			}
		})
	}
}

func TestComposeRejectsInvalidFile(t *testing.T) {
	orig := string(readCompose(t))
	bad := strings.Replace(orig, "condition: service_completed_successfully", "condition: when_it_feels_like_it", 1)
	if _, err := loadCompose(t, []byte(bad), nil); err == nil {
		t.Errorf("load with an unknown depends_on condition: got no error; want a schema error")
	}
}

func TestImageTag(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"redis:7", "7"},
		{"redis", ""},
		{"redis:latest", "latest"},
		{"localhost:5000/veil", ""},
		{"localhost:5000/veil:dev", "dev"},
		{"gcr.io/distroless/static-debian12:nonroot", "nonroot"},
		{"postgres@sha256:abc", "@sha256:abc"},
	} {
		if got := imageTag(tc.image); got != tc.want {
			t.Errorf("imageTag(%q): got %q; want %q", tc.image, got, tc.want)
		}
	}
}

// TestDockerfile pins the build properties compose.yaml relies on.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatalf("read deploy/Dockerfile: %v", err)
	}
	df := string(b)
	for _, want := range []string{
		"FROM golang:1.26-bookworm AS build",
		"--mount=type=cache,target=/go/pkg/mod",
		"--mount=type=cache,target=/root/.cache/go-build",
		"CGO_ENABLED=0",
		"go build -trimpath -ldflags='-s -w' -o /out/veil ./cmd/veil",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"COPY --from=build /out/veil /usr/local/bin/veil",
		`ENTRYPOINT ["/usr/local/bin/veil"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("deploy/Dockerfile: got no %q; want it", want)
		}
	}
	if n := strings.Count(df, "\nFROM "); n != 2 {
		t.Errorf("deploy/Dockerfile FROM lines: got %d; want 2 (builder + runtime)", n)
	}

	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatalf("read .dockerignore: %v", err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, want := range []string{".git", ".veil/", "bin/"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore: got no line %q; want it", want)
		}
	}
	for _, keep := range []string{"go.mod", "go.sum", "cmd", "deploy"} {
		if slices.Contains(lines, keep) {
			t.Errorf(".dockerignore: got %q ignored; want it in the build context", keep)
		}
	}
}
