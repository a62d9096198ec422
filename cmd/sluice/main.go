// Command sluice is an HTTP reverse proxy.
//
//	sluice proxy --from :8080 --to 127.0.0.1:9000 --to 127.0.0.1:9001
//	sluice demo
//	sluice version
//
// Run `sluice help` for the commands and `sluice proxy --help` for flags;
// docs/cli.md is the full reference.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // the command line was wrong
)

func main() {
	// A server must outlive whatever reads its output: by default Go exits
	// on SIGPIPE when standard output or error is a closed pipe, so
	// "sluice proxy --access-log - | shipper" would die with its log
	// shipper. Ignored, the write fails with EPIPE, the line is dropped and
	// the process log says so (failureReporter), as nginx and HAProxy do.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default behaviour comes back, so a second
	// Ctrl-C ends the process at once instead of waiting for the grace
	// period.
	context.AfterFunc(ctx, func() {
		stop()
		fmt.Fprintln(os.Stderr, "sluice: shutting down; interrupt again to exit at once")
	})
	os.Exit(run(ctx, os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr}))
}

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, mainUsage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		return runHelp(rest, e)
	case "version", "--version", "-version":
		if len(rest) > 0 {
			switch rest[0] {
			case "-h", "-help", "--help":
				return runHelp([]string{"version"}, e)
			}
			return usageFailed(e, &usageError{"version", fmt.Sprintf("unexpected argument %q", rest[0])})
		}
		fmt.Fprintf(e.stdout, "sluice %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "proxy":
		o, err := parseProxyFlags(rest)
		if err != nil {
			return flagsFailed(e, "proxy", err)
		}
		return finish(e, "proxy", runProxy(ctx, o, e))
	case "demo":
		o, err := parseDemoFlags(rest)
		if err != nil {
			return flagsFailed(e, "demo", err)
		}
		return finish(e, "demo", runDemo(ctx, o, e))
	}
	msg := fmt.Sprintf("unknown command %q; commands are proxy, demo, version and help", cmd)
	if strings.HasPrefix(cmd, "-") {
		msg = fmt.Sprintf("%s needs a command before it, e.g. sluice proxy %s ...", cmd, cmd)
	}
	fmt.Fprintf(e.stderr, "sluice: %s\nRun 'sluice help' for usage.\n", msg)
	return exitUsage
}

func runHelp(args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stdout, mainUsage)
		return exitOK
	}
	switch args[0] {
	case "proxy":
		printProxyUsage(e.stdout)
	case "demo":
		fmt.Fprint(e.stdout, demoUsage)
	case "version":
		fmt.Fprint(e.stdout, "Usage: sluice version\n\nPrints the version of sluice and of the Go toolchain that built it.\n")
	case "help":
		fmt.Fprint(e.stdout, mainUsage)
	default:
		fmt.Fprintf(e.stderr, "sluice help: unknown command %q; commands are proxy, demo, version and help\n", args[0])
		return exitUsage
	}
	return exitOK
}

// flagsFailed handles a parse error: help goes to stdout with status 0,
// anything else to stderr with a hint and status 2.
func flagsFailed(e env, cmd string, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		runHelp([]string{cmd}, e)
		return exitOK
	}
	return usageFailed(e, err)
}

func usageFailed(e env, err error) int {
	fmt.Fprintln(e.stderr, err)
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd != "" {
		fmt.Fprintf(e.stderr, "Run 'sluice %s --help' for usage.\n", ue.cmd)
	} else {
		fmt.Fprintln(e.stderr, "Run 'sluice help' for usage.")
	}
	return exitUsage
}

// finish reports the error a command returned.
func finish(e env, cmd string, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return usageFailed(e, err)
	}
	fmt.Fprintf(e.stderr, "sluice %s: %v\n", cmd, err)
	return exitError
}

const mainUsage = `sluice is an HTTP reverse proxy.

Usage:
  sluice proxy --to HOST:PORT [--to HOST:PORT ...] [flags]   run a reverse proxy
  sluice demo [--from ADDR] [--self-test]                    a guided tour on loopback
  sluice version                                             print the version
  sluice help [COMMAND]                                      show help for a command

Examples:
  sluice proxy --from :8080 --to 127.0.0.1:9000 --to 127.0.0.1:9001
  sluice demo

Flags are written --name VALUE or --name=VALUE. Exit status: 0 success,
1 failure while running, 2 bad command line. Full reference: docs/cli.md.
`

func printProxyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: sluice proxy --to HOST:PORT [--to HOST:PORT ...] [flags]

Forwards every request arriving on --from to one of the --to upstreams,
retrying failed attempts when that is safe. Runs until SIGINT or SIGTERM,
then stops accepting and lets requests in flight finish (up to 15s).

Flags:
`)
	for _, f := range proxyFlags {
		name := "--" + f.name
		if f.arg != "" {
			name += " " + f.arg
		}
		help := f.help
		if f.def != "" {
			help += " (default " + f.def + ")"
		}
		fmt.Fprintf(w, "  %s\n%s", name, wrap(help, "        ", 78))
	}
	fmt.Fprint(w, `
Durations use Go syntax: 250ms, 1.5s, 2m. Sizes are bytes, or a number
with k/K/KiB, M/MiB or G/GiB (powers of 1024).

Example:
  sluice proxy --from :8080 --to 127.0.0.1:9000 --to https://10.0.0.5:8443 \
    --retries 3 --header-up 'X-Env: prod' --header-down '-Server' --access-log -
`)
}

// wrap breaks text into lines of at most width columns, each starting with
// indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}
