package health

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// grpcHealthCheckMethod is the full method name of the standard health check; as a Path it
// names no service.
const grpcHealthCheckMethod = "/grpc.health.v1.Health/Check"

// Bounds on what a gRPC probe reads: a health answer is a few bytes.
const (
	grpcMaxHeaderList = 16 << 10
	grpcMaxResponse   = 16 << 10
	// h2MinMaxFrameSize is the largest frame every HTTP/2 peer accepts.
	h2MinMaxFrameSize = 16 << 10
)

// grpcService is the health service name a Path asks for.
func grpcService(path string) string {
	if path == grpcHealthCheckMethod {
		return ""
	}
	return strings.TrimPrefix(path, "/")
}

// probeGRPC calls grpc.health.v1.Health/Check in plaintext (HTTP/2 with prior knowledge) on a
// connection of its own and is healthy iff the answer is SERVING. One call needs none of a
// gRPC client's machinery (resolver, balancer, transport goroutines, flow control), so the
// probe speaks the wire protocol itself: it writes the connection preface, its SETTINGS and
// the request in one go, then reads frames until the call ends.
func probeGRPC(ctx context.Context, e env, t Target) error {
	service := grpcService(t.Check.Path)
	req, err := grpcRequest(ctx, t, service)
	if err != nil {
		return err
	}
	conn, err := dial(ctx, e, "tcp", t.Address)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()

	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	var resp grpcResponse
	if err := resp.read(conn); err != nil {
		return err
	}
	st, err := resp.servingStatus()
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented:
		return fmt.Errorf("server does not implement grpc.health.v1.Health: %w", err)
	case codes.NotFound:
		return fmt.Errorf("health service %q unknown to the server: %w", service, err)
	default:
		return fmt.Errorf("grpc health check: %w", err)
	}
	if st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health service %q is %s", service, st)
	}
	return nil
}

// grpcRequest encodes everything the client sends: the HTTP/2 connection preface, an empty
// SETTINGS frame and the Check call on stream 1.
func grpcRequest(ctx context.Context, t Target, service string) ([]byte, error) {
	authority := grpcAuthority(t.Check)
	if authority == "" {
		authority = t.Address
	}
	fields := []hpack.HeaderField{
		{Name: ":method", Value: http.MethodPost},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: grpcHealthCheckMethod},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}
	if d, ok := ctx.Deadline(); ok {
		fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: grpcTimeout(time.Until(d))})
	}
	md, err := grpcMetadata(t.Check.Headers)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(md, func(f hpack.HeaderField) bool { return f.Name == "user-agent" }) {
		fields = append(fields, hpack.HeaderField{Name: "user-agent", Value: userAgent})
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range append(fields, md...) {
		if err := enc.WriteField(f); err != nil {
			return nil, fmt.Errorf("encode request headers: %w", err)
		}
	}
	if block.Len() > h2MinMaxFrameSize {
		return nil, errors.New("gRPC request headers too large")
	}

	msg, err := proto.Marshal(&healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	// A gRPC message: uncompressed flag, big-endian length, protobuf.
	data := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	data = append(data, msg...)

	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	err = errors.Join(
		fr.WriteSettings(),
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}),
		fr.WriteData(1, true, data),
	)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return out.Bytes(), nil
}

// grpcTimeout formats d as a grpc-timeout header value (at most 8 digits and a unit),
// rounding up.
func grpcTimeout(d time.Duration) string {
	const maxValue = 1e8 - 1
	d = max(d, time.Millisecond)
	if ms := (d + time.Millisecond - 1) / time.Millisecond; ms <= maxValue {
		return strconv.FormatInt(int64(ms), 10) + "m"
	}
	return strconv.FormatInt(min(int64((d+time.Second-1)/time.Second), maxValue), 10) + "S"
}

// grpcAuthority is a "Host" entry of Headers, else ServerName, else empty (the address).
func grpcAuthority(c Check) string {
	for k, v := range c.Headers {
		if strings.EqualFold(k, "Host") {
			return v
		}
	}
	return c.ServerName
}

// grpcMetadata turns probe headers into request metadata, with lower-case names and "-bin"
// values base64-encoded. Host is carried by the authority. Names that HTTP/2 or gRPC reserve
// (content-type, te, grpc-*, connection-specific ones) are dropped, as gRPC clients do; a
// "User-Agent" entry replaces the probe's own.
func grpcMetadata(headers map[string]string) ([]hpack.HeaderField, error) {
	var md []hpack.HeaderField
	for k, v := range headers {
		k = strings.ToLower(k)
		switch {
		case k == "host" || k == "content-type" || k == "te" || strings.HasPrefix(k, "grpc-"):
			continue
		case k == "connection" || k == "keep-alive" || k == "proxy-connection" || k == "transfer-encoding" || k == "upgrade":
			continue
		case !httpguts.ValidHeaderFieldName(k):
			return nil, fmt.Errorf("invalid gRPC metadata name %q", k)
		case strings.HasSuffix(k, "-bin"):
			v = base64.RawStdEncoding.EncodeToString([]byte(v))
		case !httpguts.ValidHeaderFieldValue(v):
			return nil, fmt.Errorf("invalid value of gRPC metadata %q", k)
		}
		md = append(md, hpack.HeaderField{Name: k, Value: v, Sensitive: true})
	}
	return md, nil
}

