// Package bench measures what a CDN user feels, and what it costs the
// origin, five ways:
//
//   - Probe times requests one at a time, split into their phases (DNS,
//     connect, TLS or QUIC handshake, first byte, total), over HTTP/1.1,
//     HTTP/2 and HTTP/3 on cold, warm, resumed and 0-RTT connections, with
//     the cache status and the PoP that answered, and, from the PoP's
//     Server-Timing (ParseServerTiming), the TTFB split into client<->PoP,
//     PoP and PoP<->origin; WriteTable and WriteJSON print the results
//     (bench ttfb).
//   - Load generates load, closed loop (connections times streams) or open
//     loop (a fixed rate, each latency taken from the request's intended
//     send time so that a stalled server shows), and summarises it: req/s,
//     latency percentiles, statuses, errors, hit ratio and, if asked, a
//     server's memory (bench load).
//   - Summarize and Compare set two runs of either side by side (bench
//     compare).
//   - RunLab measures, from every client region of the lab, hits, misses
//     and requests direct to the origin, each phase's p50 and p99 beside
//     its floor from the lab's RTT matrix; WriteLabReport writes the
//     report as markdown and as HTML, a table and a chart (bench lab).
//   - GenerateTrace and ReadTraceCSV make a request trace (Zipf
//     popularity, lognormal sizes, one-hit wonders, churn), Replay sends it
//     to a cache with a counting origin behind it and reports object and
//     byte hit ratios from both sides, beside the offline references exact
//     LRU and the hindsight static oracle (SimulateLRU, StaticOracle), at
//     the same memory budget (bench replay).
//
// The failure drills against the same lab are package bench/drill; they
// share the lab's description (LabConfig, LabConfigFrom) and the measuring
// pieces (Histogram, RSSKiB, ErrorKind, CacheVerdict) from here. The
// program is bench/cmd/bench.
package bench
