package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/veil-platform/veil/control-plane/gateway"
)

const (
	defaultGatewayAddr      = ":8000"
	defaultGatewayAdminAddr = "127.0.0.1:2019"
)

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
		addr, adminAddr string
		grace           time.Duration
		log             logFlags
	)
	f := newFlags("gateway", `Runs the Caddy gateway: one HTTP server on the gateway address whose routes the control plane
manages through Caddy's admin API. Unknown paths answer 404 with a problem; /healthz and /readyz
answer 200. Caddy logs JSON to stderr.

With a Caddy subcommand instead of flags, runs Caddy's own command line:
  veil gateway run --config caddy.json
  veil gateway adapt --config Caddyfile
  veil gateway version | list-modules | validate | reload | stop | fmt | ...`, stdout)
	f.String(&addr, "addr", "VEIL_GATEWAY_ADDR", defaultGatewayAddr, "listen address of the gateway")
	f.String(&adminAddr, "admin-addr", "VEIL_GATEWAY_ADMIN_ADDR", defaultGatewayAdminAddr, "listen address of Caddy's admin API; keep it on loopback or a private network")
	f.Duration(&grace, "grace-period", "VEIL_GATEWAY_GRACE_PERIOD", 30*time.Second, "how long a stop or a route change waits for requests in flight (0: as long as they take)")
	log.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := gateway.Bootstrap{
		Addr:        addr,
		AdminAddr:   adminAddr,
		LogLevel:    caddyLevel(log.level),
		GracePeriod: grace,
	}.JSON()
	if err != nil {
		return err
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("start gateway: %w", err)
	}
	logger.InfoContext(ctx, "gateway serving", "addr", addr, "admin_addr", adminAddr)
	<-ctx.Done()
	logger.InfoContext(context.WithoutCancel(ctx), "gateway stopping")
	if err := caddy.Stop(); err != nil {
		return fmt.Errorf("stop gateway: %w", err)
	}
	return nil
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
