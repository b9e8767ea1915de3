package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/ingest/caddyveil" // the veil app and handler
	"github.com/veil-platform/veil/internal/broker"
)

const (
	defaultGatewayAddr = ":8000"
	// gatewayAdminSocket is the file name of Caddy's admin socket in the
	// data directory.
	gatewayAdminSocket        = "gateway-admin.sock"
	defaultGatewayMetricsAddr = "127.0.0.1:9183"
)

// dataDir is where the gateway keeps its admin socket, and where the
// control plane looks for it on the same host: VEIL_DATA_DIR, or Caddy's
// data directory (the one its storage and the event spool use).
func dataDir() string {
	if d := os.Getenv("VEIL_DATA_DIR"); d != "" {
		if abs, err := filepath.Abs(d); err == nil {
			return abs
		}
		return d
	}
	return caddy.AppDataDir()
}

// defaultGatewayAdminAddr is the admin socket in Caddy's address form,
// readable and writable by the gateway's user only.
func defaultGatewayAdminAddr() string {
	return "unix/" + filepath.Join(dataDir(), gatewayAdminSocket) + "|0600"
}

// defaultGatewayAdminURL is the same socket as the control plane names it.
func defaultGatewayAdminURL() string {
	return "unix://" + filepath.Join(dataDir(), gatewayAdminSocket)
}

// adminSocketPath returns the file of a unix admin address
// ("unix//path|mode"), "" for any other address.
func adminSocketPath(addr string) string {
	p, ok := strings.CutPrefix(addr, "unix/")
	if !ok {
		return ""
	}
	p, _, _ = strings.Cut(p, "|")
	return p
}

// caddyRefused are Caddy subcommands that make no sense inside veil: start
// re-executes os.Args[0] as if it were caddy, and the package commands
// replace the running binary with a downloaded caddy.
var caddyRefused = map[string]string{
	"start":          "run it in the background with veil gateway run instead",
	"upgrade":        "veil is upgraded as a whole",
	"add-package":    "veil is built with its Caddy modules",
	"remove-package": "veil is built with its Caddy modules",
}

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return runCaddy(args)
	}
	var (
		addr, adminAddr, metricsAddr string
		grace                        time.Duration
		log                          logFlags
		veil                         veilAppFlags
		remote                       remoteAdminFlags
		upstreams                    egressFlags
	)
	f := newFlags("gateway", `Runs the Caddy gateway: one HTTP server on the gateway address whose routes the control plane
manages through Caddy's admin API, which listens on a unix socket (and, with --admin-remote-addr,
over TLS with client certificates). Unknown paths answer 404 with a problem; /healthz and /readyz
answer 200; /metrics is served on the metrics address only. Caddy logs JSON to stderr.

With a Caddy subcommand instead of flags, runs Caddy's own command line:
  veil gateway run --config caddy.json
  veil gateway adapt --config Caddyfile
  veil gateway version | list-modules | validate | reload | stop | fmt | ...`, stdout)
	f.String(&addr, "addr", "VEIL_GATEWAY_ADDR", defaultGatewayAddr, "listen address of the gateway")
	f.String(&adminAddr, "admin-addr", "VEIL_GATEWAY_ADMIN_ADDR", defaultGatewayAdminAddr(),
		"Caddy's admin API: a unix socket, unix//path[|mode] (default: in VEIL_DATA_DIR, else Caddy's data directory), or host:port; "+
			"a TCP address is reachable by any upstream the gateway proxies to on that host: avoid it")
	f.String(&metricsAddr, "metrics-addr", "VEIL_METRICS_ADDR", defaultGatewayMetricsAddr, "listen address of the gateway's /metrics (empty: not served)")
	remote.register(f)
	f.Duration(&grace, "grace-period", "VEIL_GATEWAY_GRACE_PERIOD", 30*time.Second, "how long a stop or a route change waits for requests in flight (0: as long as they take)")
	veil.register(f)
	upstreams.register(f)
	log.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := veil.check(); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	// Upstreams never reach the gateway's own listeners and stores, on top
	// of Veil's default ports on loopback.
	egressApp, err := upstreams.app(ctx, addr, adminAddr, metricsAddr, remote.addr, veil.redisAddr, veil.brokers)
	if err != nil {
		return err
	}
	rem, err := remote.admin()
	if err != nil {
		return err
	}
	if sock := adminSocketPath(adminAddr); sock != "" {
		// Caddy creates the socket, not its directory.
		if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
			return fmt.Errorf("create the admin socket's directory: %w", err)
		}
	} else {
		logger.WarnContext(ctx, "Caddy's admin API listens on TCP: any upstream the gateway proxies to on that host reaches it; prefer a unix socket", "admin_addr", adminAddr)
	}
	cfg, err := gatewayadmin.Bootstrap{
		Addr:        addr,
		AdminAddr:   adminAddr,
		MetricsAddr: metricsAddr,
		Remote:      rem,
		LogLevel:    caddyLevel(log.level),
		GracePeriod: grace,
		Veil:        veil.app(egressApp),
	}.JSON()
	if err != nil {
		return err
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("start gateway: %w", err)
	}
	logger.InfoContext(ctx, "gateway serving", "addr", addr, "admin_addr", adminAddr, "metrics_addr", metricsAddr, "admin_remote_addr", remote.addr)
	<-ctx.Done()
	logger.InfoContext(context.WithoutCancel(ctx), "gateway stopping")
	if err := caddy.Stop(); err != nil {
		return fmt.Errorf("stop gateway: %w", err)
	}
	return nil
}