// grpcResponse is what came back on stream 1.
type grpcResponse struct {
	headers bool   // the response headers arrived
	http    string // their :status
	grpc    bool   // their content-type is gRPC's
	status  string // grpc-status, from the trailers or a trailers-only response
	message string // grpc-message, decoded
	body    []byte // the DATA frames' payloads
}

// read reads frames from conn until stream 1 ends. It acknowledges the server's SETTINGS and
// PINGs before it waits for more input, and ignores frames a single short call can do
// without (WINDOW_UPDATE, PRIORITY, other streams).
func (r *grpcResponse) read(conn io.ReadWriter) error {
	br := newReader(conn)
	defer freeReader(br)
	bw := bufio.NewWriterSize(conn, 64)
	fr := http2.NewFramer(bw, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = grpcMaxHeaderList
	if b, err := br.Peek(len("HTTP/1.")); err == nil && string(b) == "HTTP/1." {
		return errors.New("server answered in HTTP/1, not HTTP/2")
	}
	for {
		if br.Buffered() == 0 && bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("server closed the connection before the call ended: %w", err)
		}
		if err != nil {
			return fmt.Errorf("read response: %w", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			if f.LastStreamID < 1 {
				return fmt.Errorf("server refused the call (GOAWAY %v)", f.ErrCode)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return fmt.Errorf("server reset the call (%v)", f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				r.addHeaders(f)
				if f.StreamEnded() {
					return nil
				}
			}
		case *http2.DataFrame:
			if f.StreamID == 1 {
				if len(r.body)+len(f.Data()) > grpcMaxResponse {
					return errors.New("gRPC response too large")
				}
				r.body = append(r.body, f.Data()...)
				if f.StreamEnded() {
					return nil
				}
			}
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
}

// addHeaders records the response headers or, after them, the trailers.
func (r *grpcResponse) addHeaders(f *http2.MetaHeadersFrame) {
	if !r.headers {
		r.headers = true
		r.http = f.PseudoValue("status")
		for _, h := range f.RegularFields() {
			if h.Name == "content-type" {
				r.grpc = h.Value == "application/grpc" || strings.HasPrefix(h.Value, "application/grpc+") ||
					strings.HasPrefix(h.Value, "application/grpc;")
			}
		}
	}
	for _, h := range f.RegularFields() {
		switch h.Name {
		case "grpc-status":
			r.status = h.Value
		case "grpc-message":
			r.message = h.Value
			if m, err := url.PathUnescape(h.Value); err == nil {
				r.message = m
			}
		}
	}
}

// servingStatus is the answer of a complete response, or the call's status error (an error of
// the status package) when it did not succeed.
func (r *grpcResponse) servingStatus() (healthpb.HealthCheckResponse_ServingStatus, error) {
	if r.http != "200" {
		code, _ := strconv.Atoi(r.http)
		c, ok := httpStatusCodes[code]
		if !ok {
			c = codes.Unknown
		}
		return 0, status.Errorf(c, "unexpected HTTP status %q", r.http)
	}
	if !r.grpc {
		return 0, status.Error(codes.Internal, "response content-type is not application/grpc")
	}
	if r.status == "" {
		return 0, status.Error(codes.Internal, "the call ended without a grpc-status")
	}
	code, err := strconv.ParseUint(r.status, 10, 32)
	if err != nil {
		return 0, status.Errorf(codes.Internal, "malformed grpc-status %q", r.status)
	}
	if codes.Code(code) != codes.OK {
		return 0, status.Error(codes.Code(code), r.message)
	}
	if len(r.body) < 5 {
		return 0, status.Error(codes.Internal, "no response message")
	}
	if r.body[0] != 0 {
		return 0, status.Error(codes.Internal, "compressed response message")
	}
	n := binary.BigEndian.Uint32(r.body[1:5])
	if uint64(n) != uint64(len(r.body)-5) {
		return 0, status.Errorf(codes.Internal, "response message of %d bytes announced, %d received", n, len(r.body)-5)
	}
	var resp healthpb.HealthCheckResponse
	if err := proto.Unmarshal(r.body[5:], &resp); err != nil {
		return 0, status.Errorf(codes.Internal, "decode response: %v", err)
	}
	return resp.GetStatus(), nil
}

// httpStatusCodes maps HTTP statuses of non-gRPC answers to gRPC codes, as gRPC clients do.
var httpStatusCodes = map[int]codes.Code{
	http.StatusBadRequest:         codes.Internal,
	http.StatusUnauthorized:       codes.Unauthenticated,
	http.StatusForbidden:          codes.PermissionDenied,
	http.StatusNotFound:           codes.Unimplemented,
	http.StatusTooManyRequests:    codes.Unavailable,
	http.StatusBadGateway:         codes.Unavailable,
	http.StatusServiceUnavailable: codes.Unavailable,
	http.StatusGatewayTimeout:     codes.Unavailable,
}
