package health

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Run probes the targets until ctx is done, on Options.MaxConcurrent workers fed by one
// dispatcher that hands out targets as they fall due (earliest first). It returns once every
// worker has stopped; probes cut short by ctx are not recorded. Run may be called again after
// it returns, but not while it runs (it panics). Targets that fell due while Run was not
// running are spread over their interval again.
func (p *Prober) Run(ctx context.Context) {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		panic("health: Prober.Run called while running")
	}
	p.running = true
	p.respread(time.Now())
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()

	klog.V(1).InfoS("Starting health prober", "workers", p.workers)
	defer klog.V(1).InfoS("Stopped health prober")
	work := make(chan *target)
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case t := <-work:
					p.probeTarget(ctx, t)
				}
			}
		})
	}
	p.dispatch(ctx, work)
	wg.Wait()
}

// respread queues every target again. Targets left in flight by an earlier Run, and targets
// that fell due while nothing ran, are spread over their interval like new ones rather than
// probed all at once. p.mu must be held.
func (p *Prober) respread(now time.Time) {
	p.queue = p.queue[:0]
	for _, t := range p.targets {
		if t.index < 0 || t.next.Before(now) {
			t.next = now.Add(p.firstDelay(t.Check.Interval))
		}
		t.index = len(p.queue)
		p.queue = append(p.queue, t)
	}
	heap.Init(&p.queue)
}

// maxBatchWindow bounds how early a probe may start; see batchWindow.
const maxBatchWindow = 50 * time.Millisecond

// batchWindow is how early a probe of the given interval may start: the dispatcher hands out
// the earliest target once it is due within its window, so when it wakes for a due target it
// also hands out those due shortly after. Probes then start in batches rather than one per
// wake-up, and waking up (the dispatcher, the workers, the runtime's threads) is most of what
// a prober spends on probes that are otherwise cheap. The next probe is scheduled from the due
// time (see requeue), so a target is probed as often.
func batchWindow(interval time.Duration) time.Duration {
	return min(maxBatchWindow, interval/20)
}

// dispatch hands due targets to the workers until ctx is done. A target is out of the queue
// from dispatch until its outcome is recorded, so it is never probed twice at once.
func (p *Prober) dispatch(ctx context.Context, work chan<- *target) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		p.mu.Lock()
		due, wait := p.nextDue(time.Now())
		p.mu.Unlock()

		if due != nil {
			select {
			case work <- due:
				continue
			case <-ctx.Done():
				return
			}
		}
		timer.Stop()
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// nextDue takes the earliest target out of the queue if it is due at now or within its batch
// window. Otherwise it returns how long until it is due, or -1 if the queue is empty. p.mu
// must be held.
func (p *Prober) nextDue(now time.Time) (*target, time.Duration) {
	if len(p.queue) == 0 {
		return nil, -1
	}
	head := p.queue[0]
	if d := head.next.Sub(now); d > batchWindow(head.Check.Interval) {
		return nil, d
	}
	return heap.Pop(&p.queue).(*target), 0
}

// queue is a min-heap of targets by next due time.
type queue []*target

var _ heap.Interface = (*queue)(nil)

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *queue) Push(x any) {
	t := x.(*target)
	t.index = len(*q)
	*q = append(*q, t)
}

func (q *queue) Pop() any {
	old := *q
	n := len(old) - 1
	t := old[n]
	old[n] = nil
	t.index = -1
	*q = old[:n]
	return t
}
