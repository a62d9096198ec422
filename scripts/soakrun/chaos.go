package main

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// chaos disrupts one upstream at a time, every min..max at random:
//
//	kill     close the listener and reset every connection (stays down
//	         until chaos restarts it)
//	restart  listen again on the same port (chosen when the target is down)
//	slow     100-500 ms before each response, for 1-4 s
//	reset    read each request, then reset the connection, for 1-4 s
//	midbody  cut one response in three after part of its body, for 1-4 s
//
// Before disrupting an upstream it heals others (restart, clear modes) so
// that no more than maxDisrupted are disrupted at any moment: never all.
type chaos struct {
	backends     []*backend
	rng          *rand.Rand // used by the chaos goroutine only
	maxDisrupted int
	midbody      bool
	min, max     time.Duration
	logf         func(format string, args ...any) // verbose log; may be nil
	only         []string                         // if set, the actions to choose from

	kills, restarts, slows, resets, midbodies atomic.Int64
	restartFailures                           atomic.Int64
	lastErr                                   atomic.Value // error
}

func (c *chaos) run(ctx context.Context) {
	for {
		d := c.min + time.Duration(c.rng.Int64N(int64(c.max-c.min)+1))
		if !sleepCtx(d, ctx, ctx) {
			return
		}
		c.step(time.Now())
	}
}

func (c *chaos) step(now time.Time) {
	t := c.backends[c.rng.IntN(len(c.backends))]
	if !t.isUp() {
		c.restart(t)
		return
	}
	// t is about to be disrupted: leave room for it.
	disrupted := 0
	for _, o := range c.backends {
		if o != t && o.disrupted(now) {
			if disrupted >= c.maxDisrupted-1 {
				c.heal(o)
				continue
			}
			disrupted++
		}
	}
	type action struct {
		name   string
		weight int
	}
	actions := []action{{"kill", 3}, {"slow", 2}, {"reset", 2}}
	if c.midbody {
		actions = append(actions, action{"midbody", 2})
	}
	if c.only != nil {
		actions = actions[:0:0]
		for _, a := range c.only {
			actions = append(actions, action{a, 1})
		}
	}
	total := 0
	for _, a := range actions {
		total += a.weight
	}
	r := c.rng.IntN(total)
	var pick string
	for _, a := range actions {
		if r < a.weight {
			pick = a.name
			break
		}
		r -= a.weight
	}
	dur := time.Second + time.Duration(c.rng.Int64N(int64(3*time.Second)))
	until := now.Add(dur).UnixNano()
	switch pick {
	case "kill":
		if t.kill() {
			c.kills.Add(1)
		}
	case "slow":
		t.slowUntil.Store(until)
		c.slows.Add(1)
	case "reset":
		t.resetUntil.Store(until)
		c.resets.Add(1)
	case "midbody":
		t.midUntil.Store(until)
		c.midbodies.Add(1)
	}
	if c.logf != nil {
		if pick == "kill" {
			c.logf("chaos: kill %s", t.name)
		} else {
			c.logf("chaos: %s %s for %v", pick, t.name, dur.Round(time.Millisecond))
		}
	}
}

func (c *chaos) restart(b *backend) {
	if err := b.start(); err != nil {
		c.restartFailures.Add(1)
		c.lastErr.Store(err)
		if c.logf != nil {
			c.logf("chaos: restart %s failed: %v", b.name, err)
		}
		return
	}
	c.restarts.Add(1)
	if c.logf != nil {
		c.logf("chaos: restart %s on %s", b.name, b.Addr())
	}
}

// heal ends every disruption of b.
func (c *chaos) heal(b *backend) {
	b.clearModes()
	if !b.isUp() {
		c.restart(b)
	} else if c.logf != nil {
		c.logf("chaos: heal %s", b.name)
	}
}

// healAll ends every disruption, for the end of the run.
func (c *chaos) healAll() {
	for _, b := range c.backends {
		c.heal(b)
	}
}
