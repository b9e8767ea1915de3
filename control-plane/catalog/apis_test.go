package catalog_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
)

func TestCreateAPI(t *testing.T) {
	e := setup(t)
	ctx := t.Context()

	a, err := e.svc.CreateAPI(ctx, e.provider, e.input("weather"))
	if err != nil {
		t.Fatalf("CreateAPI(weather) = %v; want nil", err)
	}
	if a.State != catalog.StateDraft || a.OrganizationID != e.org || a.Version != "1" || a.CreatedBy != "provider-1" ||
		a.GatewayPath != "/weather" || a.Visibility != catalog.VisibilityPublic {
		t.Errorf("CreateAPI(weather) = state %s, org %s, version %q, by %q, path %q, visibility %s; want draft, %s, 1, provider-1, /weather, public",
			a.State, a.OrganizationID, a.Version, a.CreatedBy, a.GatewayPath, a.Visibility, e.org)
	}
	versions, err := e.svc.ListVersions(ctx, e.provider, a.ID)
	if err != nil || len(versions) != 1 || versions[0].Version != "1" || versions[0].UpstreamURL != e.upstream.url {
		t.Errorf("ListVersions(weather) = %+v, %v; want version 1 at %s", versions, err, e.upstream.url)
	}
	if got := e.auditActions(a.ID); !slices.Equal(got, []string{"api.create"}) {
		t.Errorf("audit of CreateAPI = %v; want [api.create]", got)
	}
	if got := e.publishedTypes(a.ID); !slices.Equal(got, []string{"api.created"}) {
		t.Errorf("published by CreateAPI = %v; want [api.created]", got)
	}

	// The slug is unique across organizations.
	_, err = e.svc.CreateAPI(ctx, e.otherProvider, e.input("weather"))
	wantErr(t, "CreateAPI(weather) again by another organization", err, catalog.ErrSlugTaken)

	_, err = e.svc.CreateAPI(ctx, e.consumer, e.input("consumed"))
	wantErr(t, "CreateAPI by a consumer", err, identity.ErrForbidden)

	bad := e.input("Bad Slug")
	bad.UpstreamURL = "ftp://example.com"
	_, err = e.svc.CreateAPI(ctx, e.provider, bad)
	wantFields(t, "CreateAPI(bad slug, ftp upstream)", err, "slug", "upstream_url")

	if n := e.count(`SELECT count(*) FROM apis`); n != 1 {
		t.Errorf("apis after the refused creations = %d; want 1", n)
	}
}

