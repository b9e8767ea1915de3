package portal

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

// SignInForTest creates a session for p as a sign-in would and returns its
// cookie (add it to requests, or to a client's jar for the server's URL)
// and the Session, whose CSRF unsafe requests must carry. For tests of
// pages behind Middleware and Require.
func SignInForTest(t testing.TB, a *Auth, p identity.Principal) (*http.Cookie, Session) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/auth/test", nil)
	if err := a.startSession(t.Context(), rec, req, p, methodDev); err != nil {
		t.Fatalf("start session for %+v: %v", p, err)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("start session set cookies %v; want one", cookies)
	}
	check := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
	check.AddCookie(cookies[0])
	s, _, err := a.session(t.Context(), check)
	if err != nil {
		t.Fatalf("load the session just started: %v", err)
	}
	return cookies[0], s
}
