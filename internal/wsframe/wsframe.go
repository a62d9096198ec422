// Package wsframe reads and writes RFC 6455 WebSocket frames and computes
// the handshake's accept key: enough WebSocket for sluice's demo backends,
// its soak harness and its tests, which exercise the proxy's tunnels. It is
// not a WebSocket library: no extensions, no fragmentation reassembly, no
// UTF-8 checks.
package wsframe

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Opcodes (RFC 6455 §5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

const guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Accept returns the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
func Accept(key string) string {
	h := sha1.Sum([]byte(key + guid))
	return base64.StdEncoding.EncodeToString(h[:])
}

// NewKey returns a random Sec-WebSocket-Key.
func NewKey() string {
	var k [16]byte
	rand.Read(k[:])
	return base64.StdEncoding.EncodeToString(k[:])
}

// Frame is one frame as read.
type Frame struct {
	Op      byte
	Fin     bool
	Payload []byte
}

// ErrTooLarge is returned for a frame longer than the reader's limit.
var ErrTooLarge = errors.New("websocket: frame too large")

// Read reads one frame of at most max payload bytes. Frames a client sends
// must be masked and frames a server sends must not (RFC 6455 §5.1);
// fromClient says which side r reads.
func Read(r io.Reader, fromClient bool, max int) (Frame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Fin: h[0]&0x80 != 0, Op: h[0] & 0x0f}
	masked, n := h[1]&0x80 != 0, uint64(h[1]&0x7f)
	if h[0]&0x70 != 0 {
		return Frame{}, errors.New("websocket: reserved bits set")
	}
	if masked != fromClient {
		return Frame{}, fmt.Errorf("websocket: frame masked=%v, want %v", masked, fromClient)
	}
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Frame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > uint64(max) {
		return Frame{}, ErrTooLarge
	}
	var key [4]byte
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return Frame{}, err
		}
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, err
	}
	if masked {
		for i := range f.Payload {
			f.Payload[i] ^= key[i%4]
		}
	}
	return f, nil
}

// Write writes one frame in a single Write call; a client masks (mask true)
// with a random key, a server does not.
func Write(w io.Writer, op byte, fin bool, payload []byte, mask bool) error {
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
