package health

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// h2Call is what a fake HTTP/2 server saw of a call.
type h2Call struct {
	headers []hpack.HeaderField
	body    []byte
}

func (c h2Call) header(name string) []string {
	var vs []string
	for _, f := range c.headers {
		if f.Name == name {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// h2Writer writes a fake server's answer on stream 1.
type h2Writer struct {
	fr    *http2.Framer
	block bytes.Buffer
	enc   *hpack.Encoder
}

// headers writes a HEADERS frame of name, value pairs.
func (w *h2Writer) headers(end bool, kv ...string) {
	w.block.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = w.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	_ = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: w.block.Bytes(), EndStream: end, EndHeaders: true})
}

// message writes a DATA frame holding one gRPC message with the given compressed flag.
func (w *h2Writer) message(compressed byte, msg []byte, end bool) {
	_ = w.fr.WriteData(1, end, append(binary.BigEndian.AppendUint32([]byte{compressed}, uint32(len(msg))), msg...))
}

// serving is an encoded HealthCheckResponse.
func serving(st healthpb.HealthCheckResponse_ServingStatus) []byte {
	b, _ := proto.Marshal(&healthpb.HealthCheckResponse{Status: st})
	return b
}

// h2Server serves HTTP/2 with prior knowledge on 127.0.0.1. On each connection it sends its
// SETTINGS, reads the client's preface and frames until stream 1 has ended and its SETTINGS
// are acknowledged (after which a probe sends nothing unasked), records the call and lets
// answer respond; the connection is closed when answer returns.
func h2Server(t *testing.T, answer func(w *h2Writer)) (addr string, calls <-chan h2Call) {
	ch := make(chan h2Call, 10)
	ln := listen(t)
	serve(t, ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		if fr.WriteSettings() != nil {
			return
		}
		var call h2Call
		for ended, acked := false, false; !ended || !acked; {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if f.IsAck() {
					acked = true
				} else {
					_ = fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				call.headers = append(call.headers, f.Fields...)
				ended = ended || f.StreamEnded()
			case *http2.DataFrame:
				call.body = append(call.body, f.Data()...)
				ended = ended || f.StreamEnded()
			}
		}
		ch <- call
		w := &h2Writer{fr: fr}
		w.enc = hpack.NewEncoder(&w.block)
		answer(w)
	})
	return ln.Addr().String(), ch
}

// okHeaders are the response headers of a gRPC answer.
var okHeaders = []string{":status", "200", "content-type", "application/grpc"}

func TestProbeGRPCWire(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  func(w *h2Writer)
		wantErr string
	}{
		{name: "SERVING", answer: func(w *h2Writer) {
			w.headers(false, okHeaders...)
			w.message(0, serving(healthpb.HealthCheckResponse_SERVING), false)
			w.headers(true, "grpc-status", "0")
		}},
		{name: "SERVICE_UNKNOWN", wantErr: `health service "" is SERVICE_UNKNOWN`, answer: func(w *h2Writer) {
			w.headers(false, okHeaders...)
			w.message(0, serving(healthpb.HealthCheckResponse_SERVICE_UNKNOWN), false)
			w.headers(true, "grpc-status", "0")
		}},
		{name: "trailers-only NotFound with a percent-encoded message", wantErr: `health service "" unknown to the server: rpc error: code = NotFound desc = no such service: 100%`,
			answer: func(w *h2Writer) {
				w.headers(true, append(okHeaders, "grpc-status", "5", "grpc-message", "no such service: 100%25")...)
			}},
		{name: "trailers-only OK without a message", wantErr: "code = Internal desc = no response message", answer: func(w *h2Writer) {
			w.headers(true, append(okHeaders, "grpc-status", "0")...)
		}},
		{name: "HTTP 404", wantErr: "server does not implement grpc.health.v1.Health", answer: func(w *h2Writer) {
			w.headers(true, ":status", "404", "content-type", "text/plain")
		}},
		{name: "not gRPC", wantErr: "content-type is not application/grpc", answer: func(w *h2Writer) {
			w.headers(true, ":status", "200", "content-type", "text/html")
		}},
		{name: "closed without answering", wantErr: "server closed the connection before the call ended", answer: func(*h2Writer) {}},
		{name: "closed after the message", wantErr: "server closed the connection before the call ended", answer: func(w *h2Writer) {
			w.headers(false, okHeaders...)
			w.message(0, serving(healthpb.HealthCheckResponse_SERVING), false)
		}},
		{name: "stream reset", wantErr: "server reset the call (REFUSED_STREAM)", answer: func(w *h2Writer) {
			_ = w.fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		}},
		{name: "GOAWAY before the call", wantErr: "server refused the call (GOAWAY ENHANCE_YOUR_CALM)", answer: func(w *h2Writer) {
			_ = w.fr.WriteGoAway(0, http2.ErrCodeEnhanceYourCalm, nil)
		}},
		{name: "GOAWAY after the call", answer: func(w *h2Writer) {
			_ = w.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
			w.headers(false, okHeaders...)
			w.message(0, serving(healthpb.HealthCheckResponse_SERVING), false)
			w.headers(true, "grpc-status", "0")
		}},
		{name: "no trailers", wantErr: "ended without a grpc-status", answer: func(w *h2Writer) {
			w.headers(false, okHeaders...)
			w.message(0, serving(healthpb.HealthCheckResponse_SERVING), true)
		}},
		{name: "compressed message", wantErr: "compressed response message", answer: func(w *h2Writer) {
			w.headers(false, okHeaders...)
			w.message(1, serving(healthpb.HealthCheckResponse_SERVING), false)
			w.headers(true, "grpc-status", "0")
		}},
		{name: "truncated message", wantErr: "response message of 7 bytes announced, 2 received", answer: func(w *h2Writer) {
			w.headers(false, okHeaders...)
			_ = w.fr.WriteData(1, false, []byte{0, 0, 0, 0, 7, 8, 1})
			w.headers(true, "grpc-status", "0")
		}},
		{name: "PING answered before the response", answer: func(w *h2Writer) {
			data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
			_ = w.fr.WritePing(false, data)
			for {
				f, err := w.fr.ReadFrame()
				if err != nil {
					return // the probe fails: it never acknowledged the PING
				}
				if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == data {
					break
				}
			}
			w.headers(false, okHeaders...)
			w.message(0, serving(healthpb.HealthCheckResponse_SERVING), false)
			w.headers(true, "grpc-status", "0")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := h2Server(t, tc.answer)
			wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC}), tc.wantErr)
		})
	}
	t.Run("HTTP/1 server", func(t *testing.T) {
		srv := httptest.NewServer(nil)
		defer srv.Close()
		wantProbe(t, probeOnce(t, srv.Listener.Addr().String(), Check{Type: ProtocolGRPC}), "server answered in HTTP/1, not HTTP/2")
	})
}

