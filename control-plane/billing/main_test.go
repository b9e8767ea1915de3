package billing

import (
	"flag"
	"os"
	"testing"
)

// TestMain runs more tests at once than there are CPUs unless -parallel
// says otherwise: each test spends its time waiting on its own Postgres
// and ClickHouse databases (creation, migrations, small transactions), not
// computing. Tests that share Mailpit send to recipients of their own.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "6")
	}
	os.Exit(m.Run())
}