// remoteAdminFlags configure Caddy's remote admin endpoint, for a control
// plane on another host.
type remoteAdminFlags struct {
	addr, names, caCert, caKey, clientCerts string
}

func (r *remoteAdminFlags) register(f *flags) {
	f.String(&r.addr, "admin-remote-addr", "VEIL_GATEWAY_ADMIN_REMOTE_ADDR", "", "listen address of the admin API over TLS with client certificates, e.g. :2021 (empty: off)")
	f.String(&r.names, "admin-remote-names", "VEIL_GATEWAY_ADMIN_REMOTE_NAMES", "", "comma-separated DNS names and IPs the control plane dials the remote admin endpoint by (its certificate's names)")
	f.String(&r.caCert, "admin-remote-ca-cert", "VEIL_GATEWAY_ADMIN_REMOTE_CA_CERT", "", "PEM file of the CA that issues the remote admin endpoint's certificate (the control plane's VEIL_GATEWAY_ADMIN_CA)")
	f.String(&r.caKey, "admin-remote-ca-key", "VEIL_GATEWAY_ADMIN_REMOTE_CA_KEY", "", "PEM file of that CA's private key")
	f.String(&r.clientCerts, "admin-remote-client-certs", "VEIL_GATEWAY_ADMIN_REMOTE_CLIENT_CERTS", "", "PEM file of the client certificates allowed in (the control plane's VEIL_GATEWAY_ADMIN_CERT); they may change the gateway's API routes, only in the shape the control plane writes, through /veil/routes/, and nothing else")
}

// admin returns the remote admin settings, nil when it is off.
func (r remoteAdminFlags) admin() (*gatewayadmin.RemoteAdmin, error) {
	if r.addr == "" {
		return nil, nil
	}
	if r.names == "" || r.caCert == "" || r.caKey == "" || r.clientCerts == "" {
		return nil, errors.New("--admin-remote-addr needs --admin-remote-names, --admin-remote-ca-cert, --admin-remote-ca-key and --admin-remote-client-certs")
	}
	certs, err := os.ReadFile(r.clientCerts)
	if err != nil {
		return nil, fmt.Errorf("read the remote admin's client certificates: %w", err)
	}
	return &gatewayadmin.RemoteAdmin{Listen: r.addr, Names: splitList(r.names), CACertFile: r.caCert, CAKeyFile: r.caKey, ClientCerts: certs}, nil
}

// caddyLevel maps a log level the logFlags accepted to Caddy's names.
func caddyLevel(s string) string {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	switch {
	case l <= slog.LevelDebug:
		return "DEBUG"
	case l <= slog.LevelInfo:
		return "INFO"
	case l <= slog.LevelWarn:
		return "WARN"
	default:
		return "ERROR"
	}
}

// runCaddy hands the arguments to Caddy's command line as if they were its
// own. Caddy exits the process itself on failure.
func runCaddy(args []string) error {
	if why, ok := caddyRefused[args[0]]; ok {
		return fmt.Errorf("veil gateway %s is not supported: %s", args[0], why)
	}
	os.Args = append([]string{os.Args[0]}, args...)
	caddycmd.Main()
	return nil
}

