// Command bench-envtest is the Go envtest baseline of scripts/bench: it starts
// controller-runtime's envtest with its default settings against the binaries
// in KUBEBUILDER_ASSETS, serves one request, stops, and prints one JSON line
// with the seconds each phase took.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-envtest:", err)
		os.Exit(1)
	}
}

func run() error {
	began := time.Now()
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("envtest start: %w", err)
	}
	started := time.Since(began)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		return err
	}
	if _, err := client.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); err != nil {
		_ = env.Stop()
		return fmt.Errorf("first request: %w", err)
	}
	ready := time.Since(began)
	stopBegan := time.Now()
	if err := env.Stop(); err != nil {
		return fmt.Errorf("envtest stop: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"start_s": started.Seconds(),
		"ready_s": ready.Seconds(),
		"stop_s":  time.Since(stopBegan).Seconds(),
	})
}
