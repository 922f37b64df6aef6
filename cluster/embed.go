package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embedded is a running in-process NATS server.
type embedded struct {
	srv     *server.Server
	tempDir string // removed on stop; "" when the caller chose StoreDir
}

// startEmbedded starts the in-process server for o and waits until it
// accepts clients.
func startEmbedded(o *Options) (*embedded, error) {
	e := o.Embedded
	host, port, err := splitAddr(e.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: Options.Embedded.ClientAddr %q: %w", e.ClientAddr, err)
	}
	so := &server.Options{
		ServerName:         o.Name,
		Host:               host,
		Port:               port,
		NoSigs:             true,
		JetStream:          true,
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  max(1<<30, 4*o.History.MaxBytes),
		MaxPayload:         int32(max(o.History.MaxMessage+4096, server.MAX_PAYLOAD_SIZE)),
	}
	routes := make([]*url.URL, 0, len(e.Routes))
	for _, r := range e.Routes {
		u, err := routeURL(r)
		if err != nil {
			return nil, err
		}
		routes = append(routes, u)
	}
	clusterAddr := e.ClusterAddr
	if clusterAddr == "" && len(routes) > 0 {
		for _, u := range routes {
			if !isLoopback(u.Hostname()) {
				return nil, fmt.Errorf("cluster: Options.Embedded.Routes include %q but ClusterAddr is empty: set ClusterAddr to an address the other servers can reach", u.Host)
			}
		}
		clusterAddr = "127.0.0.1:0"
	}
	if clusterAddr != "" {
		chost, cport, err := splitAddr(clusterAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster: Options.Embedded.ClusterAddr %q: %w", clusterAddr, err)
		}
		if cport == server.RANDOM_PORT {
			// Clustered JetStream needs at least one configured route
			// before it starts, and a seed has none but itself: pick the
			// port now so that the seed can name its own address.
			if cport, err = freePort(chost); err != nil {
				return nil, fmt.Errorf("cluster: picking a port for Options.Embedded.ClusterAddr %q: %w", clusterAddr, err)
			}
		}
		so.Cluster = server.ClusterOpts{Name: "ebb-" + o.Cluster, Host: chost, Port: cport}
		if len(routes) == 0 {
			// A route to itself satisfies the check; the server detects
			// it and drops the connection.
			routes = append(routes, &url.URL{Scheme: "nats-route", Host: net.JoinHostPort(dialHost(chost), strconv.Itoa(cport))})
		}
		so.Routes = routes
	}
	em := &embedded{}
	so.StoreDir = e.StoreDir
	if so.StoreDir == "" {
		if em.tempDir, err = os.MkdirTemp("", "ebb-cluster-"+o.Name+"-"); err != nil {
			return nil, fmt.Errorf("cluster: creating a store directory for the embedded NATS server: %w (set Options.Embedded.StoreDir)", err)
		}
		so.StoreDir = em.tempDir
	}
	srv, err := server.NewServer(so)
	if err != nil {
		em.removeTemp()
		return nil, fmt.Errorf("cluster: configuring the embedded NATS server: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(natsLogger{o.Logger.With(slog.String("nats", o.Name))}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		em.removeTemp()
		return nil, fmt.Errorf("cluster: the embedded NATS server did not accept clients on %s within 10s (port taken? see the log)", e.ClientAddr)
	}
	em.srv = srv
	return em, nil
}

// stop shuts the server down (its raft groups step down first, so the
// others elect new leaders at once) and removes a temporary store.
func (e *embedded) stop() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.removeTemp()
}

func (e *embedded) removeTemp() {
	if e.tempDir != "" {
		_ = os.RemoveAll(e.tempDir)
	}
}

// clientURL is the URL clients use to reach the server.
func (e *embedded) clientURL() string { return e.srv.ClientURL() }

// routeURL is the URL other servers use to route to this one, or "".
func (e *embedded) routeURL() string {
	a := e.srv.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + net.JoinHostPort(dialHost(a.IP.String()), strconv.Itoa(a.Port))
}

// splitAddr parses host:port for nats-server, where port 0 means "random"
// (nats-server's own 0 means its default port 4222).
func splitAddr(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 0 (random) to 65535", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, port, nil
}

// routeURL parses a route as given in Options.Embedded.Routes.
func routeURL(r string) (*url.URL, error) {
	s := r
	if !strings.Contains(s, "://") {
		s = "nats-route://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("cluster: Options.Embedded.Routes entry %q: want nats-route://host:port or host:port", r)
	}
	return u, nil
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// dialHost turns a listen host into one that can be dialled.
func dialHost(h string) string {
	if h == "" || h == "0.0.0.0" || h == "::" {
		return "127.0.0.1"
	}
	return h
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// natsLogger sends the embedded server's log to slog: notices at debug
// (the server is chatty), warnings and errors at their level. Fatal is
// logged as an error; it never exits the process.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, a ...any) { n.l.Debug(fmt.Sprintf(f, a...)) }
func (n natsLogger) Warnf(f string, a ...any)   { n.l.Warn(fmt.Sprintf(f, a...)) }
func (n natsLogger) Fatalf(f string, a ...any)  { n.l.Error(fmt.Sprintf(f, a...)) }
func (n natsLogger) Errorf(f string, a ...any)  { n.l.Error(fmt.Sprintf(f, a...)) }
func (n natsLogger) Debugf(f string, a ...any)  {}
func (n natsLogger) Tracef(f string, a ...any)  {}
