// Command csi-node-driver-registrar registers a CSI node plugin with kubelet's plugin watcher.
//
// It asks the plugin for its name (CSI Identity.GetPluginInfo), then serves kubelet's
// pluginregistration.v1 Registration service on <plugin-registration-path>/<name>-reg.sock.
// Flags follow the upstream sidecar's names so the DaemonSet the operator renders runs unchanged.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registration struct {
	registerapi.UnimplementedRegistrationServer
	name     string
	endpoint string
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("kubelet asked for plugin info: %s at %s", r.name, r.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("registered with kubelet")
	} else {
		log.Printf("kubelet refused the registration: %s", s.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func unixTarget(addr string) string {
	if strings.HasPrefix(addr, "unix://") {
		return addr
	}
	return "unix://" + addr
}

func pluginName(csiAddress string, timeout time.Duration) string {
	for {
		conn, err := grpc.NewClient(unixTarget(csiAddress), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			info, err2 := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
			cancel()
			conn.Close()
			if err2 == nil && info.GetName() != "" {
				return info.GetName()
			}
			err = err2
		}
		log.Printf("waiting for the CSI plugin at %s: %v", csiAddress, err)
		time.Sleep(2 * time.Second)
	}
}

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "CSI plugin socket inside this container")
	kubeletPath := flag.String("kubelet-registration-path", "", "the plugin socket's path on the host, as kubelet dials it")
	regDir := flag.String("plugin-registration-path", "/registration", "kubelet's plugins_registry directory")
	httpEndpoint := flag.String("http-endpoint", "", "address of the /healthz endpoint (empty: none)")
	timeout := flag.Duration("timeout", 10*time.Second, "timeout of calls to the CSI plugin")
	flag.Int("v", 0, "log verbosity (accepted for compatibility)")
	flag.Parse()
	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}
	name := pluginName(*csiAddress, *timeout)
	sock := filepath.Join(*regDir, name+"-reg.sock")
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		log.Fatalf("removing stale %s: %v", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatalf("listen on %s: %v", sock, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registration{name: name, endpoint: *kubeletPath})
	if *httpEndpoint != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if _, err := os.Stat(sock); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})
		go func() { log.Fatal(http.ListenAndServe(*httpEndpoint, mux)) }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		srv.Stop()
		_ = os.Remove(sock)
		os.Exit(0)
	}()
	log.Printf("serving registration of %s on %s (kubelet dials %s)", name, sock, *kubeletPath)
	if err := srv.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
