package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/internal/server"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// usageError is a bad command line. main prints it with a hint to --help
// and exits with status 2.
type usageError struct {
	cmd string // "proxy", "demo", or "" for sluice itself
	msg string
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return "sluice: " + e.msg
	}
	return "sluice " + e.cmd + ": " + e.msg
}

// target is one --to upstream.
type target struct {
	Scheme string // "http" or "https"
	Addr   string // host:port
}

// proxyOptions is the parsed command line of `sluice proxy`. Values are what
// the operator meant (0 retries means none); toConfig maps them to the
// library's conventions.
type proxyOptions struct {
	From                  string
	To                    []target
	LBPolicy              string
	Retries               int
	TryDuration           time.Duration
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
	FlushInterval         time.Duration // -1: after every write
	MaxRequestBuffer      int64         // 0: no buffering
	MaxHeaderBytes        int
	BodyReadTimeout       time.Duration // 0: none
	WriteIdleTimeout      time.Duration // 0: none
	TrustedProxies        []netip.Prefix
	HeaderUp, HeaderDown  []proxy.HeaderRule
	AccessLog             string // "" off, "-" stdout, else a file
	AccessLogBuffer       int64  // bytes; 0 = one write per line
	GCFloor               int64  // bytes; 0 = GOGC alone (internal/gcfloor)
	LogFormat             string // json or text
	LogLevel              slog.Level
	Admin                 string // "" off, else the admin endpoint's listen address
	TLSCert, TLSKey       string
	H2C                   bool
	StdHTTP1              bool // net/http's server for every HTTP/1 connection
	PeerYield             bool // sockio.YieldCPU after a lone request's writes

	// Health and limits (issue 3): see docs/upstream.md.
	HealthURI      string // "" = no active checks
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthStatus   string // e.g. 2xx or 200,204
	MaxFails       int    // 0 = no passive ejection
	FailDuration   time.Duration
	MaxRequests    int // per upstream, 0 = unlimited
	QueueTimeout   time.Duration
	SlowStart      time.Duration
	RetryStatuses  []int
}

// defaultGCFloor: at 16 MiB a busy proxy collects a few times a second
// instead of dozens, for about 10 MiB more resident memory
// (docs/performance.md, step 13).
const defaultGCFloor = 16 << 20

func defaultProxyOptions() proxyOptions {
	return proxyOptions{
		From:             ":8080",
		LBPolicy:         "round_robin",
		Retries:          2,
		TryDuration:      10 * time.Second,
		DialTimeout:      3 * time.Second,
		MaxRequestBuffer: proxy.DefaultMaxRequestBuffer,
		MaxHeaderBytes:   server.DefaultMaxHeaderBytes,
		LogFormat:        "text",
		LogLevel:         slog.LevelInfo,
		// nginx's defaults (proxy_read_timeout 60s; max_fails/fail_timeout
		// on) with a little more patience before ejecting.
		ResponseHeaderTimeout: 60 * time.Second,
		AccessLogBuffer:       64 << 10,
		GCFloor:               defaultGCFloor,
		PeerYield:             true,
		BodyReadTimeout:       server.DefaultBodyReadTimeout,
		WriteIdleTimeout:      server.DefaultWriteIdleTimeout,
		HealthInterval:        10 * time.Second,
		HealthTimeout:         5 * time.Second,
		HealthStatus:          "2xx",
		MaxFails:              3,
		FailDuration:          10 * time.Second,
	}
}

// flagSpec is one flag of `sluice proxy`: its parser and its help line. The
// same table drives parsing and --help, so they cannot disagree.
type flagSpec struct {
	name string
	arg  string // placeholder in help; "" for a boolean flag
	def  string // default as shown in help; "" for none
	help string
	set  func(o *proxyOptions, s string) error // error: what would be valid
}

