package closecode

// The registry proper. Texts are written for the person reading an error:
// what happened, when you see it, what to do.

const (
	rfc6455 = "RFC 6455 §7.4.1"
	iana    = "IANA WebSocket Close Code Number Registry"
)

var registry = map[Code]Info{
	NormalClosure: {
		Code: NormalClosure, Name: "Normal Closure", Sender: SenderEither,
		Description: "The connection finished its purpose and was closed on purpose.",
		When:        "An endpoint called Close after its work was done, or answered the peer's normal close.",
		Fix:         "Nothing to fix. Reconnect only if the application wants a persistent link.",
		Retry:       Done, OnWire: true, Reference: rfc6455,
	},
	GoingAway: {
		Code: GoingAway, Name: "Going Away", Sender: SenderEither,
		Description: "The endpoint is going away: a server shutting down or a browser leaving the page.",
		When:        "A server stopped or was redeployed, or the browser tab was closed or navigated away.",
		Fix:         "Clients reconnect with backoff; servers that restart on purpose should prefer 1012 so clients know to come back soon.",
		Retry:       Backoff, OnWire: true, Reference: rfc6455,
	},
	ProtocolError: {
		Code: ProtocolError, Name: "Protocol Error", Sender: SenderEither,
		Description: "The endpoint received a frame that breaks RFC 6455: bad opcode, reserved bits, wrong masking, a bad control frame or close payload.",
		When:        "One side has a bug or speaks a different protocol (for example a proxy that mangles frames).",
		Fix:         "Look at the close reason and fix the side that sent the bad frame; retrying repeats the failure.",
		Retry:       Permanent, OnWire: true, Reference: rfc6455,
	},
	UnsupportedData: {
		Code: UnsupportedData, Name: "Unsupported Data", Sender: SenderEither,
		Description: "The endpoint received a type of data it cannot accept, such as binary on a text-only endpoint.",
		When:        "The client and server disagree on message types.",
		Fix:         "Send the message type the endpoint expects; check the subprotocol both sides agreed on.",
		Retry:       Permanent, OnWire: true, Reference: rfc6455,
	},
	Reserved1004: {
		Code: Reserved1004, Name: "Reserved", Sender: SenderLocal,
		Description: "Reserved by RFC 6455; its meaning may be defined in the future.",
		When:        "Never in a correct implementation. Receiving it is a protocol error (answered with 1002).",
		Fix:         "The sender must use a defined code instead.",
		Retry:       Invalid, OnWire: false, Reference: rfc6455,
	},
	NoStatusReceived: {
		Code: NoStatusReceived, Name: "No Status Received", Sender: SenderLocal,
		Description: "The peer's Close frame carried no status code. Never sent on the wire.",
		When:        "The peer closed with an empty Close frame.",
		Fix:         "Nothing on the wire to fix; whether to reconnect depends on what the application was doing.",
		Retry:       Depends, OnWire: false, Reference: rfc6455,
	},
	AbnormalClosure: {
		Code: AbnormalClosure, Name: "Abnormal Closure", Sender: SenderLocal,
		Description: "The connection was lost without a Close frame. Never sent on the wire.",
		When:        "Network failure, a crashed peer, a proxy timeout, or a handshake that failed (a browser sees an HTTP 503 refusal as 1006).",
		Fix:         "Reconnect with backoff; if it keeps happening, look at proxies, idle timeouts and the server's logs.",
		Retry:       Backoff, OnWire: false, Reference: rfc6455,
	},
	InvalidFramePayloadData: {
		Code: InvalidFramePayloadData, Name: "Invalid Frame Payload Data", Sender: SenderEither,
		Description: "A message's data was not consistent with its type, for example a text message that is not valid UTF-8 or a corrupt compressed stream.",
		When:        "A sender put binary data in a text message, or compression state went out of sync.",
		Fix:         "Send binary data as binary messages and make text valid UTF-8; retrying repeats the failure.",
		Retry:       Permanent, OnWire: true, Reference: rfc6455,
	},
	PolicyViolation: {
		Code: PolicyViolation, Name: "Policy Violation", Sender: SenderEither,
		Description: "The endpoint received a message that violates its policy (generic code when 1003 and 1009 do not fit).",
		When:        "Authentication or authorization failed, a rate rule was broken, or the origin was refused after the upgrade.",
		Fix:         "Read the close reason and change what the client sends or is allowed to do; retrying repeats the failure.",
		Retry:       Permanent, OnWire: true, Reference: rfc6455,
	},
	MessageTooBig: {
		Code: MessageTooBig, Name: "Message Too Big", Sender: SenderEither,
		Description: "A message was larger than the receiver's limit (for compressed messages, the limit applies to the decompressed size).",
		When:        "The sender sent more than the receiver's read limit.",
		Fix:         "Send smaller messages, or raise the receiver's read limit if the size is legitimate.",
		Retry:       Permanent, OnWire: true, Reference: rfc6455,
	},
	MandatoryExtension: {
		Code: MandatoryExtension, Name: "Mandatory Extension", Sender: SenderClient,
		Description: "Sent by the client: the server's handshake response did not negotiate an extension the client requires (most often permessage-deflate). A server never sends it.",
		When:        "The client requires an extension and the server's Sec-WebSocket-Extensions response header lacks it, or accepts it with parameters the client cannot use.",
		Fix:         "Look at the Sec-WebSocket-Extensions response header: either enable the extension on the server (and any proxy in between), or make the extension optional on the client. Retrying without a configuration change fails the same way.",
		Retry:       UntilConfigChange, OnWire: true, Reference: rfc6455,
	},
	InternalError: {
		Code: InternalError, Name: "Internal Error", Sender: SenderEither,
		Description: "The endpoint hit an unexpected condition that prevented it from fulfilling the request.",
		When:        "The server's handler failed or panicked.",
		Fix:         "Clients reconnect with backoff; operators look at the server's logs.",
		Retry:       Backoff, OnWire: true, Reference: iana,
	},
	ServiceRestart: {
		Code: ServiceRestart, Name: "Service Restart", Sender: SenderServer,
		Description: "The server is restarting and will be back shortly.",
		When:        "A deploy or a graceful shutdown is draining connections.",
		Fix:         "Clients reconnect after a short jittered delay (at least any retry-after= hint in the reason); no action for operators unless the restart never finishes.",
		Retry:       Soon, OnWire: true, Reference: iana,
	},
	TryAgainLater: {
		Code: TryAgainLater, Name: "Try Again Later", Sender: SenderServer,
		Description: "The server is up but temporarily cannot serve this client: it is overloaded or throttling. Unlike 1012 (a restart) nothing is going down; there is just no room now.",
		When:        "The server is at its connection limit, its handshake rate limit, or under memory or CPU pressure, and refused or shed this connection. The reason may end in retry-after=<seconds>.",
		Fix:         "Clients reconnect with exponential backoff (start at 1 s, double each attempt, with jitter), never sooner than the retry-after= hint. If it persists, operators add capacity, scale out, or lower the number of concurrent connections.",
		Retry:       Backoff, OnWire: true, Reference: iana,
	},
	BadGateway: {
		Code: BadGateway, Name: "Bad Gateway", Sender: SenderServer,
		Description: "A server acting as a gateway or proxy received an invalid response from the upstream server.",
		When:        "A WebSocket proxy could not reach or talk to its backend.",
		Fix:         "Clients reconnect with backoff; operators check the upstream behind the gateway.",
		Retry:       Backoff, OnWire: true, Reference: iana,
	},
	TLSHandshake: {
		Code: TLSHandshake, Name: "TLS Handshake", Sender: SenderLocal,
		Description: "The TLS handshake failed (for example the certificate could not be verified). Never sent on the wire.",
		When:        "Connecting with wss:// to a server whose certificate is not trusted or does not match the host.",
		Fix:         "Fix the certificate or the client's trust store; retrying repeats the failure.",
		Retry:       Permanent, OnWire: false, Reference: rfc6455,
	},
	Unauthorized: {
		Code: Unauthorized, Name: "Unauthorized", Sender: SenderServer,
		Description: "The endpoint requires authentication the client did not provide (the WebSocket analogue of HTTP 401).",
		When:        "A token expired or was missing.",
		Fix:         "Obtain fresh credentials before reconnecting; retrying with the same ones fails.",
		Retry:       Permanent, OnWire: true, Reference: iana,
	},
	Forbidden: {
		Code: Forbidden, Name: "Forbidden", Sender: SenderServer,
		Description: "The client is authenticated but not allowed to do this (the WebSocket analogue of HTTP 403).",
		When:        "The user lacks the permission for the resource.",
		Fix:         "Grant the permission or stop trying; retrying fails.",
		Retry:       Permanent, OnWire: true, Reference: iana,
	},
	Timeout: {
		Code: Timeout, Name: "Timeout", Sender: SenderEither,
		Description: "The endpoint timed out waiting for the peer (the WebSocket analogue of HTTP 408).",
		When:        "The peer was idle or too slow for the endpoint's deadline.",
		Fix:         "Reconnect with backoff; keep the link alive with pings if it is idle on purpose.",
		Retry:       Backoff, OnWire: true, Reference: iana,
	},
}

