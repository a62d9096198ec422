package main

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// registry is what the three upstreams know together: which upload ids
// reached any of them (and how often), and which requests chaos cut after
// the upstream had already sent response headers. Memory is bounded by the
// number of uploads and of cuts, not by the number of requests.
type registry struct {
	mu    sync.Mutex
	posts map[uint64]postRec
	cut   map[uint64]cutMark // request id -> which backend cut it, and how

	hashMismatch atomic.Int64 // uploads whose body did not match its hash
}

// postRec is kept small: a 30-minute soak records tens of thousands.
type postRec struct {
	count    uint8   // times the upload reached an upstream (saturates)
	verified uint8   // times its full body arrived with the right hash
	where    [4]int8 // backend index of the first arrivals, -1 if none
}

func newRegistry() *registry {
	return &registry{posts: make(map[uint64]postRec), cut: make(map[uint64]cutMark)}
}

// recordPost notes that upload id reached backend idx (before its body is
// read: reaching an upstream at all is what must not happen twice).
func (g *registry) recordPost(id uint64, idx int) {
	g.mu.Lock()
	p, ok := g.posts[id]
	if !ok {
		p.where = [4]int8{-1, -1, -1, -1}
	}
	if int(p.count) < len(p.where) {
		p.where[p.count] = int8(idx)
	}
	if p.count < 255 {
		p.count++
	}
	g.posts[id] = p
	g.mu.Unlock()
}

func (g *registry) postVerified(id uint64) {
	g.mu.Lock()
	if p, ok := g.posts[id]; ok && p.verified < 255 {
		p.verified++
		g.posts[id] = p
	}
	g.mu.Unlock()
}

// postSeen returns how many times upload id reached an upstream and how many
// of those carried the complete, correct body.
func (g *registry) postSeen(id uint64) (count, verified int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.posts[id]
	return int(p.count), int(p.verified)
}

type duplicate struct {
	id       uint64
	count    int
	backends []int // indexes of the first arrivals
}

// duplicates lists the uploads that reached an upstream more than once.
func (g *registry) duplicates() []duplicate {
	g.mu.Lock()
	defer g.mu.Unlock()
	var d []duplicate
	for id, p := range g.posts {
		if p.count > 1 {
			dup := duplicate{id: id, count: int(p.count)}
			for _, w := range p.where {
				if w >= 0 {
					dup.backends = append(dup.backends, int(w))
				}
			}
			d = append(d, dup)
		}
	}
	sort.Slice(d, func(i, j int) bool { return d[i].id < d[j].id })
	return d
}

func (g *registry) uploadsSeen() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.posts)
}

// cutMark says how chaos broke a response after its headers: backend
// index in the low bits, the reason above.
type cutMark uint8

const (
	cutMidBody       cutMark = 1 << 4 // the midbody mode reset it
	cutKilled        cutMark = 2 << 4 // a kill reset it while in flight
	cutKilledJustNow cutMark = 3 << 4 // a kill came just after it ended
)

var cutReasons = map[cutMark]string{
	cutMidBody:       "reset mid-body",
	cutKilled:        "killed mid-response",
	cutKilledJustNow: "killed just after the response",
}

// markCut records that the response to id was broken by chaos after the
// upstream had written its headers: the proxy may have committed to it, so
// the client may see an error and that is allowed.
func (g *registry) markCut(id uint64, backend int, why cutMark) {
	if id == 0 {
		return
	}
	g.mu.Lock()
	if _, ok := g.cut[id]; !ok {
		g.cut[id] = why | cutMark(backend)
	}
	g.mu.Unlock()
}

// cutReason returns why id was cut ("up2: reset mid-body"), or "" if chaos
// never broke a response to it after headers.
func (g *registry) cutReason(id uint64) string {
	g.mu.Lock()
	m, ok := g.cut[id]
	g.mu.Unlock()
	if !ok {
		return ""
	}
	return fmt.Sprintf("up%d: %s", int(m&0x0f)+1, cutReasons[m&0xf0])
}

func (g *registry) cuts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.cut)
}