var proxyFlags = []flagSpec{
	{"from", "ADDR", ":8080", "listen address (host:port; empty host = all interfaces)",
		func(o *proxyOptions, s string) error {
			if err := checkListenAddr(s); err != nil {
				return err
			}
			o.From = s
			return nil
		}},
	{"to", "ADDR", "", "upstream: host:port, http://host:port or https://host:port (repeatable, required)",
		func(o *proxyOptions, s string) error {
			t, err := parseTarget(s)
			if err != nil {
				return err
			}
			for _, prior := range o.To {
				if prior == t {
					return errors.New("this upstream was already given")
				}
			}
			o.To = append(o.To, t)
			return nil
		}},
	{"lb-policy", "NAME", "round_robin", "load-balancing policy: " + strings.Join(lbPolicyNames(), ", "),
		func(o *proxyOptions, s string) error {
			if _, err := newPolicy(s); err != nil {
				return err
			}
			o.LBPolicy = s
			return nil
		}},
	{"retries", "N", "2", "extra attempts after a failed one (0 = none); only when safe, see docs/cli.md",
		func(o *proxyOptions, s string) error {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return errors.New("want a whole number >= 0")
			}
			o.Retries = n
			return nil
		}},
	{"try-duration", "D", "10s", "no new attempt starts this long after the first",
		func(o *proxyOptions, s string) error {
			return positiveDuration(&o.TryDuration, s, "10s")
		}},
	{"dial-timeout", "D", "3s", "limit on connecting to an upstream (TCP and TLS)",
		func(o *proxyOptions, s string) error {
			return positiveDuration(&o.DialTimeout, s, "3s")
		}},
	{"response-header-timeout", "D", "60s", "limit on waiting for an upstream's response headers (0 = none)",
		func(o *proxyOptions, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return errors.New("want a duration >= 0 such as 30s (0 = no limit)")
			}
			o.ResponseHeaderTimeout = d
			return nil
		}},
	{"flush-interval", "D", "0", "flush responses this long after a write; -1 = after every write; 0 = when the buffer fills (streams always flush at once)",
		func(o *proxyOptions, s string) error {
			if s == "-1" {
				o.FlushInterval = -1
				return nil
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return errors.New("want a duration >= 0 such as 100ms, or -1 to flush after every write")
			}
			o.FlushInterval = d
			return nil
		}},
	{"max-request-buffer", "BYTES", "1MiB", "request bodies up to this size are held in memory so they can be retried (0 = never)",
		func(o *proxyOptions, s string) error {
			n, err := parseBytes(s)
			if err != nil {
				return errors.New("want a size in bytes >= 0 such as 1048576, 512KiB or 1MiB (0 = no buffering)")
			}
			o.MaxRequestBuffer = n
			return nil
		}},
	{"max-header-bytes", "BYTES", "64KiB", "largest request line plus headers accepted; larger gets 431",
		func(o *proxyOptions, s string) error {
			n, err := parseBytes(s)
			if err != nil || n <= 0 || n > math.MaxInt32 {
				return errors.New("want a size in bytes > 0 such as 65536 or 64KiB")
			}
			o.MaxHeaderBytes = int(n)
			return nil
		}},
	{"body-read-timeout", "D", "60s", "limit on waiting for the client's next request-body bytes (slow POST); 408 when it passes (0 = none)",
		func(o *proxyOptions, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return errors.New("want a duration >= 0 such as 60s (0 = no limit)")
			}
			o.BodyReadTimeout = d
			return nil
		}},
	{"write-idle-timeout", "D", "60s", "limit on one response write blocked by a client that does not read (slow read) (0 = none)",
		func(o *proxyOptions, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return errors.New("want a duration >= 0 such as 60s (0 = no limit)")
			}
			o.WriteIdleTimeout = d
			return nil
		}},
	{"trusted-proxy", "CIDR", "", "peer whose X-Forwarded-* headers are kept (CIDR or bare IP; repeatable)",
		func(o *proxyOptions, s string) error {
			p, err := parsePrefix(s)
			if err != nil {
				return err
			}
			o.TrustedProxies = append(o.TrustedProxies, p)
			return nil
		}},
	{"header-up", "'Name: value'", "", "set a request header sent upstream; '-Name' deletes it (repeatable)",
		func(o *proxyOptions, s string) error {
			r, err := proxy.ParseHeaderRule(s)
			if err != nil {
				return err
			}
			o.HeaderUp = append(o.HeaderUp, r)
			return nil
		}},
	{"header-down", "'Name: value'", "", "set a response header sent to the client; '-Name' deletes it (repeatable)",
		func(o *proxyOptions, s string) error {
			r, err := proxy.ParseHeaderRule(s)
			if err != nil {
				return err
			}
			o.HeaderDown = append(o.HeaderDown, r)
			return nil
		}},
	{"access-log", "PATH|-", "off", "write one JSON line per request to PATH (appended) or - for standard output",
		func(o *proxyOptions, s string) error {
			if s == "" {
				return errors.New("want a file path, or - for standard output")
			}
			o.AccessLog = s
			return nil
		}},
	{"access-log-buffer", "BYTES", "64KiB", "batch access-log lines up to this size, written at least every second and at exit (0 = write each line at once)",
		func(o *proxyOptions, s string) error {
			n, err := parseBytes(s)
			if err != nil || n > 64<<20 {
				return errors.New("want a size in bytes from 0 to 64MiB such as 64KiB (0 = no buffering)")
			}
			o.AccessLogBuffer = n
			return nil
		}},
	{"gc-floor", "BYTES", "16MiB", "the garbage collector does not run until the heap reaches this size; above it GOGC governs (0 = GOGC alone)",
		func(o *proxyOptions, s string) error {
			n, err := parseBytes(s)
			if err != nil || n > 16<<30 {
				return errors.New("want a size in bytes from 0 to 16GiB such as 16MiB (0 = no floor)")
			}
			o.GCFloor = n
			return nil
		}},
	{"log-format", "FORMAT", "text", "format of the process log on standard error: json or text",
		func(o *proxyOptions, s string) error {
			if s != "json" && s != "text" {
				return errors.New("want json or text")
			}
			o.LogFormat = s
			return nil
		}},
	{"log-level", "LEVEL", "info", "least severe process-log level shown: debug, info, warn or error",
		func(o *proxyOptions, s string) error {
			l, ok := logLevels[s]
			if !ok {
				return errors.New("want debug, info, warn or error")
			}
			o.LogLevel = l
			return nil
		}},
	{"admin", "ADDR", "off", "serve Prometheus metrics (/metrics) and upstream state (/status) on this address, e.g. 127.0.0.1:2019; keep it private",
		func(o *proxyOptions, s string) error {
			if checkListenAddr(s) != nil {
				return errors.New("want host:port to listen on, such as 127.0.0.1:2019")
			}
			o.Admin = s
			return nil
		}},
	{"tls-cert", "FILE", "", "PEM certificate (chain); with --tls-key serves HTTPS with HTTP/2",
		func(o *proxyOptions, s string) error {
			if s == "" {
				return errors.New("want the path of a PEM certificate file")
			}
			o.TLSCert = s
			return nil
		}},
	{"tls-key", "FILE", "", "PEM private key for --tls-cert",
		func(o *proxyOptions, s string) error {
			if s == "" {
				return errors.New("want the path of a PEM private key file")
			}
			o.TLSKey = s
			return nil
		}},
	{"health-uri", "PATH", "", "turn on active health checks: GET this path on every upstream (e.g. /healthz)",
		func(o *proxyOptions, s string) error {
			if !strings.HasPrefix(s, "/") {
				return errors.New("want a path starting with / such as /healthz")
			}
			o.HealthURI = s
			return nil
		}},
	{"health-interval", "D", "10s", "time between active checks of one upstream",
		func(o *proxyOptions, s string) error {
			return positiveDuration(&o.HealthInterval, s, "10s")
		}},
	{"health-timeout", "D", "5s", "limit on one active check",
		func(o *proxyOptions, s string) error {
			return positiveDuration(&o.HealthTimeout, s, "5s")
		}},
	{"health-status", "CODES", "2xx", "statuses a passing active check answers: classes or codes, comma-separated (2xx,301)",
		func(o *proxyOptions, s string) error {
			if _, err := upstream.ParseStatuses(strings.Split(s, ",")...); err != nil {
				return errors.New("want status codes or classes separated by commas, such as 2xx or 200,204")
			}
			o.HealthStatus = s
			return nil
		}},
	{"max-fails", "N", "3", "failures within --fail-duration that eject an upstream for --fail-duration (0 = never eject)",
		func(o *proxyOptions, s string) error {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return errors.New("want a whole number >= 0 (0 = passive ejection off)")
			}
			o.MaxFails = n
			return nil
		}},
	{"fail-duration", "D", "10s", "how long failures are remembered, and how long an ejected upstream stays out",
		func(o *proxyOptions, s string) error {
			return positiveDuration(&o.FailDuration, s, "10s")
		}},
	{"max-requests", "N", "0", "requests in flight per upstream; at the limit it is skipped (0 = unlimited)",
		func(o *proxyOptions, s string) error {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return errors.New("want a whole number >= 0 (0 = unlimited)")
			}
			o.MaxRequests = n
			return nil
		}},
	{"queue-timeout", "D", "0", "when every upstream is at --max-requests, wait this long for a slot before 503",
		func(o *proxyOptions, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return errors.New("want a duration >= 0 such as 500ms (0 = answer 503 at once)")
			}
			o.QueueTimeout = d
			return nil
		}},
	{"slow-start", "D", "0", "ramp traffic to a recovered upstream over this long (0 = off)",
		func(o *proxyOptions, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return errors.New("want a duration >= 0 such as 30s (0 = off)")
			}
			o.SlowStart = d
			return nil
		}},
	{"retry-status", "CODES", "", "upstream statuses retried like failures for idempotent requests, comma-separated (e.g. 502,503,504)",
		func(o *proxyOptions, s string) error {
			var codes []int
			for _, f := range strings.Split(s, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 200 || n > 599 {
					return errors.New("want final status codes (200-599) separated by commas, such as 502,503,504")
				}
				codes = append(codes, n)
			}
			o.RetryStatuses = codes
			return nil
		}},
	{"h2c", "", "off", "also serve HTTP/2 over plain TCP to clients with prior knowledge (never via Upgrade: h2c)",
		switchFlag("h2c", func(o *proxyOptions, b bool) { o.H2C = b })},
	{"std-http1", "", "off", "serve HTTP/1 with net/http's server only, without sluice's fast HTTP/1.1 loop",
		switchFlag("std-http1", func(o *proxyOptions, b bool) { o.StdHTTP1 = b })},
	{"peer-yield", "", "on", "when a request is the only one waiting for an answer, yield the CPU after writing it upstream and after sending its response, so a client or upstream on this machine that the write woke runs first (--peer-yield=false: never)",
		switchFlag("peer-yield", func(o *proxyOptions, b bool) { o.PeerYield = b })},
}