// TestUpdateAPIByState checks which fields change in which state: what the
// gateway serves and what the catalog shows, both reviewed, only while
// editable; going private and unchanged values in any state but retired.
func TestUpdateAPIByState(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	// Failed is not editable: an admin's retry registers what was approved,
	// so a change goes through revise → draft → submit.
	editable := map[catalog.State]bool{catalog.StateDraft: true, catalog.StateRejected: true}
	newURL := "http://127.0.0.1:1/v2"
	newRoutes := []catalog.Route{{Methods: []string{"POST"}, Path: "/orders"}}
	newHealth := "/ping"
	for i, state := range catalog.States {
		a := e.createAPI(e.provider, "api-"+string(rune('a'+i)))
		e.setState(a.ID, state)
		gatewayPatches := map[string]catalog.APIPatch{
			"upstream_url":      {UpstreamURL: &newURL},
			"routes":            {Routes: &newRoutes},
			"health_check_path": {HealthCheckPath: &newHealth},
			"slug":              {Slug: ptr(a.Slug + "-new")},
		}
		for field, p := range gatewayPatches {
			_, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, p)
			if editable[state] {
				if err != nil {
					t.Errorf("UpdateAPI(%s in %s) = %v; want nil", field, state, err)
				}
			} else {
				wantErr(t, "UpdateAPI("+field+" in "+string(state)+")", err, catalog.ErrNotEditable)
			}
		}
		// What the catalog shows was reviewed too: an approved private
		// API must not turn public with a new docs_url unreviewed.
		// Going private only narrows who sees it: allowed in every state
		// but retired.
		public, private := catalog.VisibilityPublic, catalog.VisibilityPrivate
		if state != catalog.StateRetired {
			if got, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, catalog.APIPatch{Visibility: &private}); err != nil || got.Visibility != private {
				t.Errorf("UpdateAPI(private in %s) = %s, %v; want private, nil", state, got.Visibility, err)
			}
		}
		shownPatches := map[string]catalog.APIPatch{
			"name":        {Name: ptr("Renamed")},
			"description": {Description: ptr("now with more weather")},
			"docs_url":    {DocsURL: ptr("https://phish.example/docs")},
			"visibility":  {Visibility: &public},
		}
		for field, p := range shownPatches {
			cur := e.api(a.ID)
			got, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, p)
			if editable[state] {
				if err != nil || got.State != state {
					t.Errorf("UpdateAPI(%s in %s) = %s, %v; want nil, state unchanged", field, state, got.State, err)
				}
				continue
			}
			wantErr(t, "UpdateAPI("+field+" in "+string(state)+")", err, catalog.ErrNotEditable)
			if after := e.api(a.ID); after.Name != cur.Name || after.Description != cur.Description || after.DocsURL != cur.DocsURL || after.Visibility != cur.Visibility {
				t.Errorf("API after the refused %s in %s = %+v; want unchanged", field, state, after)
			}
		}
		if state == catalog.StateRetired || editable[state] {
			continue
		}
		// The same values again change nothing and pass.
		cur := e.api(a.ID)
		if _, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, catalog.APIPatch{Name: &cur.Name, Description: &cur.Description, DocsURL: &cur.DocsURL, Visibility: &cur.Visibility}); err != nil {
			t.Errorf("UpdateAPI(unchanged values in %s) = %v; want nil", state, err)
		}
	}
}

func TestUpdateAPI(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a := e.createAPI(e.provider, "weather")
	e.createAPI(e.otherProvider, "taken")

	newURL := "http://127.0.0.1:1/v2"
	got, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, catalog.APIPatch{UpstreamURL: &newURL})
	if err != nil || got.UpstreamURL != newURL || got.Slug != "weather" || got.Name != a.Name {
		t.Fatalf("UpdateAPI(upstream) = %+v, %v; want only the upstream changed to %s", got, err, newURL)
	}
	audits := e.audits(a.ID)
	last := audits[len(audits)-1]
	if last.Action != "api.update" || last.Actor != "provider-1" || last.Before["upstream_url"] != e.upstream.url || last.After["upstream_url"] != newURL {
		t.Errorf("audit of UpdateAPI = %s by %s, before %v, after %v; want api.update by provider-1 from %s to %s",
			last.Action, last.Actor, last.Before["upstream_url"], last.After["upstream_url"], e.upstream.url, newURL)
	}

	_, err = e.svc.UpdateAPI(ctx, e.provider, a.ID, catalog.APIPatch{Slug: ptr("taken")})
	wantErr(t, "UpdateAPI(slug taken)", err, catalog.ErrSlugTaken)

	_, err = e.svc.UpdateAPI(ctx, e.provider, a.ID, catalog.APIPatch{Routes: &[]catalog.Route{{Path: "items"}}, DocsURL: ptr("docs")})
	wantFields(t, "UpdateAPI(bad route, bad docs)", err, "routes[0].path", "routes[0].methods", "docs_url")

	_, err = e.svc.UpdateAPI(ctx, e.otherProvider, a.ID, catalog.APIPatch{Name: ptr("mine")})
	wantErr(t, "UpdateAPI by another organization", err, catalog.ErrAPINotFound)
	_, err = e.svc.UpdateAPI(ctx, e.consumer, a.ID, catalog.APIPatch{Name: ptr("mine")})
	wantErr(t, "UpdateAPI by a consumer of the organization", err, identity.ErrForbidden)
	_, err = e.svc.UpdateAPI(ctx, e.provider, uuid.New(), catalog.APIPatch{Name: ptr("x")})
	wantErr(t, "UpdateAPI(unknown id)", err, catalog.ErrAPINotFound)

	if got := e.api(a.ID); got.UpstreamURL != newURL || got.Slug != "weather" || got.Name != a.Name {
		t.Errorf("API after refused updates = %s, %s, %s; want %s, weather, %s", got.UpstreamURL, got.Slug, got.Name, newURL, a.Name)
	}
}

