package aggregation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// eventTimeout bounds the wait for one watch event.
const eventTimeout = 30 * time.Second

// BenchmarkGet reports GET latency percentiles of one object on each path.
func BenchmarkGet(b *testing.B) {
	for _, n := range sizes {
		for _, p := range pathsWith(b, n) {
			b.Run(fmt.Sprintf("objects=%d/path=%s", n, p.name), func(b *testing.B) {
				latencies := make([]time.Duration, 0, b.N)
				for i := 0; i < b.N; i++ {
					var obj v1alpha1.TailscaleEndpoints
					start := time.Now()
					if err := do(p.client, http.MethodGet, fmt.Sprintf("%s/ep-%d", p.url, i%n), nil, &obj); err != nil {
						b.Fatal(err)
					}
					latencies = append(latencies, time.Since(start))
				}
				reportPercentiles(b, latencies, "")
			})
		}
	}
}

// BenchmarkList reports the time of one LIST of every object on each path (ns/op).
func BenchmarkList(b *testing.B) {
	for _, n := range sizes {
		for _, p := range pathsWith(b, n) {
			b.Run(fmt.Sprintf("objects=%d/path=%s", n, p.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					var list v1alpha1.TailscaleEndpointsList
					if err := do(p.client, http.MethodGet, p.url, nil, &list); err != nil {
						b.Fatal(err)
					}
					if len(list.Items) < n {
						b.Fatalf("listed %d objects, want %d", len(list.Items), n)
					}
				}
				b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(time.Millisecond), "ms/list")
			})
		}
	}
}

// revision makes every label value the watch benchmark writes unique.
var revision atomic.Int64

// BenchmarkWatchEvent reports how long after a PATCH is sent a watcher of the namespace receives
// its event, on each path (write and watch through the same path).
func BenchmarkWatchEvent(b *testing.B) {
	for _, n := range sizes {
		for _, p := range pathsWith(b, n) {
			b.Run(fmt.Sprintf("objects=%d/path=%s", n, p.name), func(b *testing.B) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				events, err := watch(ctx, p)
				if err != nil {
					b.Fatal(err)
				}
				latencies := make([]time.Duration, 0, b.N)
				for i := 0; i < b.N; i++ {
					rev := fmt.Sprint(revision.Add(1))
					patch := []byte(`{"metadata":{"labels":{"rev":"` + rev + `"}}}`)
					start := time.Now()
					if err := do(p.client, http.MethodPatch, p.url+"/ep-0", patch, nil); err != nil {
						b.Fatal(err)
					}
					if err := waitForRevision(events, rev); err != nil {
						b.Fatal(err)
					}
					latencies = append(latencies, time.Since(start))
				}
				reportPercentiles(b, latencies, "event-")
			})
		}
	}
}

// watch starts a watch of the collection from its current resourceVersion and returns the
// "rev" label of each object it reports.
func watch(ctx context.Context, p path) (<-chan string, error) {
	var head v1alpha1.TailscaleEndpointsList
	if err := do(p.client, http.MethodGet, p.url+"?limit=1", nil, &head); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"?watch=1&resourceVersion="+head.ResourceVersion, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("watch %s: %d %s", p.url, resp.StatusCode, body)
	}
	revs := make(chan string, 16)
	go func() {
		defer resp.Body.Close()
		defer close(revs)
		dec := json.NewDecoder(resp.Body)
		for {
			var ev struct {
				Object struct {
					Metadata metav1.ObjectMeta `json:"metadata"`
				} `json:"object"`
			}
			if err := dec.Decode(&ev); err != nil {
				return
			}
			select {
			case revs <- ev.Object.Metadata.Labels["rev"]:
			case <-ctx.Done():
				return
			}
		}
	}()
	return revs, nil
}

func waitForRevision(revs <-chan string, rev string) error {
	timeout := time.After(eventTimeout)
	for {
		select {
		case got, ok := <-revs:
			if !ok {
				return fmt.Errorf("the watch ended before the event of revision %s", rev)
			}
			if got == rev {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("no event of revision %s within %s", rev, eventTimeout)
		}
	}
}

// do sends a request with body (a JSON merge patch for PATCH) and decodes the JSON answer into
// out unless it is nil.
func do(client *http.Client, method, url string, body []byte, out any) error {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, data)
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func reportPercentiles(b *testing.B, latencies []time.Duration, prefix string) {
	slices.Sort(latencies)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(latencies[len(latencies)/2]), prefix+"p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), prefix+"p99-ms")
}
