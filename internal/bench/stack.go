package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/ingest/caddyveil"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/gatewayproc"
	"github.com/veil-platform/veil/internal/gatewayroute"
)

// The gateway and enforcement benches share a stack: a small upstream and
// a `veil gateway run` child of this binary in front of it, the Redis
// records of their subscriptions and keys, and a call with a key.

// emptyRedis empties the bench's Redis database.
func emptyRedis(ctx context.Context, rc rueidis.Client, db int) error {
	if err := rc.Do(ctx, rc.B().Flushdb().Build()).Error(); err != nil {
		return fmt.Errorf("empty redis database %d: %w", db, err)
	}
	return nil
}

// putSubscriptions writes each subscription record and one active test key
// of it, whose id keyID gives; it returns the keys.
func putSubscriptions(ctx context.Context, rc rueidis.Client, subs []enforcement.SubscriptionRecord, keyID func(i int) string) ([]string, error) {
	store := enforcement.New(rc)
	out := make([]string, len(subs))
	for i, sub := range subs {
		if _, err := store.PutSubscription(ctx, sub); err != nil {
			return nil, err
		}
		k, err := apikey.Generate(apikey.EnvTest)
		if err != nil {
			return nil, err
		}
		if _, err := store.PutKey(ctx, enforcement.KeyRecord{
			Hash: k.Hash, KeyID: keyID(i), SubscriptionID: sub.ID, APIID: sub.APIID, Status: enforcement.KeyActive, Version: 1,
		}); err != nil {
			return nil, err
		}
		out[i] = k.Plaintext
	}
	return out, nil
}

// upstreamBody is the upstream's answer: small, like a typical JSON API
// response.
var upstreamBody = []byte(`{"id":42,"name":"bench item","tags":["a","b","c"],"price":"9.99"}` + "\n")

// startUpstream serves 200 with upstreamBody on loopback.
func startUpstream() (*http.Server, net.Addr, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(upstreamBody)))
		_, _ = w.Write(upstreamBody)
	})}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr(), nil
}

// stackConfig is what the gateway's Caddy config is made of.
type stackConfig struct {
	dir       string // the gateway's data, config and spool
	upstream  string
	redisAddr string
	redisDB   int
	brokers   []string
	source    string
	// topic receives the events; default gatewayTopic.
	topic string
}

// gatewayChild is the `veil gateway run` child of the bench, with two
// servers: plain reverse_proxy, and the veil handler before it.
type gatewayChild struct {
	plainURL, veilURL string
	proc              *gatewayproc.Process
}

// startStack starts a small upstream and a veil gateway run child in front
// of it with c (dir and upstream are filled in); stop ends both and reports
// a gateway that did not stop cleanly on stderr.
func startStack(ctx context.Context, bench string, c stackConfig, stderr io.Writer) (*gatewayChild, func(), error) {
	up, upAddr, err := startUpstream()
	if err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp("", "veil-bench-"+bench+"-")
	if err != nil {
		up.Close()
		return nil, nil, err
	}
	c.dir, c.upstream = tmp, upAddr.String()
	gw, err := startGateway(ctx, c)
	if err != nil {
		up.Close()
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	return gw, func() {
		if err := gw.proc.Stop(); err != nil {
			fmt.Fprintf(stderr, "veil bench %s: stop the gateway: %v\n%s", bench, err, gw.proc.Output())
		}
		up.Close()
		os.RemoveAll(tmp)
	}, nil
}

// startGateway runs this binary's `gateway run` on a config with two
// servers, plain and veil, and waits until both answer.
func startGateway(ctx context.Context, c stackConfig) (*gatewayChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the veil binary: %w", err)
	}
	var addrs [2]string
	for i := range addrs {
		if addrs[i], err = gatewayproc.FreeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	g := &gatewayChild{plainURL: "http://" + addrs[0], veilURL: "http://" + addrs[1]}
	b, err := json.MarshalIndent(gatewayConfig(c, addrs[0], addrs[1]), "", "\t")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(c.dir, "caddy.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return nil, err
	}
	g.proc, err = gatewayproc.Start(gatewayproc.Config{
		Binary: exe, Args: []string{"gateway", "run", "--config", file}, DataDir: c.dir,
		Ready: []string{g.plainURL + "/healthz", g.veilURL + "/healthz"}, StopTimeout: 30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if err := g.proc.WaitReady(ctx, 60*time.Second, nil); err != nil {
		_ = g.proc.Stop()
		return nil, err
	}
	return g, nil
}

// gatewayConfig is the Caddy config of the bench's gateway: a plain and a
// veil server on the two addresses, and no admin API (nothing changes it).
func gatewayConfig(c stackConfig, plainAddr, veilAddr string) map[string]any {
	proxy := map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": c.upstream}}}
	veil := gatewayroute.VeilHandler{APIID: benchAPI, PathPrefix: "/bench"}.Handle()
	server := func(addr string, handlers ...map[string]any) map[string]any {
		return map[string]any{
			"listen":          []string{addr},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{
				map[string]any{
					"match":  []any{map[string]any{"path": []string{"/healthz"}}},
					"handle": []any{map[string]any{"handler": "static_response", "status_code": 200}},
				},
				map[string]any{
					"match":    []any{map[string]any{"path": []string{"/bench/*"}}},
					"handle":   handlers,
					"terminal": true,
				},
			},
		}
	}
	if c.topic == "" {
		c.topic = gatewayTopic
	}
	return map[string]any{
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{
			"veil": &caddyveil.App{
				RedisAddress: c.redisAddr, RedisDB: c.redisDB, Brokers: c.brokers, Topic: c.topic,
				SpoolDir: filepath.Join(c.dir, "spool"), Source: c.source,
			},
			"http": map[string]any{"servers": map[string]any{
				"plain": server(plainAddr, proxy),
				"veil":  server(veilAddr, veil, proxy),
			}},
		},
	}
}

// getWithKey sends GET url with the API key and returns the status,
// header and body of the answer.
func getWithKey(ctx context.Context, client *http.Client, url, key string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header, body, nil
}