// order lists the entries of their own in code order.
var order = []Code{
	1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010,
	1011, 1012, 1013, 1014, 1015, 3000, 3003, 3008,
}

type codeRange struct {
	lo, hi Code
	info   Info
}

var ranges = []codeRange{
	{0, 999, Info{
		Name: "Unused", Sender: SenderLocal, Range: true,
		Description: "Codes below 1000 are not used by RFC 6455.",
		When:        "Never in a correct implementation; receiving one is a protocol error (answered with 1002).",
		Fix:         "The sender must use a code from 1000–4999.",
		Retry:       Invalid, Reference: rfc6455,
	}},
	{1016, 2999, Info{
		Name: "Reserved", Sender: SenderLocal, Range: true,
		Description: "Reserved for future RFC 6455 revisions (1016–1999) and for extensions (2000–2999); unassigned today.",
		When:        "Never in a correct implementation; receiving one is a protocol error (answered with 1002).",
		Fix:         "The sender must use an assigned code, 3000–3999 (registered) or 4000–4999 (private use).",
		Retry:       Invalid, Reference: rfc6455,
	}},
	{3000, 3999, Info{
		Name: "Registered", Sender: SenderEither, OnWire: true, Range: true,
		Description: "Registered with IANA by libraries, frameworks and applications on a first-come basis.",
		When:        "A framework or application closed with its own registered code.",
		Fix:         "Look the code up in the IANA registry or the peer's documentation.",
		Retry:       Application, Reference: iana,
	}},
	{4000, 4999, Info{
		Name: "Private Use", Sender: SenderEither, OnWire: true, Range: true,
		Description: "Private use: the meaning is agreed between the application's client and server, not registered.",
		When:        "The application closed with its own code.",
		Fix:         "See the application's documentation; its rules decide whether to reconnect.",
		Retry:       Application, Reference: rfc6455,
	}},
	{5000, 65535, Info{
		Name: "Invalid", Sender: SenderLocal, Range: true,
		Description: "Codes of 5000 and above are not defined by RFC 6455.",
		When:        "Never in a correct implementation; receiving one is a protocol error (answered with 1002).",
		Fix:         "The sender must use a code from 1000–4999.",
		Retry:       Invalid, Reference: rfc6455,
	}},
}

func rangeInfo(c Code) Info {
	for _, r := range ranges {
		if c >= r.lo && c <= r.hi {
			return r.info
		}
	}
	// Negative or beyond 16 bits: cannot even be encoded.
	return Info{
		Name: "Invalid", Sender: SenderLocal,
		Description: "Not a 16-bit close code.",
		When:        "Never.",
		Fix:         "Use a code from 1000–4999.",
		Retry:       Invalid, Reference: rfc6455,
	}
}
