package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"slices"
	"sync"
	"time"
)

// webhooks records the quota webhooks the consumer receives.
type webhooks struct {
	mu         sync.Mutex
	thresholds []int
}

func (d *webhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Threshold int `json:"threshold"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ev); err == nil && ev.Type == "quota.threshold_crossed" {
		d.mu.Lock()
		d.thresholds = append(d.thresholds, ev.Data.Threshold)
		d.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *webhooks) received() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(slices.Values(d.thresholds))
}

// notices waits for the three quota webhooks and, when mailpit is there,
// the three emails, and shows them.
func (w *walk) notices(ctx context.Context, hooks *webhooks, email string) error {
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(hooks.received(), []int{80, 90, 100}) {
		if time.Now().After(deadline) {
			return fmt.Errorf("quota webhooks received for thresholds %v; want 80, 90 and 100 once each", hooks.received())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(w.out, "  webhooks quota.threshold_crossed received for thresholds %v\n", hooks.received())
	if w.cfg.MailpitURL == "" {
		return nil
	}
	return w.emails(ctx, email, deadline)
}

// emails waits until mailpit holds the three quota emails to email, and
// shows their subjects.
func (w *walk) emails(ctx context.Context, email string, deadline time.Time) error {
	mailpitURL := w.cfg.MailpitURL
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		var page struct {
			Messages []struct{ Subject string } `json:"messages"`
		}
		u := mailpitURL + "/api/v1/search?query=" + neturl.QueryEscape(`to:"`+email+`"`)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintf(w.out, "  (no mailpit at %s, so no email to show: %v)\n", mailpitURL, err)
			return nil
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read mailpit's inbox: %w", err)
		}
		if len(page.Messages) >= 3 {
			for i := len(page.Messages) - 1; i >= 0; i-- {
				fmt.Fprintf(w.out, "  email to %s: %q\n", email, page.Messages[i].Subject)
			}
			fmt.Fprintf(w.out, "  (the inbox: %s)\n", mailpitURL)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailpit holds %d quota emails to %s; want 3", len(page.Messages), email)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
