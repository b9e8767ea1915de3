package stripepay

import (
	"fmt"
	"log/slog"
	"regexp"

	"github.com/stripe/stripe-go/v85"
)

// secretPattern matches what must never reach a log or an error: API keys,
// webhook secrets and the client secrets of PaymentIntents and
// SetupIntents (which let a browser confirm them), bare or as a JSON field.
var secretPattern = regexp.MustCompile(
	`(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]+|whsec_[A-Za-z0-9]+|` +
		`[a-z]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+|"client_secret"\s*:\s*"[^"]*"`)

// redact replaces every secret in s.
func redact(s string) string { return secretPattern.ReplaceAllString(s, "[redacted]") }

// leveledLogger routes stripe-go's log lines to slog, redacted. stripe-go
// logs every response body at debug level, client secrets included, so
// debug lines are dropped; it logs API errors at error level, but each is
// also returned to the caller, who decides whether it is one, so they go
// to debug like the request lines.
type leveledLogger struct{ log *slog.Logger }

var _ stripe.LeveledLoggerInterface = leveledLogger{}

func (l leveledLogger) Debugf(string, ...any) {}

func (l leveledLogger) Infof(format string, v ...any) {
	l.log.Debug(redact(fmt.Sprintf(format, v...)), "component", "stripe")
}

func (l leveledLogger) Warnf(format string, v ...any) {
	l.log.Warn(redact(fmt.Sprintf(format, v...)), "component", "stripe")
}

func (l leveledLogger) Errorf(format string, v ...any) {
	l.log.Debug(redact(fmt.Sprintf(format, v...)), "component", "stripe")
}
