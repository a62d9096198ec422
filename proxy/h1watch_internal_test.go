package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testkit"
)

// deadlineCounter counts the read deadlines set on a real connection.
type deadlineCounter struct {
	net.Conn
	reads int
}

func (d *deadlineCounter) SetReadDeadline(t time.Time) error {
	d.reads++
	return d.Conn.SetReadDeadline(t)
}

// Back-to-back exchanges share one window deadline instead of setting and
// clearing their own; a deadline less than half a window away is renewed,
// and an exchange that watches at once (eager) clears it.
func TestWindowDeadlineCarriesOverExchanges(t *testing.T) {
	a, _ := testkit.TCPPair(t)
	dc := &deadlineCounter{Conn: a}
	c := &h1conn{nc: dc, headerLimit: -1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for i := range 10 {
		c.beginExchange(ctx, false)
		if !c.endExchange() {
			t.Fatalf("exchange %d: watch fired", i)
		}
	}
	if dc.reads != 1 {
		t.Fatalf("10 exchanges set the read deadline %d times, want 1", dc.reads)
	}
	if left := time.Until(c.readDL); left <= fastWindow/2 || left > fastWindow {
		t.Fatalf("deadline %v ahead, want within (%v, %v]", left, fastWindow/2, fastWindow)
	}

	c.setReadDeadline(time.Now().Add(fastWindow/2 - time.Millisecond))
	dc.reads = 0
	c.beginExchange(ctx, false)
	c.endExchange()
	if dc.reads != 1 || time.Until(c.windowEnd) <= fastWindow/2 {
		t.Fatalf("a deadline under half a window away: %d sets, window ends in %v", dc.reads, time.Until(c.windowEnd))
	}

	dc.reads = 0
	c.beginExchange(ctx, true)
	c.endExchange()
	if dc.reads != 1 || !c.readDL.IsZero() {
		t.Fatalf("eager exchange: %d sets, deadline %v; want the window's cleared", dc.reads, c.readDL)
	}
}
