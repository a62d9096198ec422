package main

// A minimal RFC 6455 WebSocket: the server handshake and a frame echo for
// the demo backends, and a client for the self-test. No extensions, no
// subprotocols; frames up to wsMaxPayload bytes.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/internal/wsframe"
)

const (
	wsMaxPayload = 64 << 10
	wsMaxFrames  = 10000           // per connection
	wsIdle       = 2 * time.Minute // per frame
)

// serveWS completes the handshake and echoes every data frame back until
// the client closes, the idle limit passes, or track's connection is closed
// when the backend stops.
func serveWS(w http.ResponseWriter, r *http.Request, track func(net.Conn) (untrack func())) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !headerHasToken(r.Header, "Connection", "upgrade") ||
		!strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "this endpoint speaks WebSocket (RFC 6455) only", http.StatusBadRequest)
		return
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "want Sec-WebSocket-Version: 13", http.StatusUpgradeRequired)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	defer track(conn)()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsframe.Accept(key))
	if brw.Flush() != nil {
		return
	}
	for range wsMaxFrames {
		conn.SetReadDeadline(time.Now().Add(wsIdle))
		op, fin, payload, err := wsRead(brw.Reader, true)
		if err != nil {
			return
		}
		switch op {
		case wsframe.OpText, wsframe.OpBinary, wsframe.OpContinuation:
			err = wsframe.Write(conn, op, fin, payload, false)
		case wsframe.OpPing:
			err = wsframe.Write(conn, wsframe.OpPong, true, payload, false)
		case wsframe.OpClose:
			wsframe.Write(conn, wsframe.OpClose, true, payload, false)
			return
		}
		if err != nil {
			return
		}
	}
}

// wsRead reads one frame of at most wsMaxPayload bytes.
func wsRead(r *bufio.Reader, fromClient bool) (op byte, fin bool, payload []byte, err error) {
	f, err := wsframe.Read(r, fromClient, wsMaxPayload)
	return f.Op, f.Fin, f.Payload, err
}

// wsDial opens a WebSocket to ws://addr/path and checks the handshake.
func wsDial(addr, path string, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	key := wsframe.NewKey()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", path, addr, key)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err == nil && res.StatusCode != http.StatusSwitchingProtocols {
		err = fmt.Errorf("handshake answered %s, want 101", res.Status)
	}
	if err == nil && res.Header.Get("Sec-WebSocket-Accept") != wsframe.Accept(key) {
		err = errors.New("handshake: wrong Sec-WebSocket-Accept")
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, br, nil
}

// headerHasToken reports whether a comma-separated header lists tok.
func headerHasToken(h http.Header, key, tok string) bool {
	for _, line := range h[key] {
		for t := range strings.SplitSeq(line, ",") {
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}