// switchFlag parses the value of switch --name (true or false; a bare
// --name means true) and sets it with set.
func switchFlag(name string, set func(*proxyOptions, bool)) func(*proxyOptions, string) error {
	return func(o *proxyOptions, s string) error {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false (or just --%s)", name)
		}
		set(o, b)
		return nil
	}
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

// parseProxyFlags parses the arguments after `sluice proxy`. It returns
// flag.ErrHelp when help was asked for, a *usageError for a bad command line.
func parseProxyFlags(args []string) (proxyOptions, error) {
	o := defaultProxyOptions()
	fs := newFlagSet("proxy")
	var first error
	for _, f := range proxyFlags {
		fs.Var(&specValue{spec: f, o: &o, first: &first}, f.name, f.help)
	}
	if err := parseFlagSet(fs, "proxy", args, &first); err != nil {
		return o, err
	}
	switch {
	case len(o.To) == 0:
		return o, &usageError{"proxy", "--to is required: give at least one upstream, e.g. --to 127.0.0.1:9000"}
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return o, &usageError{"proxy", "--tls-cert and --tls-key go together: give both or neither"}
	case o.Admin != "" && o.Admin == o.From && !strings.HasSuffix(o.Admin, ":0"):
		return o, &usageError{"proxy", "--admin needs an address of its own, not the --from address " + o.From}
	case o.H2C && o.TLSCert != "":
		return o, &usageError{"proxy", "--h2c is for plain-text listeners; with --tls-cert HTTP/2 is negotiated already"}
	}
	return o, nil
}

