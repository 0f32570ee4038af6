// Command etcd runs a single-member etcd server for the local test cluster: client and peer URLs on
// loopback only, no fsync (the data is thrown away with the cluster).
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory of the member's data")
	clientPort := flag.String("client-port", "2379", "loopback port for clients")
	peerPort := flag.String("peer-port", "2380", "loopback port for peers")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}

	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.Name = "local"
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + *clientPort}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + *peerPort}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("starting etcd: %v", err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	log.Printf("etcd ready on %s", client.String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-e.Err():
		log.Fatalf("etcd: %v", err)
	case <-sig:
	}
}
