package websocket

// Exported views of the extension machinery, for tools that inspect a
// handshake without acting on it (ebb probe) and for users of other
// WebSocket libraries who want the same verdict ebb's Dial would reach.

// Extension is one element of a Sec-WebSocket-Extensions header.
type Extension struct {
	Name   string
	Params []ExtensionParam
}

// ExtensionParam is one extension parameter; HasValue tells
// "client_max_window_bits" from "client_max_window_bits=15".
type ExtensionParam struct {
	Name, Value string
	HasValue    bool
}

// ParseExtensions parses Sec-WebSocket-Extensions header lines (RFC 6455
// §9.1) as one list, strictly: the error quotes the offending line and says
// where it went wrong.
func ParseExtensions(headerValues []string) ([]Extension, error) {
	offers, err := parseExtensions(headerValues)
	if err != nil {
		return nil, err
	}
	out := make([]Extension, len(offers))
	for i, o := range offers {
		out[i].Name = o.name
		for _, p := range o.params {
			out[i].Params = append(out[i].Params, ExtensionParam{Name: p.name, Value: p.value, HasValue: p.hasValue})
		}
	}
	return out, nil
}

// CheckRequirements tells what Dial would decide about a handshake
// response: given the client's compression options and requirements, and
// the server's Sec-WebSocket-Extensions answer, it returns the requirements
// that are not met (each with the reason), or an error when the answer is
// not one RFC 7692 allows for the offer Dial would have sent. A non-empty
// result means Dial would close with 1010 Mandatory Extension.
func CheckRequirements(compression *CompressionOptions, reqs []Requirement, answered []string) (missing []string, err error) {
	if err := validateRequirements(reqs); err != nil {
		return nil, err
	}
	opts := compressionForRequirements(compression, reqs)
	var p *deflateParams
	raw := joinHeader(answered)
	if raw != "" && opts != nil {
		p, err = parseDeflateResponse(answered, opts)
		if err != nil {
			return nil, err
		}
	}
	return checkRequirements(reqs, p, raw), nil
}

// OfferFor returns the Sec-WebSocket-Extensions value Dial sends for these
// options and requirements, or "" when it offers nothing.
func OfferFor(compression *CompressionOptions, reqs []Requirement) string {
	opts := compressionForRequirements(compression, reqs)
	if opts == nil {
		return ""
	}
	return deflateOffer(opts)
}

func joinHeader(values []string) string {
	out := ""
	for _, v := range values {
		if v == "" {
			continue
		}
		if out != "" {
			out += ", "
		}
		out += v
	}
	return out
}
