package drill

import "strings"

// HostileRequest is a malformed or smuggling-shaped HTTP/1.1 request, as
// raw bytes for one connection, with what a server may answer.
type HostileRequest struct {
	Name string
	Raw  string
	// Also is a status that is right besides a 4xx or a closed connection
	// (RFC 9112 lets a server repair some framing; 501 and 505 are the
	// answers to an unknown coding or version), or 0.
	Also int
}

// HostileHTTP1 is a corpus of malformed HTTP/1.1 requests for a server
// that serves host: request smuggling shapes (CL+TE, two lengths, bare LF),
// broken framing, oversize and missing headers, bad versions, CONNECT. The
// smuggled requests ask for /smuggled, so an origin's log shows whether
// one got through. The hostile drill sends it to a lab PoP and the PoP's
// own tests to a PoP on loopback: each request must get a 4xx, a closed
// connection or its Also.
func HostileHTTP1(host string) []HostileRequest {
	h := "Host: " + host + "\r\n"
	return []HostileRequest{
		// Processed as chunked, then the connection is closed (RFC 9112 6.1).
		{"CL and TE together", "POST /x HTTP/1.1\r\n" + h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + h + "\r\n", 200},
		// Transfer-Encoding in HTTP/1.0 is faulty framing: processed, then
		// the connection is closed (RFC 9112 6.1).
		{"HTTP/1.0 with TE", "POST /x HTTP/1.0\r\n" + h + "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\n" + h + "\r\n", 200},
		{"two Content-Lengths", "POST /x HTTP/1.1\r\n" + h + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 0},
		{"bad chunk size", "POST /x HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 0},
		{"TE not chunked last", "POST /x HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501},
		{"oversize header", "GET /x HTTP/1.1\r\n" + h + "X-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", 0},
		{"space in method", "GE T /x HTTP/1.1\r\n" + h + "\r\n", 0},
		{"bad target", "GET x HTTP/1.1\r\n" + h + "\r\n", 0},
		{"no Host", "GET /x HTTP/1.1\r\n\r\n", 0},
		{"two Hosts", "GET /x HTTP/1.1\r\n" + h + "Host: evil.example\r\n\r\n", 0},
		{"header without colon", "GET /x HTTP/1.1\r\n" + h + "Broken\r\n\r\n", 0},
		// A bare LF is a line end a server may accept; the PoP re-frames
		// what it forwards, so it cannot desynchronise the origin.
		{"bare LF smuggle", "GET /x HTTP/1.1\n" + strings.TrimSuffix(h, "\r\n") + "\nContent-Length: 0\n\nGET /smuggled HTTP/1.1\nHost: evil.example\n\n", 200},
		// A server may replace obs-fold with a space (RFC 9112 5.2).
		{"obsolete line folding", "GET /x HTTP/1.1\r\n" + h + "X-A: a\r\n b\r\n\r\n", 200},
		{"HTTP/0.9", "GET /x\r\n\r\n", 0},
		{"unknown version", "GET /x HTTP/7.1\r\n" + h + "\r\n", 505},
		{"CONNECT to a served host", "CONNECT " + host + ":443 HTTP/1.1\r\nHost: " + host + ":443\r\n\r\n", 0},
		{"NUL in header", "GET /x HTTP/1.1\r\n" + h + "X-A: a\x00b\r\n\r\n", 0},
		{"space before colon", "GET /x HTTP/1.1\r\n" + h + "Content-Length : 5\r\n\r\nabcde", 0},
		{"negative Content-Length", "POST /x HTTP/1.1\r\n" + h + "Content-Length: -1\r\n\r\n", 0},
	}
}
