package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A secret comes from its variable or the file its _FILE variable names,
// never from the command line; both at once, or a file that cannot be
// read, are refused.
func TestSecretFromEnvOrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte("sk_test_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, file, want string
		args                  []string
		fails                 bool
	}{
		{name: "env", env: "sk_test_env", want: "sk_test_env"},
		{name: "file", file: file, want: "sk_test_fromfile"},
		{name: "none"},
		{name: "both", env: "sk_test_env", file: file, fails: true},
		{name: "missing file", file: filepath.Join(t.TempDir(), "absent"), fails: true},
		{name: "flag", args: []string{"--stripe-secret-key", "sk_test_flag"}, fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("VEIL_TEST_SECRET", tc.env)
			}
			if tc.file != "" {
				t.Setenv("VEIL_TEST_SECRET_FILE", tc.file)
			}
			f := newFlags("test", "", io.Discard)
			var got string
			f.Secret(&got, "VEIL_TEST_SECRET")
			err := f.Parse(tc.args)
			if (err != nil) != tc.fails || got != tc.want {
				t.Errorf("secret = %q, %v; want %q, failing %v", got, err, tc.want, tc.fails)
			}
		})
	}
}
