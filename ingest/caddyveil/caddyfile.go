package caddyveil

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("veil", parseGlobal)
	httpcaddyfile.RegisterHandlerDirective("veil", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("veil", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("veil_metrics", func(httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		return MetricsHandler{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("veil_metrics", httpcaddyfile.Before, "respond")
}

// parseGlobal reads the veil global option into the veil app:
//
//	{
//		veil {
//			redis_address      <host:port>
//			redis_db           <n>
//			cache_ttl          <duration>
//			negative_cache_ttl <duration>
//			redis_outage_grace <duration>
//			on_redis_error     local|allow|deny
//			local_rate_fraction <0..1>
//			brokers            <host:port>...
//			topic              <topic>
//			spool_dir          <dir>
//			spool_max_bytes    <bytes>
//			spool_fsync        always|interval|never
//			memory_events      <n>
//			source             <uri-reference>
//			anonymous_sample_rate <n>
//			anonymous_events_per_ip_minute <n>
//			anonymous_events_per_minute <n>
//			upstream_allow     <cidr|address|address:port>...
//			upstream_deny      <host:port>...
//			upstream_resolver  <host:port>
//		}
//	}
func parseGlobal(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "veil", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the veil global option.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		name := d.Val()
		switch name {
		case "brokers":
			a.Brokers = d.RemainingArgs()
			if len(a.Brokers) == 0 {
				return d.ArgErr()
			}
			continue
		case "upstream_allow", "upstream_deny":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if a.Egress == nil {
				a.Egress = new(EgressConfig)
			}
			if name == "upstream_allow" {
				a.Egress.Allow = append(a.Egress.Allow, args...)
			} else {
				a.Egress.Deny = append(a.Egress.Deny, args...)
			}
			continue
		}
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		switch name {
		case "redis_address":
			a.RedisAddress = v
		case "redis_db":
			a.RedisDB, err = strconv.Atoi(v)
		case "cache_ttl":
			a.CacheTTL, err = duration(v)
		case "negative_cache_ttl":
			a.NegativeCacheTTL, err = duration(v)
		case "redis_outage_grace":
			a.RedisOutageGrace, err = duration(v)
		case "on_redis_error":
			a.OnRedisError = v
		case "local_rate_fraction":
			a.LocalRateFraction, err = strconv.ParseFloat(v, 64)
		case "topic":
			a.Topic = v
		case "spool_dir":
			a.SpoolDir = v
		case "spool_max_bytes":
			a.SpoolMaxBytes, err = strconv.ParseInt(v, 10, 64)
		case "spool_fsync":
			a.SpoolFsync = v
		case "memory_events":
			a.MemoryEvents, err = strconv.Atoi(v)
		case "source":
			a.Source = v
		case "anonymous_sample_rate":
			a.AnonymousSampleRate, err = strconv.Atoi(v)
		case "anonymous_events_per_ip_minute":
			a.AnonymousEventsPerIPMinute, err = strconv.Atoi(v)
		case "anonymous_events_per_minute":
			a.AnonymousEventsPerMinute, err = strconv.Atoi(v)
		case "public_url":
			a.PublicURL = v
		case "upstream_resolver":
			if a.Egress == nil {
				a.Egress = new(EgressConfig)
			}
			a.Egress.Resolver = v
		default:
			return d.Errf("unknown veil option %q", name)
		}
		if err != nil {
			return d.Errf("%s %q: %v", name, v, err)
		}
	}
	return nil
}

// oneArg reads the single argument of a subdirective: one, no more.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	var v string
	if !d.Args(&v) || d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

func duration(v string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	return caddy.Duration(dur), err
}

// parseHandler reads the veil directive:
//
//	veil [<api_id>] {
//		api_id          <id>
//		path_prefix     <prefix>
//		routes          <template>...
//		key_query_param <name>
//		units_header    <header>
//	}
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile reads the veil directive.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		h.APIID = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for d.NextBlock(0) {
		name := d.Val()
		if name == "routes" {
			h.Routes = d.RemainingArgs()
			if len(h.Routes) == 0 {
				return d.ArgErr()
			}
			continue
		}
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		switch name {
		case "api_id":
			h.APIID = v
		case "path_prefix":
			h.PathPrefix = v
		case "key_query_param":
			h.KeyQueryParam = v
		case "units_header":
			h.UnitsHeader = v
		default:
			return d.Errf("unknown veil subdirective %q", name)
		}
	}
	return nil
}

var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
