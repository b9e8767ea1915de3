package migrate

import "testing"

// AfterCount sets a function run by each new view's creation after it
// counted the rows to copy, until the test ends.
func AfterCount(t *testing.T, f func(table string)) {
	afterCount = f
	t.Cleanup(func() { afterCount = nil })
}