func newFlagSet(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // we print our own messages and help
	fs.Usage = func() {}
	return fs
}

// parseFlagSet runs fs.Parse and turns the flag package's messages into
// ours. first holds the first error a flag value reported.
func parseFlagSet(fs *flag.FlagSet, cmd string, args []string, first *error) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		return flag.ErrHelp
	case *first != nil:
		return *first
	default:
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
			msg = "unknown flag --" + strings.TrimLeft(name, "-")
		} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
			msg = "--" + strings.TrimLeft(name, "-") + " needs a value"
		}
		return &usageError{cmd, msg}
	}
	if fs.NArg() > 0 {
		return &usageError{cmd, fmt.Sprintf("unexpected argument %q (flags start with --)", fs.Arg(0))}
	}
	return nil
}

// specValue adapts a flagSpec to flag.Value.
type specValue struct {
	spec  flagSpec
	o     *proxyOptions
	first *error
}

func (v *specValue) String() string {
	if v == nil || v.o == nil {
		return ""
	}
	return v.spec.def
}

func (v *specValue) IsBoolFlag() bool { return v.spec.arg == "" }

func (v *specValue) Set(s string) error {
	err := v.spec.set(v.o, s)
	if err == nil {
		return nil
	}
	e := &usageError{"proxy", fmt.Sprintf("--%s %q: %v", v.spec.name, s, err)}
	if *v.first == nil {
		*v.first = e
	}
	return e
}

