package httpserver

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/internal/problem"
)

var probeMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// MethodNotAllowed answers 405 with a problem and the Allow header RFC 9110
// requires, listing the methods routes has for the request's path.
func MethodNotAllowed(routes chi.Routes) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range probeMethods {
			if routes.Match(chi.NewRouteContext(), m, r.URL.Path) {
				allow = append(allow, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, "method-not-allowed", "Method Not Allowed",
			r.Method+" is not allowed on "+r.URL.Path))
	}
}
