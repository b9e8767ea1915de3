package catalog

import (
	"testing"

	"github.com/veil-platform/veil/internal/validation"
)

// TestStateMachine checks every ordered pair of states: the allowed ones are
// listed here independently of the table in state.go, every other pair must
// be refused.
func TestStateMachine(t *testing.T) {
	allowed := map[[2]State]bool{
		{StateDraft, StateSubmitted}:           true, // provider submits
		{StateSubmitted, StatePendingApproval}: true, // approval request opened
		{StatePendingApproval, StateApproved}:  true, // admin approves
		{StatePendingApproval, StateRejected}:  true, // admin rejects, or the request expires
		{StatePendingApproval, StateDraft}:     true, // admin requests changes
		{StateApproved, StateActive}:           true, // route verified through the gateway
		{StateApproved, StateFailed}:           true, // registration budget spent
		{StateApproved, StateSuspended}:        true, // admin suspends during registration
		{StateApproved, StateRetired}:          true, // provider retires during registration
		{StateActive, StateSuspended}:          true,
		{StateActive, StateDeprecated}:         true,
		{StateActive, StateRetired}:            true,
		{StateRejected, StateDraft}:            true, // provider revises
		{StateRejected, StateSubmitted}:        true, // provider resubmits
		{StateFailed, StateApproved}:           true, // admin retries registration
		{StateFailed, StateDraft}:              true,
		{StateFailed, StateRetired}:            true,
		{StateSuspended, StateApproved}:        true, // admin resumes: registered again
		{StateSuspended, StateRetired}:         true,
		{StateDeprecated, StateActive}:         true,
		{StateDeprecated, StateSuspended}:      true,
		{StateDeprecated, StateRetired}:        true,
	}
	for _, from := range States {
		for _, to := range States {
			want := allowed[[2]State{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v; want %v", from, to, got, want)
			}
			if err := checkTransition(from, to); (err == nil) != want {
				t.Errorf("checkTransition(%s, %s) = %v; want allowed=%v", from, to, err, want)
			}
		}
	}
	if CanTransition(StateRetired, StateActive) || len(transitions[StateRetired]) != 0 {
		t.Errorf("retired must be terminal")
	}
}

func TestRoutedStates(t *testing.T) {
	for _, s := range States {
		want := s == StateActive || s == StateDeprecated
		if got := s.Routed(); got != want {
			t.Errorf("%s.Routed() = %v; want %v", s, got, want)
		}
	}
}

func TestAPIInputValidate(t *testing.T) {
	valid := func() APIInput {
		return APIInput{Name: "Weather", Slug: "weather", UpstreamURL: "http://127.0.0.1:9000/v1",
			Routes: []Route{{Methods: []string{"GET"}, Path: "/forecast"}}}
	}
	tests := []struct {
		name   string
		mutate func(*APIInput)
		field  string
	}{
		{"ok", func(*APIInput) {}, ""},
		{"empty name", func(in *APIInput) { in.Name = " " }, "name"},
		{"bad slug", func(in *APIInput) { in.Slug = "Weather API" }, "slug"},
		{"relative upstream", func(in *APIInput) { in.UpstreamURL = "/v1" }, "upstream_url"},
		{"upstream with credentials", func(in *APIInput) { in.UpstreamURL = "http://u:p@example.com" }, "upstream_url"},
		{"ftp upstream", func(in *APIInput) { in.UpstreamURL = "ftp://example.com" }, "upstream_url"},
		{"route without slash", func(in *APIInput) { in.Routes[0].Path = "forecast" }, "routes[0].path"},
		{"bad method", func(in *APIInput) { in.Routes[0].Methods = []string{"FETCH"} }, "routes[0].methods[0]"},
		{"no methods", func(in *APIInput) { in.Routes[0].Methods = nil }, "routes[0].methods"},
		{"bad health path", func(in *APIInput) { in.HealthCheckPath = "health" }, "health_check_path"},
		{"bad docs url", func(in *APIInput) { in.DocsURL = "docs" }, "docs_url"},
		{"bad visibility", func(in *APIInput) { in.Visibility = "secret" }, "visibility"},
		{"bad version", func(in *APIInput) { in.Version = "v 1" }, "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid()
			tt.mutate(&in)
			err := in.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				if in.Visibility != VisibilityPublic || in.Version != "1" {
					t.Errorf("defaults = %q, %q; want public, 1", in.Visibility, in.Version)
				}
				return
			}
			v, ok := err.(*validation.Error)
			if !ok {
				t.Fatalf("Validate() = %v; want a *validation.Error", err)
			}
			if len(v.Fields) != 1 || v.Fields[0].Field != tt.field {
				t.Errorf("Validate() fields = %+v; want exactly %s", v.Fields, tt.field)
			}
		})
	}
}
