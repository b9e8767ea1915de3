package migrate

import (
	"strings"
	"testing"
)

// TestBackfillInsertShape: the placeholder must be the last condition of
// the INSERT's WHERE, ANDed with the rest, for each slice's time range to
// be ANDed after it; anything else is refused before ClickHouse is asked.
func TestBackfillInsertShape(t *testing.T) {
	for _, where := range []string{
		"WHERE ingested_at < " + BackfillCutoff + " AND api_id != ''", // not last
		"WHERE api_id = 'a' OR api_id = 'b' AND ingested_at < " + BackfillCutoff,
		"WHERE ingested_at <= " + BackfillCutoff,
	} {
		stmt := "INSERT INTO t (n) SELECT count() FROM usage_events " + where + " GROUP BY api_id"
		err := newBackfiller(nil, 0, 0).exec(t.Context(), stmt) // no connection: refused before any query
		if err == nil || !strings.Contains(err.Error(), "must end its WHERE") {
			t.Errorf("%s: err = %v; want the shape refused", where, err)
		}
	}
}
