package proxy

import "time"

// Summary describes one finished request, for metrics. It is passed by
// value, so an observer may keep it.
type Summary struct {
	Method string
	// URI is the request-target as the client sent it.
	URI    string
	Proto  string
	Remote string // the client's address (RemoteAddr)
	Host   string
	// Status is the status sent to the client; 499 when the client left
	// before the response was complete.
	Status int
	// Upstream is the address of the upstream that gave the final answer
	// (or the last one tried), "" when none was selected.
	Upstream string
	// Attempts counts the tries, retries included; 0 when the request was
	// refused before any try (a bad request-target).
	Attempts int
	// Duration is from the start of ServeHTTP to the end of the response.
	Duration time.Duration
	// UpstreamLatency is the time to the final response's headers.
	UpstreamLatency time.Duration
	// BytesIn counts request body bytes read; BytesOut response body
	// bytes written (both directions of a tunnel for an upgrade).
	BytesIn, BytesOut int64
	// Aborted is true when the client's stream was aborted rather than
	// ended: a truncated body, a reset stream, or a client that left
	// (Status 499, whether or not anything had been sent).
	Aborted bool
	// Err is what went wrong, nil on a clean response.
	Err error
}

// observe hands the request's summary to Config.Observe.
func (rt *roundTrip) observe() {
	fn := rt.h.observer
	if fn == nil {
		return
	}
	fn(Summary{
		Method:          rt.in.Method,
		URI:             rt.in.RequestURI,
		Proto:           rt.in.Proto,
		Remote:          rt.in.RemoteAddr,
		Host:            rt.in.Host,
		Status:          rt.status,
		Upstream:        upstreamAddr(rt.up),
		Attempts:        rt.attempts,
		Duration:        time.Since(rt.start),
		UpstreamLatency: rt.ttfb,
		BytesIn:         rt.body.bytesRead() + rt.upBytes,
		BytesOut:        rt.written,
		Aborted:         rt.abort,
		Err:             rt.err,
	})
}
