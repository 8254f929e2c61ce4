// Package compose is the multi-PoP lab: one topology, docker-compose.yml,
// brought up by Docker Compose or natively in network namespaces, with the
// same emulated intercontinental round trips either way. Command lab
// (compose/cmd/lab) is its front end; the Dockerfile beside this file builds
// the lab's image, and lab/geodns.yaml is the lab's GeoDNS configuration.
//
// Its jobs, in the order a lab needs them: read the topology, turn its RTT
// matrix into per-host delays, install them (netem or a userspace delay
// line), run the lab (in Docker, or natively), make Docker's base images
// where nothing can be pulled, check a machine before docker compose up, and
// measure that the lab's round trips are the matrix's.
//
// # The topology
//
// [Load] reads docker-compose.yml with compose-go, the loader Compose itself
// uses, so a file Load accepts is one Docker accepts, and it needs no
// engine; every profile is included (the on-demand browser is a lab host
// too). The result is a [Topology]: the lab subnet (networks.lab), each
// service's static address, command line and region (the x-lab region
// prefix that holds its address), the host addresses Docker publishes ports
// on, and, from the x-lab extension block, the RTT matrix ("same" and every
// region pair) and the anycast hosts (geodns: the same one-way delay from
// everyone). Every problem is reported at once, each naming its field: a
// missing or unknown region pair, overlapping regions. Neither runner
// keeps addresses or delays of its own, so they cannot drift apart.
//
// A region is where a host sits on the network, not where GeoDNS places
// it: client-moved (region moved, 10.77.4.0/24) is 10 ms from na and 90 ms
// from eu and ap, while lab/geodns.yaml's locator puts its /24 in eu, a
// client whose geography and network disagree.
//
// # Delays
//
// [Topology.DelayPlan] turns the matrix into one host's egress plan: a host
// holds back what it sends to each region by half the round trip between
// the regions, and what it sends to an anycast host by that host's one-way
// delay, which the anycast host adds to everything it sends; the other half
// of each round trip is the far side's. The plan groups the distinct delays
// into bands, its rules longest prefix first. Three mechanisms install a
// plan:
//
//   - netem ([ApplyDelays]): an HTB root on the interface, one netem qdisc
//     per band and one u32 filter per rule, set through netlink. It needs
//     sch_netem, sch_htb and cls_u32 in the kernel.
//   - The TUN delay line (the native runner's userspace backend): each
//     host's interface is a TUN device, and the lab process forwards every
//     packet after its sender's delay, one queue per destination so that a
//     pair's packets keep their order.
//   - The NFQUEUE delay line ([StartQueueDelay], a container on a kernel
//     without netem): an iptables rule (mangle OUTPUT, to the lab subnet,
//     --queue-bypass so that packets pass undelayed if the line dies)
//     queues what the container sends, and each packet is accepted once its
//     band's delay has passed; packets wait in the kernel, one FIFO per
//     band.
//
// lab link changes a host's delays while the lab runs: [DelayPlan.WithExtra]
// adds an extra one-way delay to every band of the host's plan (every
// round trip to it grows by that much; 0 restores the matrix), which the
// netem backend applies by changing its band qdiscs in place and the
// delay lines by swapping the plan they look packets up in. The lines live
// in long-running processes, so lab link asks them over a unix socket
// ([LinkServer], [SetLinkDelayAt]): natively the lab up process
// ([Runner.SetLinkDelay], which logs the change), in Docker the container's
// lab delay process ([ContainerDelay.SetLinkDelay]); where netem delays a
// container no process stays, and lab link inside it changes the qdiscs
// itself ([SetContainerLinkDelay]).
//
// [ChooseDelay] resolves -delay auto|netem|userspace against the running
// kernel (auto is netem where the kernel can do it) and says why; asking
// for netem where the kernel cannot is an error that names the way out.
//
// # The Docker lab
//
// Every service's entrypoint in docker-compose.yml is lab delay -self NAME --
// CMD. [ApplyContainerDelay] installs the service's plan inside its own
// container: netem, after which lab delay execs the service, or the NFQUEUE
// line, which runs in the lab process with the service as its child. The
// choice and the plan ([ContainerDelay.Describe]) are the container's first
// log line and the text of [StatusFile] (/run/lab-delay). Either backend
// needs only cap_add NET_ADMIN. [Docker] drives a running lab from Go through the
// machine's Compose (the docker compose plugin, or docker-compose 1.29):
// Run, Exec, Health and WaitHealthy, Calibrate, and Leftovers for tests that
// must leave nothing behind.
//
// [MakeImages] (lab images) makes the two base images compose/Dockerfile
// names, debian:bookworm-slim and golang:1.26-bookworm, on hosts that cannot
// pull them: debootstrap --variant=minbase bookworm, and the same root with
// the host's GOROOT and this module's dependencies from the host's module
// cache (GOPROXY=off). The same Dockerfile then builds with no registry.
//
// [Preflight] (lab preflight) checks a machine before docker compose up: a
// Docker engine of 20.10 or newer ([DockerVersion]), Compose
// ([ComposeCommand]), the lab subnet against other Docker networks and the
// host's interfaces (an overlap's error gives the command that moves the
// lab), and the published host addresses; it reports every problem at once.
//
// # The native lab
//
// [Up] builds the lab's network on one machine: a network namespace per
// host, its address on interface lab0, geodns as its resolver
// (/etc/netns/NS/resolv.conf), and its delays by the chosen backend (netem:
// lab0 is a veth on a bridge in one more namespace, edgecdn-bridge by
// default; userspace: lab0 is a TUN device). [StartLab] is the whole lab
// (lab up): it builds the programs, brings the network up, and starts each
// service inside its namespace with its command line from
// docker-compose.yml (container paths mapped to the checkout and the state
// directory, by default /var/lib/edgecdn-lab), in dependency order, waiting
// for each health check and then for geodns to see every PoP healthy. The
// services' lab delay entrypoint is not run: [Up] has installed the same
// plans. A [Runner] also stops and restarts single services, for the
// drills; [Attach] reaches namespaces another lab process brought up (lab
// status, rtt, exec).
//
// # Calibration
//
// Both runners measure every pair of hosts and set each beside the matrix:
// natively with UDP echoes through the lab's own delays ([Runner.Calibrate],
// at the end of lab up; lab rtt prints the same measurements for a running
// lab), in Docker with ping inside the containers ([Docker.Calibrate], lab
// rtt -docker). A pair below the matrix, or more than 2 ms + 5% above it, is
// an error that carries the whole table.
//
// # Watching it
//
// Package compose/view is the lab's live view (health, load, hit ratio,
// TTFB and GeoDNS's answer per region, the RTT matrix), served by lab up on
// the host and by the view service (lab view) in Docker; the native runner
// starts no process for that service. prometheus.yml beside this file is a
// scrape configuration for every service's /metrics.
package compose
