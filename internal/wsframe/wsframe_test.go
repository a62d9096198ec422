package wsframe

import (
	"bytes"
	"strings"
	"testing"
)

// The example handshake of RFC 6455 §1.3.
func TestAcceptRFCExample(t *testing.T) {
	if got := Accept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("Accept = %q", got)
	}
}

// Frames of every length encoding survive a write and a read, masked
// (client to server) and not (server to client).
func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 0xffff, 0x10000} {
		for _, mask := range []bool{false, true} {
			payload := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
			var b bytes.Buffer
			if err := Write(&b, OpBinary, true, payload, mask); err != nil {
				t.Fatal(err)
			}
			f, err := Read(&b, mask, 1<<20)
			if err != nil || f.Op != OpBinary || !f.Fin || !bytes.Equal(f.Payload, payload) {
				t.Fatalf("n=%d mask=%v: %v op=%d fin=%v len=%d", n, mask, err, f.Op, f.Fin, len(f.Payload))
			}
		}
	}
}

func TestReadRefusesWrongMaskingAndLargeFrames(t *testing.T) {
	var b bytes.Buffer
	Write(&b, OpText, true, []byte("hi"), false)
	if _, err := Read(&b, true, 1<<20); err == nil || !strings.Contains(err.Error(), "masked") {
		t.Fatalf("unmasked frame from a client: %v", err)
	}
	b.Reset()
	Write(&b, OpText, true, make([]byte, 200), true)
	if _, err := Read(&b, true, 100); err != ErrTooLarge {
		t.Fatalf("200-byte frame with limit 100: %v", err)
	}
}