// boolValue is a --flag / --flag=false switch with our error message.
type boolValue struct {
	name  string
	cmd   string
	p     *bool
	set   *bool // records that the flag was given
	first *error
}

func (b *boolValue) String() string {
	if b == nil || b.p == nil {
		return ""
	}
	return strconv.FormatBool(*b.p)
}
func (b *boolValue) IsBoolFlag() bool { return true }
func (b *boolValue) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		e := &usageError{b.cmd, fmt.Sprintf("--%s %q: want true or false (or just --%s)", b.name, s, b.name)}
		if *b.first == nil {
			*b.first = e
		}
		return e
	}
	*b.p = v
	if b.set != nil {
		*b.set = true
	}
	return nil
}

func positiveDuration(dst *time.Duration, s, example string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a duration > 0 such as %s or 1.5s", example)
	}
	*dst = d
	return nil
}

// checkListenAddr accepts host:port with a numeric port (0 = any free port).
func checkListenAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		if n, perr := strconv.Atoi(port); perr == nil && n >= 0 && n <= 65535 {
			return nil
		}
	}
	return errors.New("want host:port to listen on, such as :8080 or 127.0.0.1:8080")
}

// parseTarget accepts host:port, http://host[:port] and https://host[:port].
func parseTarget(s string) (target, error) {
	bad := errors.New("want host:port, http://host:port or https://host:port")
	t := target{Scheme: "http"}
	hostport := s
	if i := strings.Index(s, "://"); i >= 0 {
		u, err := url.Parse(s)
		if err != nil {
			return t, bad
		}
		scheme := strings.ToLower(u.Scheme)
		if (scheme != "http" && scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return t, bad
		}
		t.Scheme, hostport = scheme, u.Host
		if u.Port() == "" {
			port := "80"
			if scheme == "https" {
				port = "443"
			}
			hostport = net.JoinHostPort(u.Hostname(), port)
		}
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return t, bad
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return t, bad
	}
	t.Addr = net.JoinHostPort(host, port)
	return t, nil
}

// parsePrefix accepts a CIDR or a bare IP (as a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	bad := errors.New("want an IP address or CIDR such as 10.0.0.0/8 or 192.168.1.7")
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, bad
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			// The proxy compares unmapped peer addresses.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, bad
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// parseBytes accepts a whole number of bytes with an optional binary
// suffix: B; k, K, KiB; M, MiB; G, GiB (all powers of 1024).
func parseBytes(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("no number")
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	var mult int64
	switch strings.TrimSpace(s[i:]) {
	case "", "B":
		mult = 1
	case "k", "K", "KiB":
		mult = 1 << 10
	case "M", "MiB":
		mult = 1 << 20
	case "G", "GiB":
		mult = 1 << 30
	default:
		return 0, errors.New("unknown suffix")
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}
