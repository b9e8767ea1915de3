package main

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/veil-platform/veil/ingest/caddyveil"
)

// TestVeilAppJSON: the veil app's config, marshalled from caddyveil.App,
// is what Caddy read from the JSON written by hand before it, with the
// defaults and with every setting changed. (Durations are now written in
// nanoseconds, which caddy.Duration reads as it reads "30s".)
func TestVeilAppJSON(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flags  veilAppFlags
		egress *caddyveil.EgressConfig
		was    string
	}{
		{
			name: "defaults",
			flags: veilAppFlags{
				redisAddr: "127.0.0.1:6379", brokers: "127.0.0.1:9092", topic: "veil.usage.raw", spoolMax: 1 << 30,
				spoolFsync: "interval", onRedisError: "local", outageGrace: 30 * time.Second, anonSample: 100, anonPerIP: 60,
				anonPerMin: caddyveil.DefaultAnonymousEventsPerMinute,
			},
			egress: &caddyveil.EgressConfig{Deny: []string{"127.0.0.1:6379"}},
			was: `{"redis_address": "127.0.0.1:6379", "redis_db": 0, "brokers": ["127.0.0.1:9092"], "topic": "veil.usage.raw",
				"spool_max_bytes": 1073741824, "spool_fsync": "interval", "on_redis_error": "local", "redis_outage_grace": "30s",
				"anonymous_sample_rate": 100, "anonymous_events_per_ip_minute": 60, "anonymous_events_per_minute": 6000,
				"egress": {"deny": ["127.0.0.1:6379"]}}`,
		},
		{
			name: "all set",
			flags: veilAppFlags{
				redisAddr: "10.0.0.5:6380", redisDB: 2, brokers: "k1:9092, k2:9092", topic: "t", spoolDir: "/var/spool/veil",
				spoolMax: 4096, spoolFsync: "always", source: "/gateway/eu-1", onRedisError: "deny", outageGrace: 90 * time.Second,
				anonSample: 1, anonPerIP: 5, anonPerMin: 50, publicURL: "https://veil.example.com",
			},
			egress: &caddyveil.EgressConfig{Allow: []string{"10.20.0.0/16"}, Deny: []string{"10.0.0.5:6380"}, Resolver: "10.0.0.53:53"},
			was: `{"redis_address": "10.0.0.5:6380", "redis_db": 2, "brokers": ["k1:9092", "k2:9092"], "topic": "t",
				"spool_max_bytes": 4096, "spool_fsync": "always", "on_redis_error": "deny", "redis_outage_grace": "1m30s",
				"anonymous_sample_rate": 1, "anonymous_events_per_ip_minute": 5, "anonymous_events_per_minute": 50,
				"spool_dir": "/var/spool/veil", "source": "/gateway/eu-1", "public_url": "https://veil.example.com",
				"egress": {"allow": ["10.20.0.0/16"], "deny": ["10.0.0.5:6380"], "resolver": "10.0.0.53:53"}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.flags.app(tc.egress))
			if err != nil {
				t.Fatalf("json.Marshal(app) = %v", err)
			}
			var got, want caddyveil.App
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", b, err)
			}
			if err := json.Unmarshal([]byte(tc.was), &want); err != nil {
				t.Fatalf("json.Unmarshal(was) = %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("app JSON %s reads as %+v; want %+v", b, got, want)
			}
		})
	}
}
