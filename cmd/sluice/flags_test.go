package main

import (
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
)

func TestParseProxyFlagsGood(t *testing.T) {
	to := []string{"--to", "127.0.0.1:9000"}
	tests := []struct {
		name  string
		args  []string
		check func(o proxyOptions) bool
	}{
		{"defaults", to, func(o proxyOptions) bool {
			want := defaultProxyOptions()
			want.To = []target{{"http", "127.0.0.1:9000"}}
			return reflect.DeepEqual(o, want)
		}},
		{"from", append([]string{"--from", "127.0.0.1:0"}, to...), func(o proxyOptions) bool { return o.From == "127.0.0.1:0" }},
		{"from any interface", append([]string{"--from=:9090"}, to...), func(o proxyOptions) bool { return o.From == ":9090" }},
		{"single dash", []string{"-to", "a:1", "-retries", "5"}, func(o proxyOptions) bool { return o.Retries == 5 }},
		{"to forms", []string{"--to", "a:1", "--to", "http://b:2", "--to", "https://c:3", "--to", "HTTPS://d", "--to", "http://e/", "--to", "[::1]:4"},
			func(o proxyOptions) bool {
				return reflect.DeepEqual(o.To, []target{{"http", "a:1"}, {"http", "b:2"}, {"https", "c:3"}, {"https", "d:443"}, {"http", "e:80"}, {"http", "[::1]:4"}})
			}},
		{"lb policy", append([]string{"--lb-policy", "round_robin"}, to...), func(o proxyOptions) bool { return o.LBPolicy == "round_robin" }},
		{"retries 0", append([]string{"--retries", "0"}, to...), func(o proxyOptions) bool { return o.Retries == 0 }},
		{"durations", append([]string{"--try-duration", "1.5s", "--dial-timeout", "250ms", "--response-header-timeout", "0"}, to...),
			func(o proxyOptions) bool {
				return o.TryDuration == 1500*time.Millisecond && o.DialTimeout == 250*time.Millisecond && o.ResponseHeaderTimeout == 0
			}},
		{"flush -1", append([]string{"--flush-interval", "-1"}, to...), func(o proxyOptions) bool { return o.FlushInterval == -1 }},
		{"flush -1 with =", append([]string{"--flush-interval=-1"}, to...), func(o proxyOptions) bool { return o.FlushInterval == -1 }},
		{"flush 100ms", append([]string{"--flush-interval", "100ms"}, to...), func(o proxyOptions) bool { return o.FlushInterval == 100*time.Millisecond }},
		{"sizes", append([]string{"--max-request-buffer", "512KiB", "--max-header-bytes", "32k"}, to...),
			func(o proxyOptions) bool { return o.MaxRequestBuffer == 512<<10 && o.MaxHeaderBytes == 32<<10 }},
		{"no buffering", append([]string{"--max-request-buffer", "0"}, to...), func(o proxyOptions) bool { return o.MaxRequestBuffer == 0 }},
		{"gc floor default", to, func(o proxyOptions) bool { return o.GCFloor == 16<<20 }},
		{"gc floor", append([]string{"--gc-floor", "64MiB"}, to...), func(o proxyOptions) bool { return o.GCFloor == 64<<20 }},
		{"no gc floor", append([]string{"--gc-floor", "0"}, to...), func(o proxyOptions) bool { return o.GCFloor == 0 }},
		{"trusted", append([]string{"--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "192.168.1.7", "--trusted-proxy", "::1", "--trusted-proxy", "10.1.2.3/16"}, to...),
			func(o proxyOptions) bool {
				return reflect.DeepEqual(o.TrustedProxies, []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
					netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.1.0.0/16")})
			}},
		{"header rules", append([]string{"--header-up", "X-Env: prod", "--header-up", "-Cookie", "--header-down", "-Server"}, to...),
			func(o proxyOptions) bool {
				return reflect.DeepEqual(o.HeaderUp, []proxy.HeaderRule{{Name: "X-Env", Value: "prod"}, {Name: "Cookie", Delete: true}}) &&
					reflect.DeepEqual(o.HeaderDown, []proxy.HeaderRule{{Name: "Server", Delete: true}})
			}},
		{"logs", append([]string{"--access-log", "-", "--log-format", "json", "--log-level", "debug"}, to...),
			func(o proxyOptions) bool {
				return o.AccessLog == "-" && o.LogFormat == "json" && o.LogLevel == slog.LevelDebug
			}},
		{"tls", append([]string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, to...), func(o proxyOptions) bool { return o.TLSCert == "c.pem" && o.TLSKey == "k.pem" }},
		{"h2c", append([]string{"--h2c"}, to...), func(o proxyOptions) bool { return o.H2C }},
		{"h2c=false", append([]string{"--h2c=false"}, to...), func(o proxyOptions) bool { return !o.H2C }},
		{"std-http1", append([]string{"--std-http1"}, to...), func(o proxyOptions) bool { return o.StdHTTP1 }},
		{"admin", append([]string{"--admin", "127.0.0.1:2019"}, to...), func(o proxyOptions) bool { return o.Admin == "127.0.0.1:2019" }},
		{"admin and from on port 0", append([]string{"--from", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, to...),
			func(o proxyOptions) bool { return o.Admin == "127.0.0.1:0" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseProxyFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Fatalf("%+v", o)
			}
		})
	}
}

func TestParseProxyFlagsBad(t *testing.T) {
	to := []string{"--to", "127.0.0.1:9000"}
	tests := []struct {
		args []string
		want string
	}{
		{nil, `sluice proxy: --to is required: give at least one upstream, e.g. --to 127.0.0.1:9000`},
		{[]string{"--retries", "x"}, `sluice proxy: --retries "x": want a whole number >= 0`},
		{[]string{"--retries", "-1"}, `sluice proxy: --retries "-1": want a whole number >= 0`},
		{[]string{"--retries", "1.5"}, `sluice proxy: --retries "1.5": want a whole number >= 0`},
		{[]string{"--from", "8080"}, `sluice proxy: --from "8080": want host:port to listen on, such as :8080 or 127.0.0.1:8080`},
		{[]string{"--from", ":http"}, `sluice proxy: --from ":http": want host:port to listen on, such as :8080 or 127.0.0.1:8080`},
		{[]string{"--to", "localhost"}, `sluice proxy: --to "localhost": want host:port, http://host:port or https://host:port`},
		{[]string{"--to", ":9000"}, `sluice proxy: --to ":9000": want host:port, http://host:port or https://host:port`},
		{[]string{"--to", "ftp://a:1"}, `sluice proxy: --to "ftp://a:1": want host:port, http://host:port or https://host:port`},
		{[]string{"--to", "http://a:1/api"}, `sluice proxy: --to "http://a:1/api": want host:port, http://host:port or https://host:port`},
		{[]string{"--to", "http://u:p@a:1"}, `sluice proxy: --to "http://u:p@a:1": want host:port, http://host:port or https://host:port`},
		{[]string{"--to", "a:99999"}, `sluice proxy: --to "a:99999": want host:port, http://host:port or https://host:port`},
		{[]string{"--to", "a:1", "--to", "http://a:1"}, `sluice proxy: --to "http://a:1": this upstream was already given`},
		{[]string{"--try-duration", "10"}, `sluice proxy: --try-duration "10": want a duration > 0 such as 10s or 1.5s`},
		{[]string{"--try-duration", "0s"}, `sluice proxy: --try-duration "0s": want a duration > 0 such as 10s or 1.5s`},
		{[]string{"--dial-timeout", "-1s"}, `sluice proxy: --dial-timeout "-1s": want a duration > 0 such as 3s or 1.5s`},
		{[]string{"--response-header-timeout", "soon"}, `sluice proxy: --response-header-timeout "soon": want a duration >= 0 such as 30s (0 = no limit)`},
		{[]string{"--flush-interval", "-2"}, `sluice proxy: --flush-interval "-2": want a duration >= 0 such as 100ms, or -1 to flush after every write`},
		{[]string{"--flush-interval", "-1s"}, `sluice proxy: --flush-interval "-1s": want a duration >= 0 such as 100ms, or -1 to flush after every write`},
		{[]string{"--max-request-buffer", "1MB"}, `sluice proxy: --max-request-buffer "1MB": want a size in bytes >= 0 such as 1048576, 512KiB or 1MiB (0 = no buffering)`},
		{[]string{"--max-request-buffer", "-5"}, `sluice proxy: --max-request-buffer "-5": want a size in bytes >= 0 such as 1048576, 512KiB or 1MiB (0 = no buffering)`},
		{[]string{"--gc-floor", "16MB"}, `sluice proxy: --gc-floor "16MB": want a size in bytes from 0 to 16GiB such as 16MiB (0 = no floor)`},
		{[]string{"--gc-floor", "17GiB"}, `sluice proxy: --gc-floor "17GiB": want a size in bytes from 0 to 16GiB such as 16MiB (0 = no floor)`},
		{[]string{"--max-header-bytes", "0"}, `sluice proxy: --max-header-bytes "0": want a size in bytes > 0 such as 65536 or 64KiB`},
		{[]string{"--trusted-proxy", "10.0.0.0/33"}, `sluice proxy: --trusted-proxy "10.0.0.0/33": want an IP address or CIDR such as 10.0.0.0/8 or 192.168.1.7`},
		{[]string{"--trusted-proxy", "proxy.local"}, `sluice proxy: --trusted-proxy "proxy.local": want an IP address or CIDR such as 10.0.0.0/8 or 192.168.1.7`},
		{[]string{"--header-up", "X-Env"}, `sluice proxy: --header-up "X-Env": header rule "X-Env": want "Name: value" to set or "-Name" to delete`},
		{[]string{"--header-down", "Bad Name: x"}, `sluice proxy: --header-down "Bad Name: x": header rule: "Bad Name" is not a valid header name`},
		{[]string{"--access-log", ""}, `sluice proxy: --access-log "": want a file path, or - for standard output`},
		{[]string{"--log-format", "xml"}, `sluice proxy: --log-format "xml": want json or text`},
		{[]string{"--log-level", "verbose"}, `sluice proxy: --log-level "verbose": want debug, info, warn or error`},
		{[]string{"--admin", "2019"}, `sluice proxy: --admin "2019": want host:port to listen on, such as 127.0.0.1:2019`},
		{[]string{"--admin", ""}, `sluice proxy: --admin "": want host:port to listen on, such as 127.0.0.1:2019`},
		{[]string{"--admin", ":8080"}, `sluice proxy: --admin needs an address of its own, not the --from address :8080`},
		{[]string{"--h2c=maybe"}, `sluice proxy: --h2c "maybe": want true or false (or just --h2c)`},
		{[]string{"--tls-cert", "c.pem"}, `sluice proxy: --tls-cert and --tls-key go together: give both or neither`},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--h2c"}, `sluice proxy: --h2c is for plain-text listeners; with --tls-cert HTTP/2 is negotiated already`},
		{[]string{"--bogus"}, `sluice proxy: unknown flag --bogus`},
		{[]string{"-bogus=1"}, `sluice proxy: unknown flag --bogus`},
		{[]string{"--retries"}, `sluice proxy: --retries needs a value`},
		{[]string{"extra"}, `sluice proxy: unexpected argument "extra" (flags start with --)`},
		// The first bad value is reported, not a later one.
		{[]string{"--retries", "x", "--log-level", "y"}, `sluice proxy: --retries "x": want a whole number >= 0`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := tc.args
			if args != nil && !strings.HasPrefix(tc.want, "sluice proxy: --to") {
				args = append(append([]string(nil), to...), args...)
			}
			_, err := parseProxyFlags(args)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
			if err.Error() != tc.want {
				t.Fatalf("got  %s\nwant %s", err, tc.want)
			}
		})
	}
}

func TestParseLBPolicyError(t *testing.T) {
	_, err := parseProxyFlags([]string{"--to", "a:1", "--lb-policy", "fastest"})
	if err == nil || !strings.HasPrefix(err.Error(), `sluice proxy: --lb-policy "fastest": `) ||
		!strings.Contains(err.Error(), "round_robin") {
		t.Fatalf("got %v; want the flag, the value and the valid policies", err)
	}
}

func TestParseProxyHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		if _, err := parseProxyFlags([]string{arg}); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: got %v", arg, err)
		}
	}
}

