package tailnet

import "sync"

// subscriber delivers changes to one callback, in order, on its own goroutine, so that a slow
// subscriber never delays a poll or another subscriber.
type subscriber struct {
	fn    func(Change)
	mu    sync.Mutex
	queue []Change
	wake  chan struct{}
	stop  chan struct{}
	once  sync.Once
}

func newSubscriber(fn func(Change)) *subscriber {
	s := &subscriber{fn: fn, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go s.run()
	return s
}

func (s *subscriber) push(c Change) {
	s.mu.Lock()
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) close() { s.once.Do(func() { close(s.stop) }) }

func (s *subscriber) run() {
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			if len(s.queue) == 0 {
				s.mu.Unlock()
				break
			}
			c := s.queue[0]
			s.queue[0] = Change{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			default:
			}
			s.fn(c)
		}
	}
}
