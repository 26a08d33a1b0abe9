// vcsim for Bulwark's tests: VMware's vCenter simulator (govmomi, from Debian's source package) with the
// inventory size, address, TLS and login set on the command line. Built by build.sh; nothing of govmomi is
// copied into this repository.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // tags and categories (vAPI REST), as on a real vCenter
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "listen address")
	username := flag.String("username", "admin", "login user name")
	password := flag.String("password", "", "login password (empty: any non-empty password is accepted)")
	useTLS := flag.Bool("tls", true, "serve HTTPS with a self-signed certificate")
	datacenters := flag.Int("dc", 1, "datacenters")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	clusterHosts := flag.Int("cluster-host", 3, "hosts per cluster")
	hosts := flag.Int("host", 1, "standalone hosts per datacenter")
	pools := flag.Int("pool", 1, "child resource pools per cluster")
	machines := flag.Int("vm", 2, "virtual machines per resource pool")
	datastores := flag.Int("ds", 1, "datastores")
	folders := flag.Int("folder", 0, "datacenters placed in folders")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter = *datacenters
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Host = *hosts
	model.Pool = *pools
	model.Machine = *machines
	model.Datastore = *datastores
	model.Folder = *folders
	model.Autostart = true
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen}
	if *password != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	fmt.Printf("READY %s\n", server.URL.String())
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
	model.Remove()
}
