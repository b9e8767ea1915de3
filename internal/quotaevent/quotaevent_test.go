package quotaevent_test

import (
	"errors"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/quotaevent"
)

func TestOutboxLineRoundTrip(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e := quotaevent.Event{SubscriptionID: "0b5e0f8e-6a4c-4d52-9d0e-2f4b8f3a9c11", PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0),
		Threshold: 90, Quota: 1000, Used: 901, Hard: true}
	line := quotaevent.OutboxEntry(e)
	if want := "v1|1793491200|1796083200|90|1000|901|1"; line != want {
		t.Fatalf("OutboxEntry = %q; want %q", line, want)
	}
	got, err := quotaevent.ParseOutbox(e.SubscriptionID, line)
	if err != nil || got != e {
		t.Fatalf("ParseOutbox(%q) = %+v, %v; want %+v", line, got, err, e)
	}
	e.At = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := quotaevent.Unmarshal(b)
	if err != nil || back != e {
		t.Fatalf("Unmarshal(Marshal(e)) = %+v, %v; want %+v", back, err, e)
	}
	if id := e.ID(); id != "0b5e0f8e-6a4c-4d52-9d0e-2f4b8f3a9c11:1793491200:90:1000" {
		t.Errorf("ID = %q", id)
	}
	if !(quotaevent.Event{Threshold: 100, Hard: true}).Blocked() || (quotaevent.Event{Threshold: 90, Hard: true}).Blocked() {
		t.Error("Blocked: want only a hard quota's 100% crossing to block")
	}
}

func TestInvalidQuotaEvents(t *testing.T) {
	for _, line := range []string{
		"", "v2|1|2|80|10|8|1", "v1|1|2|80|10|8", "v1|1|2|80|10|8|yes", "v1|x|2|80|10|8|1",
		"v1|1|2|85|10|8|1", "v1|1|2|80|0|8|1", "v1|1|2|80|10|-1|1", "v1|2|2|80|10|8|1",
	} {
		if _, err := quotaevent.ParseOutbox("sub", line); !errors.Is(err, quotaevent.ErrInvalid) {
			t.Errorf("ParseOutbox(%q) = %v; want ErrInvalid", line, err)
		}
	}
	for _, body := range []string{`{`, `{"subscription_id":""}`, `{"subscription_id":"s","threshold":80,"quota":5,"used":4}`} {
		if _, err := quotaevent.Unmarshal([]byte(body)); !errors.Is(err, quotaevent.ErrInvalid) {
			t.Errorf("Unmarshal(%s) = %v; want ErrInvalid", body, err)
		}
	}
}
