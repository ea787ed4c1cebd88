// cnidriver: a small cnitool-style runtime built on libcni, used by the cni-ipam integration tests
// and by scripts/demo.sh.
//
//	cnidriver add|check|del <netname> <netns-path>
//	cnidriver gc|status <netname> [<netns-path>]
//
// Environment (as cnitool): NETCONFPATH (default /etc/cni/net.d), CNI_PATH, CNI_ARGS (K=V;K=V),
// CAP_ARGS (JSON capability args, e.g. {"ips":["10.0.0.5/24"]}), CNI_IFNAME (default eth0),
// CNI_CONTAINERID (default derived from the netns path like cnitool: "cnitool-" + sha512[:10]).
// Our additions: CNI_CACHE_DIR (libcni's result cache, default /var/lib/cni) and, for gc,
// CNI_VALID_ATTACHMENTS (a JSON list of {"containerID","ifname"} or "cid/ifname,cid/ifname"; when
// unset, the attachments of this network that libcni has cached results for).
//
// add prints the result JSON; a failing plugin's CNI error is printed as JSON on stdout (exit 1).
//
// libcni 1.1.2 has no GC or STATUS, so gc/status exec the plugins themselves through pkg/invoke with
// CNI_COMMAND=GC/STATUS and a config of cniVersion 1.1.0 (GC adds "cni.dev/valid-attachments"). A
// plugin that does not support 1.1.0 (Debian's bridge 1.1.1 knows up to 1.0.0) is not called; its
// IPAM plugin is called directly instead, as the main plugin would delegate to it.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

const (
	envCNIPath        = "CNI_PATH"
	envNetDir         = "NETCONFPATH"
	envCapabilityArgs = "CAP_ARGS"
	envCNIArgs        = "CNI_ARGS"
	envCNIIfname      = "CNI_IFNAME"
	envContainerID    = "CNI_CONTAINERID"
	envCacheDir       = "CNI_CACHE_DIR"
	envValid          = "CNI_VALID_ATTACHMENTS"

	defaultNetDir = "/etc/cni/net.d"
	defaultIfname = "eth0"
	gcVersion     = "1.1.0"
)

type attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func usage() {
	exe := filepath.Base(os.Args[0])
	fmt.Fprintf(os.Stderr, "usage: %s add|check|del <netname> <netns-path>\n", exe)
	fmt.Fprintf(os.Stderr, "       %s gc|status <netname> [<netns-path>]\n", exe)
	fmt.Fprintf(os.Stderr, "env: NETCONFPATH CNI_PATH CNI_ARGS CAP_ARGS CNI_IFNAME CNI_CONTAINERID CNI_CACHE_DIR CNI_VALID_ATTACHMENTS\n")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	cmd, netName := os.Args[1], os.Args[2]
	netns := ""
	if len(os.Args) > 3 {
		netns = os.Args[3]
	}
	switch cmd {
	case "add", "check", "del":
		if len(os.Args) != 4 {
			usage()
		}
	case "gc", "status":
		if len(os.Args) > 4 {
			usage()
		}
	default:
		usage()
	}
	os.Exit(run(cmd, netName, netns))
}

// fail reports err: a plugin's CNI error as JSON on stdout, anything else on stderr.
func fail(err error) int {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out, _ := json.MarshalIndent(cniErr, "", "    ")
		fmt.Println(string(out))
	}
	fmt.Fprintf(os.Stderr, "cnidriver: %v\n", err)
	return 1
}

func run(cmd, netName, netns string) int {
	netdir := os.Getenv(envNetDir)
	if netdir == "" {
		netdir = defaultNetDir
	}
	netconf, err := libcni.LoadConfList(netdir, netName)
	if err != nil {
		return fail(fmt.Errorf("loading network %q from %s: %w", netName, netdir, err))
	}
	paths := filepath.SplitList(os.Getenv(envCNIPath))
	cninet := libcni.NewCNIConfigWithCacheDir(paths, os.Getenv(envCacheDir), nil)
	ctx := context.TODO()

	if cmd == "gc" || cmd == "status" {
		return runGCStatus(ctx, cninet, netconf, strings.ToUpper(cmd), paths)
	}

	rt, err := runtimeConf(netns)
	if err != nil {
		return fail(err)
	}
	switch cmd {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if err != nil {
			return fail(err)
		}
		if err := result.Print(); err != nil {
			return fail(err)
		}
	case "check":
		if err := cninet.CheckNetworkList(ctx, netconf, rt); err != nil {
			return fail(err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, netconf, rt); err != nil {
			return fail(err)
		}
	}
	return 0
}

func runtimeConf(netns string) (*libcni.RuntimeConf, error) {
	var capabilityArgs map[string]interface{}
	if raw := os.Getenv(envCapabilityArgs); raw != "" {
		if err := json.Unmarshal([]byte(raw), &capabilityArgs); err != nil {
			return nil, fmt.Errorf("%s is not a JSON object: %w", envCapabilityArgs, err)
		}
	}
	var cniArgs [][2]string
	if raw := os.Getenv(envCNIArgs); raw != "" {
		for _, pair := range strings.Split(raw, ";") {
			if pair == "" {
				continue
			}
			kv := strings.SplitN(pair, "=", 2)
			if len(kv) != 2 {
				return nil, fmt.Errorf("invalid %s pair %q (expected KEY=VALUE)", envCNIArgs, pair)
			}
			cniArgs = append(cniArgs, [2]string{kv[0], kv[1]})
		}
	}
	ifName := os.Getenv(envCNIIfname)
	if ifName == "" {
		ifName = defaultIfname
	}
	containerID := os.Getenv(envContainerID)
	if containerID == "" {
		// as cnitool: a stable ID per namespace path
		s := sha512.Sum512([]byte(netns))
		containerID = fmt.Sprintf("cnitool-%x", s[:10])
	}
	return &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           cniArgs,
		CapabilityArgs: capabilityArgs,
	}, nil
}