func TestDeleteAPI(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	deletable := map[catalog.State]bool{catalog.StateDraft: true, catalog.StateRejected: true, catalog.StateFailed: true, catalog.StateRetired: true}
	for i, state := range catalog.States {
		a := e.createAPI(e.provider, "api-"+string(rune('a'+i)))
		e.setState(a.ID, state)
		err := e.svc.DeleteAPI(ctx, e.provider, a.ID)
		if !deletable[state] {
			wantErr(t, "DeleteAPI(in "+string(state)+")", err, catalog.ErrNotEditable)
			if got := e.api(a.ID); got.State != state {
				t.Errorf("state after refused DeleteAPI(in %s) = %s; want unchanged", state, got.State)
			}
			continue
		}
		if err != nil {
			t.Errorf("DeleteAPI(in %s) = %v; want nil", state, err)
			continue
		}
		_, err = e.svc.GetAPI(ctx, e.admin, a.ID)
		wantErr(t, "GetAPI after DeleteAPI(in "+string(state)+")", err, catalog.ErrAPINotFound)
		// The audit entry outlives the API.
		if got := e.auditActions(a.ID); !slices.Equal(got, []string{"api.create", "api.delete"}) {
			t.Errorf("audit after DeleteAPI(in %s) = %v; want [api.create api.delete]", state, got)
		}
	}

	a := e.createAPI(e.provider, "kept")
	wantErr(t, "DeleteAPI by another organization", e.svc.DeleteAPI(ctx, e.otherProvider, a.ID), catalog.ErrAPINotFound)
	wantErr(t, "DeleteAPI by a consumer", e.svc.DeleteAPI(ctx, e.consumer, a.ID), identity.ErrForbidden)
	e.api(a.ID)
}

func TestCreateVersion(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a := e.createAPI(e.provider, "weather")

	in := catalog.VersionInput{Version: "2", UpstreamURL: "http://127.0.0.1:1/v2",
		Routes: []catalog.Route{{Methods: []string{"GET", "POST"}, Path: "/v2/items"}}, Changelog: "adds POST"}
	v, err := e.svc.CreateVersion(ctx, e.provider, a.ID, in)
	if err != nil || v.Version != "2" || v.CreatedBy != "provider-1" || v.CreatedAt.IsZero() {
		t.Fatalf("CreateVersion(2) = %+v, %v; want version 2 by provider-1", v, err)
	}
	got := e.api(a.ID)
	if got.Version != "2" || got.UpstreamURL != in.UpstreamURL || !slices.EqualFunc(got.Routes, in.Routes, sameRoute) {
		t.Errorf("API after CreateVersion(2) = version %q, %s, %v; want the new version current", got.Version, got.UpstreamURL, got.Routes)
	}
	versions, err := e.svc.ListVersions(ctx, e.provider, a.ID)
	if err != nil || len(versions) != 2 || versions[0].Version != "2" || versions[1].Version != "1" || versions[0].Changelog != "adds POST" {
		t.Errorf("ListVersions = %+v, %v; want 2 then 1", versions, err)
	}

	_, err = e.svc.CreateVersion(ctx, e.provider, a.ID, catalog.VersionInput{Version: "1", UpstreamURL: e.upstream.url})
	wantErr(t, "CreateVersion(1) again", err, catalog.ErrVersionExists)
	_, err = e.svc.CreateVersion(ctx, e.provider, a.ID, catalog.VersionInput{Version: "v 3", UpstreamURL: "/relative"})
	wantFields(t, "CreateVersion(bad)", err, "version", "upstream_url")
	_, err = e.svc.CreateVersion(ctx, e.otherProvider, a.ID, catalog.VersionInput{Version: "3", UpstreamURL: e.upstream.url})
	wantErr(t, "CreateVersion by another organization", err, catalog.ErrAPINotFound)

	for _, state := range []catalog.State{catalog.StatePendingApproval, catalog.StateApproved, catalog.StateActive, catalog.StateRetired} {
		e.setState(a.ID, state)
		_, err = e.svc.CreateVersion(ctx, e.provider, a.ID, catalog.VersionInput{Version: "3", UpstreamURL: e.upstream.url})
		wantErr(t, "CreateVersion(3 in "+string(state)+")", err, catalog.ErrNotEditable)
	}
	if got := e.api(a.ID); got.Version != "2" {
		t.Errorf("version after refused CreateVersion = %q; want 2", got.Version)
	}
	if n := e.count(`SELECT count(*) FROM api_versions WHERE api_id = $1`, a.ID); n != 2 {
		t.Errorf("api_versions rows = %d; want 2", n)
	}
}

