package forward

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// bufSize is the copy buffer: large enough that one read drains what netstack has queued.
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Pipe copies bytes between client and target in both directions until both directions have
// ended, then closes both. The end of one direction is passed on as a half-close (CloseWrite)
// when the other side supports it, so request/response protocols that close their sending side
// keep working. Bytes are counted as they flow. It is used for tailnet connections, which do
// not splice, so nothing is lost by not using io.Copy's ReaderFrom paths. It returns the bytes
// carried each way.
func Pipe(client, target net.Conn, c *Counters) (toTarget, fromTarget int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		toTarget = copyHalf(target, client, c.ToTarget)
	}()
	go func() {
		defer wg.Done()
		fromTarget = copyHalf(client, target, c.FromTarget)
	}()
	wg.Wait()
	client.Close()
	target.Close()
	return toTarget, fromTarget
}

type closeWriter interface{ CloseWrite() error }

// copyHalf copies src to dst and returns the bytes written. On EOF it half-closes dst; on an
// error it closes both, which ends the other direction too.
func copyHalf(dst, src net.Conn, bytes prometheus.Counter) (written int64) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				dst.Close()
				return written
			}
			written += int64(n)
			bytes.Add(float64(n))
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
					return written
				}
			}
			src.Close()
			dst.Close()
			return written
		}
	}
}
