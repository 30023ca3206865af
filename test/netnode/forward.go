package netnode

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// ForwardAPIServer listens on a loopback port inside the node namespace and forwards
// every connection to the apiserver at host (a URL on the host's loopback; TLS passes
// through untouched). It returns the https URL to use inside the node namespace. Close
// stops the forwarder and closes its connections.
func (n *Node) ForwardAPIServer(host string) (string, error) {
	u, err := url.Parse(host)
	if err != nil {
		return "", err
	}
	target := u.Host
	var ln net.Listener
	err = n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("listen in the node namespace: %w", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				track(c, true)
				track(up, true)
				defer track(c, false)
				defer track(up, false)
				go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	n.cl.Add("stop the apiserver forwarder", func() error {
		err := ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		return err
	})
	return "https://" + ln.Addr().String(), nil
}

// ForwardKubeconfig forwards the apiserver at host into the node (ForwardAPIServer) and
// writes to a copy of the kubeconfig at from that reaches it from inside the node.
func (n *Node) ForwardKubeconfig(from, host, to string) error {
	server, err := n.ForwardAPIServer(host)
	if err != nil {
		return err
	}
	return WriteKubeconfig(from, server, to)
}

// WriteKubeconfig copies the kubeconfig at from to to, with server as every cluster's
// address.
func WriteKubeconfig(from, server, to string) error {
	cfg, err := clientcmd.LoadFromFile(from)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	return clientcmd.WriteToFile(*cfg, to)
}
