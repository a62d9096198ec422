package server

// net/http's HTTP/2 server runs every stream's handler on a new goroutine,
// whose stack starts small. The proxy's path to the upstream socket is
// deep enough to outgrow it, and the runtime then copies the stack, up to
// twice, each time walking every frame: 12% of the CPU of an h2c request
// in a profile. Growing the stack once, on entry, while it holds a handful
// of frames, costs one cheap copy instead.

// stackReserve is about what the proxy's deepest common path (writing a
// request to an upstream connection) uses below the handler.
const stackReserve = 6 << 10

// growStack makes the goroutine's stack big enough for stackReserve more
// bytes before the handler runs.
//
//go:noinline
func growStack() {
	var reserve [stackReserve]byte
	touchStack(reserve[:])
}

//go:noinline
func touchStack(b []byte) { b[0] = 1 }
