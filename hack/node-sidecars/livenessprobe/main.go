// Command livenessprobe exposes a CSI plugin's health over HTTP: GET /healthz calls the plugin's
// Identity.Probe and answers 200 when it reports ready, 500 otherwise. Flags follow the upstream
// sidecar's names so the DaemonSet the operator renders runs unchanged.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strings"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "CSI plugin socket")
	probeTimeout := flag.Duration("probe-timeout", time.Second, "timeout of the Probe call")
	httpEndpoint := flag.String("http-endpoint", "", "address of the /healthz endpoint")
	healthPort := flag.Int("health-port", 9808, "port of /healthz when --http-endpoint is empty")
	flag.Int("v", 0, "log verbosity (accepted for compatibility)")
	flag.Parse()
	addr := *httpEndpoint
	if addr == "" {
		addr = fmt.Sprintf(":%d", *healthPort)
	}
	target := *csiAddress
	if !strings.HasPrefix(target, "unix://") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("client for %s: %v", target, err)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), *probeTimeout)
		defer cancel()
		resp, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
		if err != nil {
			log.Printf("health check failed: %v", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if resp.GetReady() != nil && !resp.GetReady().GetValue() {
			http.Error(w, "driver responded but is not ready", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	log.Printf("serving /healthz on %s for %s", addr, target)
	log.Fatal(http.ListenAndServe(addr, nil))
}
