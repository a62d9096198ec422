package main

// A minimal RFC 6455 WebSocket: the server handshake and a frame echo for
// the demo backends, and a client for the self-test. No extensions, no
// subprotocols; frames up to wsMaxPayload bytes.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const (
	wsGUID       = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	wsMaxPayload = 64 << 10
	wsMaxFrames  = 10000           // per connection
	wsIdle       = 2 * time.Minute // per frame
)

// WebSocket opcodes.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xA
)

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

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
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(key))
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
		case wsText, wsBinary, wsContinuation:
			err = wsWrite(conn, op, fin, payload, false)
		case wsPing:
			err = wsWrite(conn, wsPong, true, payload, false)
		case wsClose:
			wsWrite(conn, wsClose, true, payload, false)
			return
		}
		if err != nil {
			return
		}
	}
}

// wsRead reads one frame. Client frames must be masked, server frames not.
func wsRead(r *bufio.Reader, fromClient bool) (op byte, fin bool, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0f
	masked, n := h[1]&0x80 != 0, uint64(h[1]&0x7f)
	if h[0]&0x70 != 0 || masked != fromClient {
		return 0, false, nil, errors.New("websocket: bad frame header")
	}
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(r, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(r, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil {
		return
	}
	if n > wsMaxPayload {
		return 0, false, nil, errors.New("websocket: frame too large")
	}
	var mask [4]byte
	if masked {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return op, fin, payload, nil
}

// wsWrite writes one frame; clients mask, servers do not.
func wsWrite(w io.Writer, op byte, fin bool, payload []byte, mask bool) error {
	buf := make([]byte, 0, 14+len(payload))
	b0 := op
	if fin {
		b0 |= 0x80
	}
	buf = append(buf, b0)
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		buf = append(buf, m|byte(n))
	case n <= 0xffff:
		buf = append(buf, m|126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	default:
		buf = append(buf, m|127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	if !mask {
		_, err := w.Write(append(buf, payload...))
		return err
	}
	var key [4]byte
	rand.Read(key[:])
	buf = append(buf, key[:]...)
	for i, c := range payload {
		buf = append(buf, c^key[i%4])
	}
	_, err := w.Write(buf)
	return err
}

// wsDial opens a WebSocket to ws://addr/path and checks the handshake.
func wsDial(addr, path string, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", path, addr, key)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err == nil && res.StatusCode != http.StatusSwitchingProtocols {
		err = fmt.Errorf("handshake answered %s, want 101", res.Status)
	}
	if err == nil && res.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
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
