package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGatewayRunsCaddySubcommands(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(":9999 {\n\trespond \"hi\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "version"}, "v2."},
		{[]string{"gateway", "list-modules"}, "http.handlers.reverse_proxy"},
		{[]string{"gateway", "adapt", "--config", caddyfile}, `"body":"hi"`},
	}
	for _, tt := range tests {
		cmd := exec.Command(self, tt.args...)
		cmd.Env = append(os.Environ(), "VEIL_TEST_EXEC=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("veil %s = %v; want success", strings.Join(tt.args, " "), err)
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("veil %s printed %q; want it to contain %q", strings.Join(tt.args, " "), out, tt.want)
		}
	}
}

func TestGatewayRefusesCaddyCommandsThatReplaceIt(t *testing.T) {
	for _, sub := range []string{"start", "upgrade", "add-package"} {
		err := run(t.Context(), []string{"gateway", sub}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("run(gateway %s) = %v; want not supported", sub, err)
		}
	}
}

func TestGatewayBadSettings(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"grace period", "VEIL_GATEWAY_GRACE_PERIOD=soon", nil, "VEIL_GATEWAY_GRACE_PERIOD"},
		{"log level", "", []string{"--log-level", "loud"}, "log level"},
		{"stray argument", "", []string{"--addr", ":0", "extra"}, "unexpected arguments"},
		{"event source outside /gateway/", "VEIL_GATEWAY_EVENT_SOURCE=/billing/eu", nil, "VEIL_GATEWAY_EVENT_SOURCE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tt.env, "="); ok {
				t.Setenv(k, v)
			}
			err := run(t.Context(), append([]string{"gateway"}, tt.args...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(gateway %v) with %s = %v; want an error containing %q", tt.args, tt.env, err, tt.want)
			}
		})
	}
}