// TestAPIVisibility checks who reads what: admins everything, members of
// an organization its APIs, everyone the public APIs the gateway serves.
func TestAPIVisibility(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	draft := e.createAPI(e.provider, "draft-api")
	live := e.active("live-api")
	hidden := e.active("hidden-api")
	private := catalog.VisibilityPrivate
	if _, err := e.svc.UpdateAPI(ctx, e.provider, hidden.ID, catalog.APIPatch{Visibility: &private}); err != nil {
		t.Fatal(err)
	}
	stranger := identity.Actor{Subject: "consumer-2", Role: identity.RoleConsumer, OrgID: e.otherOrg}

	tests := []struct {
		actor identity.Actor
		id    uuid.UUID
		want  error
	}{
		{e.admin, draft.ID, nil},
		{e.provider, draft.ID, nil},
		{e.consumer, hidden.ID, nil},
		{e.otherProvider, draft.ID, catalog.ErrAPINotFound},
		{stranger, draft.ID, catalog.ErrAPINotFound},
		{stranger, live.ID, nil},
		{e.otherProvider, live.ID, nil},
		{stranger, hidden.ID, catalog.ErrAPINotFound},
		{e.otherProvider, hidden.ID, catalog.ErrAPINotFound},
	}
	for _, tt := range tests {
		_, err := e.svc.GetAPI(ctx, tt.actor, tt.id)
		if !errors.Is(err, tt.want) {
			t.Errorf("GetAPI(%s, %s) = %v; want %v", tt.actor.Subject, tt.id, err, tt.want)
		}
	}
	for _, tt := range []struct {
		actor identity.Actor
		f     catalog.APIFilter
		want  []uuid.UUID
	}{
		{stranger, catalog.APIFilter{}, []uuid.UUID{live.ID}},
		{e.otherProvider, catalog.APIFilter{}, []uuid.UUID{live.ID}},
		{e.provider, catalog.APIFilter{}, []uuid.UUID{draft.ID, live.ID, hidden.ID}},
		{e.provider, catalog.APIFilter{State: catalog.StateDraft}, []uuid.UUID{draft.ID}},
		{e.admin, catalog.APIFilter{Search: "hidden"}, []uuid.UUID{hidden.ID}},
	} {
		list, next, err := e.svc.ListAPIs(ctx, tt.actor, tt.f)
		var got []uuid.UUID
		for _, a := range list {
			got = append(got, a.ID)
		}
		if err != nil || next != "" || !sameSet(got, tt.want) {
			t.Errorf("ListAPIs(%s, %+v) = %v, %q, %v; want %v", tt.actor.Subject, tt.f, got, next, err, tt.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func sameRoute(a, b catalog.Route) bool {
	return a.Path == b.Path && slices.Equal(a.Methods, b.Methods)
}
