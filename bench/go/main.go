// Command petsage-bench-go is a minimal grpc-go health server used by the
// benchmark. It follows the same stdin/stdout contract as the Python
// benchmark servers:
//
//	petsage-bench-go PORT
//
// Behaviour:
//   - listens on 127.0.0.1:PORT (0 picks a free port), plaintext gRPC, with
//     grpc-go's standard health server registered and service "" SERVING;
//   - prints exactly one line "PORT <n>" (the bound port) once listening;
//   - reads commands from stdin, one per line:
//     "set SERVING|NOT_SERVING|UNKNOWN|SERVICE_UNKNOWN" -> SetServingStatus("",
//     status), then prints "ok"; empty lines are ignored; anything else prints
//     "error: unknown command";
//   - on stdin EOF or SIGTERM/SIGINT stops the server and exits 0.
//
// Nothing else is written to stdout; diagnostics go to stderr.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// statuses maps the accepted "set" arguments to health statuses.
var statuses = map[string]healthpb.HealthCheckResponse_ServingStatus{
	"SERVING":         healthpb.HealthCheckResponse_SERVING,
	"NOT_SERVING":     healthpb.HealthCheckResponse_NOT_SERVING,
	"UNKNOWN":         healthpb.HealthCheckResponse_UNKNOWN,
	"SERVICE_UNKNOWN": healthpb.HealthCheckResponse_SERVICE_UNKNOWN,
}

func main() {
	// Catch SIGTERM/SIGINT from the very start, so a signal sent right after
	// the PORT line still leads to a clean Stop() and exit 0.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: petsage-bench-go PORT")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil || port < 0 || port > 65535 {
		fmt.Fprintf(os.Stderr, "invalid port %q\n", os.Args[1])
		os.Exit(2)
	}

	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}

	// Standard health server; "" is SERVING before we announce the port.
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)

	go func() {
		if err := srv.Serve(lis); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
		}
	}()

	// stdout is unbuffered in Go (os.Stdout writes go straight to fd 1), so
	// each Fprintln below is effectively flushed when it returns.
	out := os.Stdout
	fmt.Fprintf(out, "PORT %d\n", lis.Addr().(*net.TCPAddr).Port)

	// done is closed when stdin hits EOF (or a read error).
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "set" {
				if st, ok := statuses[f[1]]; ok {
					hs.SetServingStatus("", st)
					fmt.Fprintln(out, "ok")
					continue
				}
			}
			fmt.Fprintln(out, "error: unknown command")
		}
		if err := sc.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "stdin:", err)
		}
	}()

	select {
	case <-done:
	case <-sigs:
	}
	srv.Stop()
	os.Exit(0)
}
