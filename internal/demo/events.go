package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/schemas/usage"
)

// events posts the run's events to ingest in batches, then a batch with
// one bad event, and reads the topic back; it returns how many of this
// run's events the topic holds, every accepted one.
func (w *walk) events(ctx context.Context) (int, error) {
	c := w.cfg
	w.step("waiting for ingest at %s to be ready", c.IngestURL)
	if err := waitReady(ctx, w.http, c.IngestURL+"/readyz", 90*time.Second); err != nil {
		return 0, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.ParseBrokers(c.Brokers)...))
	if err != nil {
		return 0, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	start, err := adm.ListEndOffsets(ctx, broker.TopicUsageRaw)
	if err != nil {
		return 0, fmt.Errorf("read end offsets of %s: %w", broker.TopicUsageRaw, err)
	}

	w.run = fmt.Sprintf("demo-%d", time.Now().Unix())
	w.source = "/demo/" + w.run
	w.now = time.Now().UTC()
	accepted, err := w.sendBatches(ctx)
	if err != nil {
		return 0, err
	}
	if err := w.sendBadBatch(ctx); err != nil {
		return 0, err
	}
	accepted++

	w.step("reading %s back from Kafka", broker.TopicUsageRaw)
	found, perPartition, err := countSource(ctx, cl, adm, start, w.source)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(w.out, "events of this run in the topic: %d of %d accepted\n", found, accepted)
	fmt.Fprintf(w.out, "by partition (key = subject, so each subscription stays in one partition): %v\n", perPartition)
	if found != accepted {
		return 0, fmt.Errorf("the topic holds %d of this run's events; want %d", found, accepted)
	}
	return found, nil
}

// sendBatches posts the configured number of events with a progress bar
// and returns how many were accepted.
func (w *walk) sendBatches(ctx context.Context) (int, error) {
	c := w.cfg
	w.step("sending %d events in batches of %d to POST %s/v1/events", c.Events, c.Batch, c.IngestURL)
	bar := progressbar.NewOptions(c.Events,
		progressbar.OptionSetWriter(w.out),
		progressbar.OptionSetDescription("events"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w.out) }),
	)
	accepted := 0
	for sent := 0; sent < c.Events; {
		n := min(c.Batch, c.Events-sent)
		body := []byte{'['}
		for i := 0; i < n; i++ {
			if i > 0 {
				body = append(body, ',')
			}
			id := sent + i
			body = usage.AppendEvent(body, &usage.Event{
				ID: fmt.Sprintf("%s-%d", w.run, id), Source: w.source, Type: usage.TypeAPIRequest,
				Time: w.now.Add(-time.Duration(c.Events-id) * time.Millisecond), Subject: fmt.Sprintf(subjectPrefix+"%012d", id%5),
				Data: usage.Data{APIID: "api_weather", KeyID: fmt.Sprintf("key_demo_%d", id%10), Method: "GET",
					Route: "/v1/forecast/{city}", Path: fmt.Sprintf("/v1/forecast/city-%d", id%40), Status: 200,
					LatencyMS: uint32(5 + id%90), ResponseBytes: uint64(1000 + id%3000), Units: decimal.NewFromInt(1)},
			})
		}
		body = append(body, ']')
		status, answer, err := post(ctx, w.http, c.IngestURL+"/v1/events", c.IngestToken, ingest.MediaTypeBatch, body)
		if err != nil {
			return 0, err
		}
		if status != http.StatusAccepted {
			return 0, fmt.Errorf("ingest answered %d: %s", status, answer)
		}
		accepted += n
		sent += n
		_ = bar.Add(n)
	}
	return accepted, nil
}

// sendBadBatch posts a batch of one good and one bad event: ingest accepts
// the good one and names the bad one with its reason.
func (w *walk) sendBadBatch(ctx context.Context) error {
	w.step("a batch with one bad event: the good ones are accepted, the bad one is named with its reason")
	record := func(id string, units int64) *usage.Event {
		return &usage.Event{ID: w.run + "-" + id, Source: w.source, Type: usage.TypeUsageRecord, Time: w.now.Truncate(time.Second),
			Subject: Subject0, Data: usage.Data{APIID: "api_weather", Units: decimal.NewFromInt(units)}}
	}
	bad := append(usage.AppendEvent([]byte{'['}, record("good", 3)), ',')
	bad = append(usage.AppendEvent(bad, record("bad", -2)), ']') // negative units: refused
	status, answer, err := post(ctx, w.http, w.cfg.IngestURL+"/v1/events", w.cfg.IngestToken, ingest.MediaTypeBatch, bad)
	if err != nil {
		return err
	}
	fmt.Fprintf(w.out, "HTTP %d\n%s\n", status, indentJSON(answer))
	if status != http.StatusMultiStatus {
		return fmt.Errorf("the mixed batch got %d; want 207", status)
	}
	return nil
}

func waitReady(ctx context.Context, client *http.Client, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("answered %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", url, d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func post(ctx context.Context, client *http.Client, url, token, ctype string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("post events: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func indentJSON(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "  ", "  ") != nil {
		return string(b)
	}
	return "  " + strings.TrimSpace(out.String())
}

// countSource reads the topic from the offsets in start to its current end
// and counts the events whose source is source.
func countSource(ctx context.Context, cl *kgo.Client, adm *kadm.Client, start kadm.ListedOffsets, source string) (int, map[int32]int, error) {
	end, err := adm.ListEndOffsets(ctx, broker.TopicUsageRaw)
	if err != nil {
		return 0, nil, fmt.Errorf("read end offsets: %w", err)
	}
	from := map[string]map[int32]kgo.Offset{broker.TopicUsageRaw: {}}
	remaining := map[int32]int64{}
	end.Each(func(o kadm.ListedOffset) {
		s, _ := start.Lookup(o.Topic, o.Partition)
		if o.Offset > s.Offset {
			from[broker.TopicUsageRaw][o.Partition] = kgo.NewOffset().At(s.Offset)
			remaining[o.Partition] = o.Offset
		}
	})
	reader, err := kgo.NewClient(kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.ConsumePartitions(from))
	if err != nil {
		return 0, nil, err
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	found := 0
	perPartition := map[int32]int{}
	needle := []byte(`"source":"` + source + `"`)
	for len(remaining) > 0 {
		fs := reader.PollFetches(ctx)
		if ctx.Err() != nil {
			return found, perPartition, fmt.Errorf("reading the topic back timed out with %d partitions unread", len(remaining))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if bytes.Contains(r.Value, needle) {
				found++
				perPartition[r.Partition]++
			}
			if r.Offset+1 >= remaining[r.Partition] {
				delete(remaining, r.Partition)
			}
		})
	}
	return found, perPartition, nil
}