func TestParseBytes(t *testing.T) {
	good := map[string]int64{
		"0": 0, "1": 1, "1048576": 1 << 20, "10B": 10, "1k": 1024, "1K": 1024, "1KiB": 1024,
		"2M": 2 << 20, "2MiB": 2 << 20, "1G": 1 << 30, "1GiB": 1 << 30, "64 KiB": 64 << 10,
	}
	for in, want := range good {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "1.5M", "1MB", "1kb", "1 T", "99999999999999999999", "9999999999999G"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
}

func TestToConfig(t *testing.T) {
	o, err := parseProxyFlags([]string{"--to", "a:1", "--to", "https://b:2", "--retries", "0",
		"--max-request-buffer", "0", "--try-duration", "2s", "--flush-interval", "-1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, tr, err := o.toConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	ups := cfg.Upstreams.Upstreams()
	if len(ups) != 2 || ups[0].Addr != "a:1" || ups[0].Scheme != "http" || ups[1].Addr != "b:2" || ups[1].Scheme != "https" {
		t.Fatalf("upstreams %v %v", ups[0], ups[1])
	}
	// Zero on the command line means none; the library reads zero as
	// "default", so these become negative.
	if cfg.Retry.Retries != -1 || cfg.MaxRequestBuffer != -1 || cfg.Retry.TryDuration != 2*time.Second || cfg.FlushInterval != -1 {
		t.Fatalf("%+v", cfg)
	}
	if cfg.Transport == nil {
		t.Fatal("no transport")
	}

	o, _ = parseProxyFlags([]string{"--to", "a:1"})
	cfg, tr, _ = o.toConfig(nil, nil)
	defer tr.CloseIdleConnections()
	if cfg.Retry.Retries != 2 || cfg.MaxRequestBuffer != proxy.DefaultMaxRequestBuffer {
		t.Fatalf("defaults: %+v", cfg)
	}
}
