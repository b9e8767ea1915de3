package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/catalog"
)

// exerciseProviderAnalytics calls the provider analytics and the admin
// overview on a control plane without ClickHouse or Kafka: the analytics
// answer 503 to those who may see them, 404 to others; the overview 200
// with the parts it could not read null.
func exerciseProviderAnalytics(t *testing.T, e *testEnv, c *contract, prov, cons, other, admin string) {
	t.Helper()
	var api struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis", prov, authzAPIBody("insights", catalog.VisibilityPublic)).decode(&api)
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	c.call(http.StatusOK, "GET", "/v1/me", prov, nil).decode(&me)
	c.call(http.StatusServiceUnavailable, "GET", "/v1/apis/"+api.ID+"/analytics", prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+api.ID+"/analytics", other, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/apis/"+api.ID+"/analytics?tz=Nowhere/Land", prov, nil)
	c.call(http.StatusServiceUnavailable, "GET", "/v1/providers/"+me.OrganizationID+"/analytics", admin, nil)
	c.call(http.StatusNotFound, "GET", "/v1/providers/"+me.OrganizationID+"/analytics", other, nil)
	c.call(http.StatusForbidden, "GET", "/v1/admin/overview", cons, nil)
	var o struct {
		Volume      *struct{} `json:"volume"`
		Unavailable []struct{ Part string }
	}
	c.call(http.StatusOK, "GET", "/v1/admin/overview", admin, nil).decode(&o)
	if o.Volume != nil || len(o.Unavailable) == 0 {
		t.Errorf("overview without ClickHouse: volume %v, unavailable %v; want null and listed", o.Volume, o.Unavailable)
	}
}

// TestProviderAnalyticsContract: with ClickHouse and data, the answers
// match the document's schemas.
func TestProviderAnalyticsContract(t *testing.T) {
	f := newProviderFixture(t)
	c := newContract(t, f.e.Server.URL)
	c.call(http.StatusOK, "GET", "/v1/apis/"+f.apiA+"/analytics?"+providerWindowQuery+"&tz=Europe/Paris", f.prov, nil)
	c.call(http.StatusOK, "GET", "/v1/providers/"+f.acme+"/analytics?"+providerWindowQuery+"&top=2", f.prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+f.apiA+"/analytics", f.buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/admin/overview", f.admin, nil)
}
