package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/sluiceproxy/sluice/upstream"
)

// DialError means no connection to the upstream could be made, so no byte of
// the request reached it: such a failure is always safe to retry.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return "dial " + e.Addr + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// StatusClientClosedRequest is logged (never sent) when the client went away
// before the response was complete, as nginx does.
const StatusClientClosedRequest = 499

// errUpstreamUpgrade is returned when the upstream switched to a protocol
// other than the one the client asked for.
var errBadTarget = errors.New("request-target is not origin-form, asterisk-form or http(s) absolute-form")

var errPanic = errors.New("panic while serving the request")

var errBadStatus = errors.New("upstream sent a status outside 100-599")

var errUpstreamUpgrade = errors.New("upstream switched to a protocol the client did not request")

// failure classifies one failed attempt.
type failure uint8

const (
	failDial        failure = iota + 1 // nothing was sent
	failDialTimeout                    // nothing was sent: connecting timed out
	failTimeout                        // upstream too slow
	failOther                          // reset, EOF, protocol error after sending
	failClient                         // the client went away
	failClientBody                     // reading the client's body failed (stalled or broken)
	failNoUpstream
)

func classify(err error, clientCtx context.Context) failure {
	var de *DialError
	switch {
	case errors.Is(err, upstream.ErrNoUpstream):
		return failNoUpstream
	case clientCtx.Err() != nil:
		return failClient
	case errors.As(err, &de):
		if isTimeout(de.Err) {
			return failDialTimeout
		}
		return failDial
	case isTimeout(err):
		return failTimeout
	}
	return failOther
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// statusFor maps the last failure to the status the client gets.
func statusFor(f failure) int {
	switch f {
	case failNoUpstream:
		return http.StatusServiceUnavailable
	case failTimeout, failDialTimeout:
		return http.StatusGatewayTimeout
	case failClient:
		return StatusClientClosedRequest
	case failClientBody:
		return http.StatusBadRequest
	}
	return http.StatusBadGateway
}
