package main

// WebSocket frames for the echo conversations come from internal/wsframe;
// these wrappers fix what the soak needs: single-frame messages up to
// wsMaxPayload bytes.

import (
	"bufio"
	"errors"
	"io"

	"github.com/sluiceproxy/sluice/internal/wsframe"
)

const (
	wsMaxPayload = 1 << 20

	wsOpText  = wsframe.OpText
	wsOpClose = wsframe.OpClose
	wsOpPing  = wsframe.OpPing
	wsOpPong  = wsframe.OpPong
)

func wsAccept(key string) string { return wsframe.Accept(key) }

// wsReadFrame reads one single-frame message. fromClient says whether the
// frame must be masked (client to server) or must not be.
func wsReadFrame(r *bufio.Reader, fromClient bool) (op byte, payload []byte, err error) {
	f, err := wsframe.Read(r, fromClient, wsMaxPayload)
	if err == nil && !f.Fin {
		err = errors.New("websocket: fragmented message (not used by the soak)")
	}
	return f.Op, f.Payload, err
}

// wsWriteFrame writes one single-frame message; clients mask.
func wsWriteFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	return wsframe.Write(w, op, true, payload, mask)
}
