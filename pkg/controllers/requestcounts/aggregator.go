// Package requestcounts fills status.loadBalancingStatus.requestCounts of TailscaleServices from
// the Prometheus metrics of the proxies that host them: it scrapes every proxy's /metrics at an
// interval, adds the growth of tailscale_gateway_proxy_connections_total{role="service"} per
// backend group (a TailscaleEndpoints, or an external service) to the stored counts, and writes
// the status of the objects whose counts changed. One status write per object and interval, not
// one per request. A count is of connections (the proxy forwards TCP connections, not requests).
package requestcounts

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/generated/clientset/versioned"
	listers "github.com/tailscale-gateway/tailscale-gateway/pkg/generated/listers/gateway/v1alpha1"
)

// DefaultInterval between scrapes.
const DefaultInterval = 30 * time.Second

// metric is the counter aggregated.
const metric = "tailscale_gateway_proxy_connections_total"

// Target is one proxy replica's metrics endpoint. What it reports is trusted only as far as
// the replica's deployment: counts go to TailscaleServices of Namespace named in Serves, whatever
// its labels say.
type Target struct {
	// Key identifies the replica across scrapes ("<namespace>/<pod>").
	Key string
	// URL of its /metrics.
	URL string
	// Namespace of the replica, the only one whose objects its counts reach.
	Namespace string
	// Serves names the TailscaleServices (of Namespace) the replica hosts.
	Serves []string
}

// MaxKeys bounds the keys of one object's requestCounts: growth of a new key beyond it is
// dropped, so no proxy can grow an object towards etcd's size limit.
const MaxKeys = 64

// DefaultScrapeTimeout bounds one scrape, so that a replica that does not answer delays the
// others by that much at most.
const DefaultScrapeTimeout = 2 * time.Second

// Options configure an Aggregator.
type Options struct {
	Client   versioned.Interface
	Services listers.TailscaleServicesLister
	// Targets lists the proxies to scrape now.
	Targets func() []Target
	// Interval between scrapes; DefaultInterval when zero.
	Interval time.Duration
	// HTTPClient scrapes; one with ScrapeTimeout when nil.
	HTTPClient *http.Client
	// ScrapeTimeout bounds each scrape; DefaultScrapeTimeout when zero.
	ScrapeTimeout time.Duration
}

// series identifies one counter of one replica.
type series struct{ target, listener, backend string }

// Aggregator is the scraper. Create it with New and start it with Run.
type Aggregator struct {
	opts Options

	mu      sync.Mutex
	last    map[series]float64          // the value of each counter at its last scrape
	scraped map[string]bool             // targets scraped at least once
	add     map[string]map[string]int64 // by TailscaleServices "<namespace>/<name>": growth not written yet, by backend group
}

// New returns an aggregator.
func New(opts Options) *Aggregator {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = DefaultScrapeTimeout
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: opts.ScrapeTimeout}
	}
	return &Aggregator{opts: opts, last: map[series]float64{}, scraped: map[string]bool{}, add: map[string]map[string]int64{}}
}

// Run scrapes and writes every Interval until ctx is done.
func (a *Aggregator) Run(ctx context.Context) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		a.Scrape(ctx)
		if err := a.Write(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Writing requestCounts")
		}
	}, a.opts.Interval)
}

// Scrape reads every target once and records the growth of its counters. The first scrape of a
// target records its values as the base: what it counted before (before this server started)
// is not known to be unwritten. A counter that appears later grew from 0, and one that went down
// (the replica restarted) grew by its new value.
func (a *Aggregator) Scrape(ctx context.Context) {
	seen := map[series]bool{}
	targets := a.opts.Targets()
	current := make(map[string]bool, len(targets))
	for _, t := range targets {
		current[t.Key] = true
	}
	for _, t := range targets {
		sctx, cancel := context.WithTimeout(ctx, a.opts.ScrapeTimeout)
		values, err := a.scrape(sctx, t.URL)
		cancel()
		if err != nil {
			klog.FromContext(ctx).V(2).Info("Scraping a proxy", "target", t.Key, "err", err)
			for s := range a.last {
				if s.target == t.Key {
					seen[s] = true // keep its base: it may answer next time
				}
			}
			continue
		}
		a.mu.Lock()
		first := !a.scraped[t.Key]
		a.scraped[t.Key] = true
		for k, v := range values {
			s := series{t.Key, k.listener, k.backend}
			seen[s] = true
			prev := a.last[s]
			a.last[s] = v
			if first {
				continue
			}
			growth := v - prev
			if growth < 0 {
				growth = v
			}
			if growth <= 0 {
				continue
			}
			ns, group, ok := groupOf(k.backend)
			if !ok || ns != t.Namespace {
				continue // a replica counts for its own namespace only
			}
			for _, svc := range a.servicesOf(ns, k.listener, t.Serves) {
				if a.add[svc] == nil {
					a.add[svc] = map[string]int64{}
				}
				a.add[svc][group] += int64(growth)
			}
		}
		a.mu.Unlock()
	}
	a.mu.Lock()
	for s := range a.last {
		if !seen[s] {
			delete(a.last, s) // the replica or its listener is gone
		}
	}
	for t := range a.scraped {
		if !current[t] {
			delete(a.scraped, t) // a replica that comes back is new
		}
	}
	a.mu.Unlock()
}