// veilAppFlags configure the veil Caddy app: where key records, limits and
// blocks are read and where usage events go.
type veilAppFlags struct {
	redisAddr    string
	redisDB      int
	brokers      string
	topic        string
	spoolDir     string
	spoolMax     int64
	spoolFsync   string
	source       string
	onRedisError string
	outageGrace  time.Duration
	anonSample   int
	anonPerIP    int
	anonPerMin   int
	publicURL    string
}

func (v *veilAppFlags) register(f *flags) {
	f.String(&v.redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis holding key and subscription records, limits and blocks")
	f.Int(&v.redisDB, "redis-db", "VEIL_REDIS_DB", 0, "its logical database (the control plane's)")
	f.String(&v.brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", "127.0.0.1:9092", "Kafka seed brokers for usage events")
	f.String(&v.topic, "topic", "VEIL_GATEWAY_TOPIC", broker.TopicUsageRaw, "topic of usage events")
	f.String(&v.spoolDir, "spool-dir", "VEIL_GATEWAY_SPOOL_DIR", "", "where events wait while Kafka is unreachable (default: veil-spool in Caddy's data directory)")
	f.Int64(&v.spoolMax, "spool-max-bytes", "VEIL_GATEWAY_SPOOL_MAX_BYTES", 1<<30, "spool size bound; past it events are dropped and counted")
	f.String(&v.spoolFsync, "spool-fsync", "VEIL_GATEWAY_SPOOL_FSYNC", "interval", "spool fsync policy: always, interval (1s) or never")
	f.String(&v.source, "event-source", "VEIL_GATEWAY_EVENT_SOURCE", "", "CloudEvents source of this gateway's events, unique per instance (default /gateway/<hostname>)")
	f.Duration(&v.outageGrace, "redis-outage-grace", "VEIL_GATEWAY_REDIS_OUTAGE_GRACE", 30*time.Second, "while Redis is unreachable, keys seen valid keep working this long on their last known records")
	f.String(&v.onRedisError, "on-redis-error", "VEIL_GATEWAY_ON_REDIS_ERROR", "local", "rate limits while Redis is down: local (in-process limits), allow or deny")
	f.Int(&v.anonSample, "anonymous-sample-rate", "VEIL_GATEWAY_ANONYMOUS_SAMPLE_RATE", 100, "one refusal in this many of requests without a usable key becomes a usage event (all are counted in metrics); 1 emits all")
	f.Int(&v.anonPerIP, "anonymous-events-per-ip-minute", "VEIL_GATEWAY_ANONYMOUS_EVENTS_PER_IP_MINUTE", 60, "at most this many sampled anonymous refusal events per client IP and minute")
	f.Int(&v.anonPerMin, "anonymous-events-per-minute", "VEIL_GATEWAY_ANONYMOUS_EVENTS_PER_MINUTE", caddyveil.DefaultAnonymousEventsPerMinute,
		"at most this many sampled anonymous refusal events per minute from all client IPs together (client IPs from X-Forwarded-For can be forged)")
	f.String(&v.publicURL, "public-url", "VEIL_PUBLIC_URL", "", "public base URL of the control plane or portal (https://veil.example.com): the 402 of an unpaid invoice links <url>/v1/invoices/<id> (empty: no link)")
}

// check refuses settings the veil app would refuse, naming the variable.
func (v veilAppFlags) check() error {
	if v.source != "" {
		if err := caddyveil.CheckSource(v.source); err != nil {
			return fmt.Errorf("VEIL_GATEWAY_EVENT_SOURCE: %w", err)
		}
	}
	if err := caddyveil.CheckPublicURL(v.publicURL); err != nil {
		return fmt.Errorf("VEIL_PUBLIC_URL: %w", err)
	}
	return nil
}

// app is the veil app's Caddy config; egress is nil for the app's default
// policy.
func (v veilAppFlags) app(egress *caddyveil.EgressConfig) *caddyveil.App {
	return &caddyveil.App{
		RedisAddress: v.redisAddr, RedisDB: v.redisDB, Brokers: broker.ParseBrokers(v.brokers), Topic: v.topic,
		SpoolDir: v.spoolDir, SpoolMaxBytes: v.spoolMax, SpoolFsync: v.spoolFsync, OnRedisError: v.onRedisError,
		RedisOutageGrace: caddy.Duration(v.outageGrace), Source: v.source, Egress: egress,
		AnonymousSampleRate: v.anonSample, AnonymousEventsPerIPMinute: v.anonPerIP, AnonymousEventsPerMinute: v.anonPerMin,
		PublicURL: v.publicURL,
	}
}
