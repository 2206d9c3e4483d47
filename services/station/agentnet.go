package station

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// DefaultDeviceNetworks are the networks a station reaches device agents
// on when its configuration names none: loopback only, where the demo and
// a single-machine line run their agents. A factory names its device
// networks (for example 10.20.0.0/16, the line's own VLAN); the station
// contacts no address outside them, so a caller cannot aim it at the
// ledger's, a cloud metadata service's or any other internal address.
var DefaultDeviceNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// ErrAgentNetwork is an agent address outside the station's device
// networks: refused before anything is contacted.
var ErrAgentNetwork = errors.New("the agent's address is outside the station's device networks")

// ParseDeviceNetworks parses a comma-separated list of CIDR prefixes
// (custodyd's and `custody station run`'s --device-networks).
func ParseDeviceNetworks(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("device network %q: not a CIDR prefix such as 10.20.0.0/16: %v", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// inNetworks reports whether ip is in one of nets.
func inNetworks(nets []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// checkAgentHost resolves host and refuses it unless every address it
// names is in nets. The dialer checks again at connect time (agentDialer),
// so a name that resolves differently a moment later gains nothing.
func checkAgentHost(nets []netip.Prefix, host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !inNetworks(nets, ip) {
			return fmt.Errorf("%w (%s)", ErrAgentNetwork, ip)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return fmt.Errorf("%w: %s does not resolve", ErrAgentNetwork, host)
	}
	for _, ip := range ips {
		if !inNetworks(nets, ip) {
			return fmt.Errorf("%w (%s is %s)", ErrAgentNetwork, host, ip)
		}
	}
	return nil
}

// agentClient returns hc with a transport whose dialer connects only to
// addresses in nets and which follows no redirect.
func agentClient(hc *http.Client, nets []netip.Prefix) *http.Client {
	c := *hc
	var tr *http.Transport
	if t, ok := c.Transport.(*http.Transport); ok && t != nil {
		tr = t.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr.Proxy = nil // the station talks to the device itself
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !inNetworks(nets, ap.Addr()) {
			return fmt.Errorf("%w (%s)", ErrAgentNetwork, address)
		}
		return nil
	}}
	tr.DialContext = d.DialContext
	c.Transport = tr
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}