// servicesOf returns the TailscaleServices of namespace ns, among serves, whose VIP service the
// listener ("svc:<name>/tcp/<port>") serves. Called with a.mu held.
func (a *Aggregator) servicesOf(ns, listener string, serves []string) []string {
	name, _, ok := strings.Cut(listener, "/")
	if !ok {
		return nil
	}
	items, err := a.opts.Services.TailscaleServices(ns).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range items {
		if s.Spec.VIPService != nil && vipName(s.Spec.VIPService.Name) == name && slices.Contains(serves, s.Name) {
			out = append(out, s.Namespace+"/"+s.Name)
		}
	}
	return out
}

func vipName(n string) string {
	if strings.HasPrefix(n, "svc:") {
		return n
	}
	return "svc:" + n
}

// groupOf maps a target label ("<ns>/<TailscaleEndpoints>/<endpoint>" or
// "<ns>/<TailscaleServices>/external/<name>") to its namespace and the key of requestCounts: the
// TailscaleEndpoints' name, or the external service's.
func groupOf(target string) (ns, group string, ok bool) {
	parts := strings.Split(target, "/")
	switch {
	case len(parts) == 4 && parts[2] == "external":
		return parts[0], parts[3], true
	case len(parts) == 3:
		return parts[0], parts[1], true
	}
	return "", "", false
}

type key struct{ listener, backend string }

// scrape returns the service-role connection counters of one proxy.
func (a *Aggregator) scrape(ctx context.Context, url string) (map[key]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := a.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("parsing the metrics of %s: %w", url, err)
	}
	out := map[key]float64{}
	fam, ok := families[metric]
	if !ok {
		return out, nil
	}
	for _, m := range fam.GetMetric() {
		var role, listener, backend string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "role":
				role = l.GetValue()
			case "listener":
				listener = l.GetValue()
			case "target":
				backend = l.GetValue()
			}
		}
		if role == "service" && m.GetCounter() != nil {
			out[key{listener, backend}] += m.GetCounter().GetValue()
		}
	}
	return out, nil
}

// Write adds the recorded growth to the stored requestCounts of each TailscaleServices, one
// status update per object; growth not written (an error) is kept for the next Write.
func (a *Aggregator) Write(ctx context.Context) error {
	a.mu.Lock()
	pending := a.add
	a.add = map[string]map[string]int64{}
	a.mu.Unlock()
	var firstErr error
	for svcKey, growth := range pending {
		ns, name, _ := strings.Cut(svcKey, "/")
		err := a.write(ctx, ns, name, growth)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			a.mu.Lock()
			if a.add[svcKey] == nil {
				a.add[svcKey] = map[string]int64{}
			}
			for g, n := range growth {
				a.add[svcKey][g] += n
			}
			a.mu.Unlock()
			if firstErr == nil {
				firstErr = fmt.Errorf("TailscaleServices %s: %w", svcKey, err)
			}
		}
	}
	return firstErr
}

func (a *Aggregator) write(ctx context.Context, ns, name string, growth map[string]int64) error {
	client := a.opts.Client.GatewayV1alpha1().TailscaleServices(ns)
	for range 5 {
		cur, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Status.LoadBalancingStatus == nil {
			cur.Status.LoadBalancingStatus = &v1alpha1.LoadBalancingStatus{}
		}
		counts := maps.Clone(cur.Status.LoadBalancingStatus.RequestCounts)
		if counts == nil {
			counts = map[string]int64{}
		}
		for g, n := range growth {
			if _, known := counts[g]; known || len(counts) < MaxKeys {
				counts[g] += n
			}
		}
		cur.Status.LoadBalancingStatus.RequestCounts = counts
		_, err = client.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("updating the status: conflicts on every attempt")
}
