package httpapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/analytics"
)

// streamServer serves one export whose rows run writes.
func streamServer(t *testing.T, run func(analytics.Sink) (int, error)) *http.Response {
	t.Helper()
	a := &api{log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(a.handle(func(w http.ResponseWriter, r *http.Request) error {
		return a.stream(w, r, analytics.NDJSON, "test", run)
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// TestStreamFirstBytesEarly: the client reads the first row while the
// export is still running (it writes the rest only once the client has
// it), so rows are flushed as they come, not held until the end.
func TestStreamFirstBytesEarly(t *testing.T) {
	got := make(chan struct{})
	resp := streamServer(t, func(s analytics.Sink) (int, error) {
		if _, err := io.WriteString(s.W, "{\"n\":1}\n"); err != nil {
			return 0, err
		}
		if err := s.Flush(); err != nil {
			return 1, err
		}
		<-got
		_, err := io.WriteString(s.W, "{\"n\":2}\n")
		return 2, err
	})
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "{\"n\":1}\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(got)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "{\"n\":2}\n" || resp.Trailer.Get("Veil-Export-Rows") != "2" {
		t.Errorf("rest %q, %v, trailer %q", rest, err, resp.Trailer.Get("Veil-Export-Rows"))
	}
}

// TestStreamCutShort: a failure after the first byte cuts the connection:
// the client reads an unexpected EOF and no trailer, never a body that
// looks complete. A failure before it is a problem document.
func TestStreamCutShort(t *testing.T) {
	resp := streamServer(t, func(s analytics.Sink) (int, error) {
		for i := range 3 {
			if _, err := fmt.Fprintf(s.W, "{\"n\":%d}\n", i); err != nil {
				return i, err
			}
		}
		if err := s.Flush(); err != nil {
			return 3, err
		}
		return 3, errors.New("read usage export: connection reset")
	})
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || resp.Trailer.Get("Veil-Export-Rows") != "" || !strings.HasPrefix(string(body), "{\"n\":0}\n") {
		t.Errorf("body %q, error %v, trailer %q; want the rows sent, an unexpected EOF and no trailer", body, err, resp.Trailer.Get("Veil-Export-Rows"))
	}
	resp = streamServer(t, func(analytics.Sink) (int, error) { return 0, analytics.ErrUnavailable })
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("failure before the first byte: %d %s %s; want a 503 problem", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}
