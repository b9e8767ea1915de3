package bench

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/veil-platform/veil/ingest/caddyveil"
)

func TestResultQuantile(t *testing.T) {
	r := result{latencies: []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 5}, {0.99, 9}, {1, 10}} {
		if got := r.quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v; want %v", tc.q, got, tc.want)
		}
	}
	if got := (result{}).quantile(0.5); got != 0 {
		t.Errorf("quantile of no latencies = %v; want 0", got)
	}
}

// TestGatewayConfig: the veil server puts the veil handler, for the bench's
// API under /bench, before the same reverse_proxy the plain server has.
func TestGatewayConfig(t *testing.T) {
	cfg := gatewayConfig(stackConfig{dir: "/tmp/x", upstream: "127.0.0.1:9", redisAddr: "127.0.0.1:6379", redisDB: 15, source: "/gateway/bench"},
		"127.0.0.1:1", "127.0.0.1:2")
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Apps struct {
			Veil struct {
				Topic  string `json:"topic"`
				Source string `json:"source"`
			} `json:"veil"`
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Apps.Veil.Topic != gatewayTopic || got.Apps.Veil.Source != "/gateway/bench" {
		t.Errorf("veil app topic %q, source %q; want %q, /gateway/bench", got.Apps.Veil.Topic, got.Apps.Veil.Source, gatewayTopic)
	}
	plain, veil := got.Apps.HTTP.Servers["plain"], got.Apps.HTTP.Servers["veil"]
	if len(plain.Routes) != 2 || len(veil.Routes) != 2 {
		t.Fatalf("routes: plain %d, veil %d; want 2 each", len(plain.Routes), len(veil.Routes))
	}
	ph, vh := plain.Routes[1].Handle, veil.Routes[1].Handle
	if len(ph) != 1 || ph[0]["handler"] != "reverse_proxy" {
		t.Errorf("plain handlers = %v; want reverse_proxy alone", ph)
	}
	if len(vh) != 2 || vh[0]["handler"] != "veil" || vh[0]["api_id"] != benchAPI || vh[0]["path_prefix"] != "/bench" || vh[1]["handler"] != "reverse_proxy" {
		t.Errorf("veil handlers = %v; want veil (api %s, prefix /bench) then reverse_proxy", vh, benchAPI)
	}
}

// TestGatewayConfigVeilApp: the veil app, marshalled from caddyveil.App,
// reads as the JSON the bench wrote by hand before it.
func TestGatewayConfigVeilApp(t *testing.T) {
	cfg := gatewayConfig(stackConfig{dir: "/tmp/x", upstream: "127.0.0.1:9", redisAddr: "127.0.0.1:6379", redisDB: 15,
		brokers: []string{"127.0.0.1:9092"}, source: "/gateway/bench"}, "127.0.0.1:1", "127.0.0.1:2")
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Apps struct {
			Veil caddyveil.App `json:"veil"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	var want caddyveil.App
	was := `{"redis_address": "127.0.0.1:6379", "redis_db": 15, "brokers": ["127.0.0.1:9092"], "topic": "` + gatewayTopic + `",
		"spool_dir": "/tmp/x/spool", "source": "/gateway/bench"}`
	if err := json.Unmarshal([]byte(was), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Apps.Veil, want) {
		t.Errorf("veil app = %+v; want %+v", got.Apps.Veil, want)
	}
}