// TestProbeGRPCRequest checks the request a gRPC probe sends.
func TestProbeGRPCRequest(t *testing.T) {
	addr, calls := h2Server(t, func(w *h2Writer) {
		w.headers(false, okHeaders...)
		w.message(0, serving(healthpb.HealthCheckResponse_SERVING), false)
		w.headers(true, "grpc-status", "0")
	})
	next := func() h2Call {
		select {
		case c := <-calls:
			return c
		case <-time.After(waitTimeout):
			t.Fatal("server saw no call")
			return h2Call{}
		}
	}

	wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC, Path: "/svc.Up", Timeout: 3 * time.Second}), "")
	call := next()
	for name, want := range map[string]string{
		":method": "POST", ":scheme": "http", ":path": "/grpc.health.v1.Health/Check", ":authority": addr,
		"content-type": "application/grpc", "te": "trailers", "user-agent": userAgent,
	} {
		if got := call.header(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s %q, want [%s]", name, got, want)
		}
	}
	if got := call.header("grpc-timeout"); len(got) != 1 || !strings.HasSuffix(got[0], "m") {
		t.Errorf("grpc-timeout %q, want milliseconds", got)
	} else if ms, err := strconv.Atoi(strings.TrimSuffix(got[0], "m")); err != nil || ms < 1 || ms > 3000 {
		t.Errorf("grpc-timeout %q, want at most the 3s timeout", got)
	}
	var req healthpb.HealthCheckRequest
	if len(call.body) < 5 || int(binary.BigEndian.Uint32(call.body[1:5])) != len(call.body)-5 ||
		proto.Unmarshal(call.body[5:], &req) != nil || req.GetService() != "svc.Up" {
		t.Errorf("request message % x, want HealthCheckRequest{Service: svc.Up}", call.body)
	}

	// Headers become metadata: lower-case, -bin values in base64, reserved names dropped.
	headers := map[string]string{
		"Host": "vhost.internal", "User-Agent": "custom", "X-Trace-Bin": "\x00\x01", "Authorization": "Bearer t0k",
		"Grpc-Timeout": "1S", "Content-Type": "text/plain", "Connection": "keep-alive",
	}
	wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC, ServerName: "grpc.example.ts.net", Headers: headers}), "")
	call = next()
	for name, want := range map[string]string{
		":authority": "vhost.internal", "user-agent": "custom", "x-trace-bin": base64.RawStdEncoding.EncodeToString([]byte("\x00\x01")),
		"authorization": "Bearer t0k", "content-type": "application/grpc",
	} {
		if got := call.header(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s %q, want [%s]", name, got, want)
		}
	}
	for _, name := range []string{"host", "connection"} {
		if got := call.header(name); got != nil {
			t.Errorf("%s %q sent, want none", name, got)
		}
	}
	if got := call.header("grpc-timeout"); len(got) != 1 || got[0] == "1S" {
		t.Errorf("grpc-timeout %q, want the probe's own", got)
	}

	wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC, Headers: map[string]string{"bad name": "v"}}), `invalid gRPC metadata name "bad name"`)
	wantProbe(t, probeOnce(t, addr, Check{Type: ProtocolGRPC, Headers: map[string]string{"x-bad": "a\nb"}}), `invalid value of gRPC metadata "x-bad"`)
}

func TestGRPCTimeout(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:            "1m",
		150 * time.Millisecond:  "150m",
		1500 * time.Microsecond: "2m",
		time.Hour:               "3600000m",
		48 * time.Hour:          "172800S",
		100000 * time.Hour:      "99999999S",
	} {
		if got := grpcTimeout(d); got != want {
			t.Errorf("grpcTimeout(%s) = %q, want %q", d, got, want)
		}
	}
}