// ---------------------------------------------------------------------------- GC and STATUS

func runGCStatus(ctx context.Context, cninet *libcni.CNIConfig, list *libcni.NetworkConfigList, verb string, paths []string) int {
	var valid []attachment
	if verb == "GC" {
		var err error
		if valid, err = validAttachments(list.Name); err != nil {
			return fail(err)
		}
	}
	called := 0
	var failures []error
	for _, net := range list.Plugins {
		target, via, err := gcTarget(ctx, cninet, net)
		if err != nil {
			return fail(err)
		}
		if target == "" {
			fmt.Fprintf(os.Stderr, "cnidriver: %s: plugin %s supports no cniVersion %s (and has no IPAM plugin that does): not called\n", strings.ToLower(verb), net.Network.Type, gcVersion)
			continue
		}
		conf, err := gcConfig(net.Bytes, list.Name, verb, valid)
		if err != nil {
			return fail(err)
		}
		pluginPath, err := invoke.FindInPath(target, paths)
		if err != nil {
			return fail(err)
		}
		args := &invoke.Args{Command: verb, Path: strings.Join(paths, string(os.PathListSeparator))}
		err = invoke.ExecPluginWithoutResult(ctx, pluginPath, conf, args, nil)
		desc := target
		if via != "" {
			desc = fmt.Sprintf("%s (ipam of %s)", target, via)
		}
		called++
		if err != nil {
			failures = append(failures, fmt.Errorf("plugin %s failed (%s): %w", desc, strings.ToLower(verb), err))
			continue
		}
		fmt.Fprintf(os.Stderr, "cnidriver: %s: %s ok\n", strings.ToLower(verb), desc)
	}
	if len(failures) > 0 {
		for _, e := range failures[1:] {
			fmt.Fprintf(os.Stderr, "cnidriver: %v\n", e)
		}
		return fail(failures[0])
	}
	if called == 0 {
		fmt.Fprintf(os.Stderr, "cnidriver: %s: no plugin of network %q supports cniVersion %s\n", strings.ToLower(verb), list.Name, gcVersion)
		return 3
	}
	return 0
}

// gcTarget: the plugin itself when it supports 1.1.0, else its IPAM plugin when that does.
func gcTarget(ctx context.Context, cninet *libcni.CNIConfig, net *libcni.NetworkConfig) (string, string, error) {
	if supports(ctx, cninet, net.Network.Type) {
		return net.Network.Type, "", nil
	}
	ipamType := net.Network.IPAM.Type
	if ipamType != "" && supports(ctx, cninet, ipamType) {
		return ipamType, net.Network.Type, nil
	}
	return "", "", nil
}

func supports(ctx context.Context, cninet *libcni.CNIConfig, plugin string) bool {
	info, err := cninet.GetVersionInfo(ctx, plugin)
	if err != nil {
		return false
	}
	for _, v := range info.SupportedVersions() {
		if v == gcVersion {
			return true
		}
	}
	return false
}

func gcConfig(pluginBytes []byte, name, verb string, valid []attachment) ([]byte, error) {
	conf := map[string]interface{}{}
	if err := json.Unmarshal(pluginBytes, &conf); err != nil {
		return nil, fmt.Errorf("decoding plugin config: %w", err)
	}
	conf["name"] = name
	conf["cniVersion"] = gcVersion
	if verb == "GC" {
		if valid == nil {
			valid = []attachment{}
		}
		conf["cni.dev/valid-attachments"] = valid
	}
	return json.Marshal(conf)
}

// validAttachments: CNI_VALID_ATTACHMENTS when set, else what libcni's cache holds for the network.
func validAttachments(netName string) ([]attachment, error) {
	raw, set := os.LookupEnv(envValid)
	if set {
		raw = strings.TrimSpace(raw)
		out := []attachment{}
		if strings.HasPrefix(raw, "[") {
			if err := json.Unmarshal([]byte(raw), &out); err != nil {
				return nil, fmt.Errorf("%s is not a JSON list of {containerID, ifname}: %w", envValid, err)
			}
			return out, nil
		}
		for _, item := range strings.Split(raw, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			cid, ifname := item, ""
			if i := strings.LastIndex(item, "/"); i >= 0 {
				cid, ifname = item[:i], item[i+1:]
			}
			out = append(out, attachment{ContainerID: cid, IfName: ifname})
		}
		return out, nil
	}
	cacheDir := os.Getenv(envCacheDir)
	if cacheDir == "" {
		cacheDir = libcni.CacheDir
	}
	files, err := filepath.Glob(filepath.Join(cacheDir, "results", netName+"-*"))
	if err != nil {
		return nil, err
	}
	out := []attachment{}
	for _, f := range files {
		data, err := ioutil.ReadFile(f)
		if err != nil {
			continue
		}
		var cached struct {
			Kind        string `json:"kind"`
			ContainerID string `json:"containerId"`
			IfName      string `json:"ifName"`
			NetworkName string `json:"networkName"`
		}
		if json.Unmarshal(data, &cached) != nil || cached.Kind != libcni.CNICacheV1 || cached.NetworkName != netName {
			continue
		}
		out = append(out, attachment{ContainerID: cached.ContainerID, IfName: cached.IfName})
	}
	return out, nil
}
