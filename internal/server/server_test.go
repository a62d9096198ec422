package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// running is a server started by start.
type running struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels the server and waits (bounded) for Serve to return. It may be
// called more than once.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	r.once.Do(func() {
		select {
		case r.err = <-r.done:
		case <-time.After(10 * time.Second):
			r.err = errors.New("Serve did not return within 10s of cancel")
		}
	})
	return r.err
}

func start(t *testing.T, h http.Handler, o Options) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Serve(ctx, ln, h, o) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Error(err)
		}
	})
	return r
}

func protoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// selfSigned writes a certificate for 127.0.0.1 and localhost and its key to
// dir and returns their paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

func TestHTTPSServesHTTP2(t *testing.T) {
	cert, key, roots := selfSigned(t)
	srv := start(t, protoHandler(), Options{TLSCert: cert, TLSKey: key})

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	res, body := get(t, c, "https://"+srv.addr+"/")
	if res.StatusCode != 200 || res.ProtoMajor != 2 || body != "HTTP/2.0" {
		t.Fatalf("got %d %s body %q, want 200 over HTTP/2", res.StatusCode, res.Proto, body)
	}

	// HTTP/1.1 still works for clients that do not offer h2.
	tr1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	tr1.Protocols = new(http.Protocols)
	tr1.Protocols.SetHTTP1(true)
	defer tr1.CloseIdleConnections()
	res, body = get(t, &http.Client{Transport: tr1, Timeout: 5 * time.Second}, "https://"+srv.addr+"/")
	if res.StatusCode != 200 || body != "HTTP/1.1" {
		t.Fatalf("HTTP/1.1 over TLS: got %d %q", res.StatusCode, body)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestTLSNeedsCertAndKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), ln, protoHandler(), Options{TLSCert: "cert.pem"})
	if err == nil || !strings.Contains(err.Error(), "both a certificate and a key") {
		t.Fatalf("got %v", err)
	}
	err = Run(context.Background(), protoHandler(), Options{Addr: "127.0.0.1:0", TLSCert: "/nonexistent/c.pem", TLSKey: "/nonexistent/k.pem"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/c.pem") {
		t.Fatalf("got %v", err)
	}
}

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient() (*http.Client, *http.Transport) {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, tr
}

func TestH2CPriorKnowledge(t *testing.T) {
	srv := start(t, protoHandler(), Options{H2C: true})
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	res, body := get(t, c, "http://"+srv.addr+"/")
	if res.StatusCode != 200 || body != "HTTP/2.0" {
		t.Fatalf("got %d %q, want HTTP/2.0", res.StatusCode, body)
	}
	// HTTP/1.1 keeps working on the same listener.
	res, body = get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+srv.addr+"/")
	if res.StatusCode != 200 || body != "HTTP/1.1" {
		t.Fatalf("HTTP/1.1 beside h2c: got %d %q", res.StatusCode, body)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func TestH2COffByDefault(t *testing.T) {
	srv := start(t, protoHandler(), Options{})
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	res, err := c.Get("http://" + srv.addr + "/")
	if err == nil {
		res.Body.Close()
		t.Fatalf("h2c prior knowledge accepted without H2C: %s", res.Proto)
	}
}

// TestUpgradeH2CNeverHonoured sends the RFC 7540 §3.2 upgrade request: the
// server must answer it as plain HTTP/1.1, never 101.
func TestUpgradeH2CNeverHonoured(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run(fmt.Sprint("h2c=", h2c), func(t *testing.T) {
			srv := start(t, protoHandler(), Options{H2C: h2c})
			conn, err := net.DialTimeout("tcp", srv.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
				"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(body) != "HTTP/1.1" {
				t.Fatalf("got %d %q, want 200 HTTP/1.1", res.StatusCode, body)
			}
		})
	}
}

type closerHandler struct {
	http.Handler
	closed atomic.Int32
}

func (c *closerHandler) Close() error { c.closed.Add(1); return nil }

func TestGracefulShutdownLetsInFlightFinish(t *testing.T) {
	entered := make(chan struct{})
	h := &closerHandler{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "finished")
	})}
	srv := start(t, h, Options{ShutdownTimeout: 5 * time.Second})

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	go func() {
		res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + srv.addr + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		got <- result{string(b), err}
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not reach the handler")
	}
	srv.cancel()
	// New connections are refused once shutdown began.
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", srv.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting 2s after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := <-got
	if r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := h.closed.Load(); n != 1 {
		t.Fatalf("handler Close called %d times, want 1", n)
	}
}

func TestShutdownTimeoutClosesStragglers(t *testing.T) {
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select { // a stream that would run on for long
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	srv := start(t, h, Options{ShutdownTimeout: 200 * time.Millisecond})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	errc := make(chan error, 1)
	go func() {
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + srv.addr + "/")
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not reach the handler")
	}
	t0 := time.Now()
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("shutdown took %v with a 200ms grace", d)
	}
	if err := <-errc; err == nil {
		t.Fatal("straggler request succeeded; want its connection closed")
	}
}

func TestOversizeHeaderGets431(t *testing.T) {
	srv := start(t, protoHandler(), Options{MaxHeaderBytes: 8 << 10})
	conn, err := net.DialTimeout("tcp", srv.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// net/http allows 4 KiB of slack above MaxHeaderBytes.
	big := strings.Repeat("a", 16<<10)
	go io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("got %d, want 431", res.StatusCode)
	}
	// The server keeps serving other connections.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, body := get(t, &http.Client{Transport: tr, Timeout: 5 * time.Second}, "http://"+srv.addr+"/")
	if res.StatusCode != 200 || body != "HTTP/1.1" {
		t.Fatalf("after 431: got %d %q", res.StatusCode, body)
	}
}

func TestDefaultMaxHeaderBytes(t *testing.T) {
	srv := start(t, protoHandler(), Options{})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, tc := range []struct {
		size int
		want int
	}{{32 << 10, 200}, {DefaultMaxHeaderBytes + 8<<10, 431}} {
		req, _ := http.NewRequest("GET", "http://"+srv.addr+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("b", tc.size))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Fatalf("header of %d bytes: got %d, want %d", tc.size, res.StatusCode, tc.want)
		}
	}
}

func TestListenAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Run(context.Background(), protoHandler(), Options{Addr: ln.Addr().String()})
	if !IsAddrInUse(err) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("got %v", err)
	}
}

func TestServeReturnsListenerError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &closerHandler{Handler: protoHandler()}
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), ln, h, Options{Logger: slog.New(slog.DiscardHandler)})
	}()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener closed")
	}
	if h.closed.Load() != 1 {
		t.Fatal("handler not closed")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{ReadTimeout: -1, IdleTimeout: -1}.withDefaults()
	if o.ReadHeaderTimeout != DefaultReadHeaderTimeout || o.IdleTimeout != 0 || o.ReadTimeout != 0 ||
		o.WriteTimeout != 0 || o.MaxHeaderBytes != DefaultMaxHeaderBytes || o.ShutdownTimeout != DefaultShutdownTimeout {
		t.Fatalf("%+v", o)
	}
}
