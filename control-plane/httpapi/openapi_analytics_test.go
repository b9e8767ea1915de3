package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// The analytics and export routes answer what the document declares:
// the views of a subscription (with cost) and of a key (cost null), the
// exports in NDJSON and CSV, and their refusals.
func TestAnalyticsContract(t *testing.T) {
	f := newAnalyticsFixture(t)
	c := newContract(t, f.e.Server.URL)
	c.call(http.StatusOK, "GET", "/v1/subscriptions/"+f.subID+"/analytics?"+kolkataWindow, f.buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/subscriptions/"+f.subID+"/analytics?key_id="+f.key1, f.prov, nil)
	c.call(http.StatusOK, "GET", "/v1/keys/"+f.key1+"/analytics?"+kolkataWindow, f.buyer, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/subscriptions/"+f.subID+"/analytics?tz=Mars/Olympus", f.buyer, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+f.subID+"/analytics", f.stranger, nil)
	c.call(http.StatusNotFound, "GET", "/v1/keys/"+f.key1+"/analytics", f.other, nil)
	// One row, so that the validator, which reads the body as one JSON
	// value, can check the NDJSON line against UsageExportRow.
	c.call(http.StatusOK, "GET", "/v1/subscriptions/"+f.subID+"/usage/export?status_class=5xx&key_id="+f.key2+"&"+exportWindow, f.buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/subscriptions/"+f.subID+"/usage/export?format=csv&"+exportWindow, f.buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/apis/"+f.apiID+"/usage/export?status_class=5xx&method=GET&route=/v1/items/{id}&subscription_id="+f.subID+"&key_id="+f.key2+"&"+exportWindow, f.prov, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/apis/"+f.apiID+"/usage/export", f.prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+f.apiID+"/usage/export?"+exportWindow, f.buyer, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+f.subID+"/usage/export?"+exportWindow, f.stranger, nil)
}

// exerciseConsumerAnalytics calls each analytics and export operation in
// TestOpenAPIMatchesResponses, whose control plane has no ClickHouse for
// them: the refusals that need none.
func exerciseConsumerAnalytics(c *contract, tok string) {
	c.t.Helper()
	missing := uuid.NewString()
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+missing+"/analytics", tok, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/keys/"+missing+"/analytics?tz=Nowhere/Else", tok, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+missing+"/usage/export?"+exportWindow, tok, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/apis/"+missing+"/usage/export?format=csv", tok, nil)
}
