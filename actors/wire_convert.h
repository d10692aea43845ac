// Conversions between the grid's job structs (actors/messages.h) and the wire's message structs
// (net/messages.h). Tensors are copied once each way; everything the wire decoder already
// checked (tensor sizes, enum values) is not checked again.
#pragma once

#include "actors/messages.h"
#include "base/status.h"
#include "net/messages.h"

namespace gpugrid::grid {

net::wire_tensor to_wire_tensor(const tensor& t);
expected<tensor> from_wire_tensor(const net::wire_tensor& w);

net::device_info to_device_info(const device_summary& d, int index);
device_summary from_device_info(const net::device_info& d);
// What a peer's Hello says it offers.
provider_info info_from_hello(const net::hello& h);

net::bid_request to_wire_bid_request(const bid_request& r);
// What a client's BidRequest asks, from the client `client` (the connection's peer).
bid_request from_wire_bid_request(const net::bid_request& r, const key32& client);

// Bids have one model in the program, bid_reply (accepted, or declined with a reason); on the
// wire an accepted bid is a signed Bid and a declined one a BidDecline. These are the only
// conversions between them.
// An accepted bid as a Bid, unsigned (the provider node signs it with its identity).
net::bid to_wire_bid(const bid_reply& r);
net::bid_decline to_wire_decline(const bid_reply& r);
// A provider's Bid or BidDecline as a bid_reply from `provider`.
bid_reply from_wire_bid(const net::bid& b, const key32& provider);
bid_reply from_wire_decline(const net::bid_decline& d, const key32& provider);
// True when the bid carries no signature (an in-process provider's) or a valid one by its
// provider over what it offered (net::bid_statement).
bool bid_signature_ok(const bid_reply& r);
net::execute to_wire_execute(const execute_request& r);
net::result to_wire_result(const execute_result& r);
// A provider's Result as the client's execute_result; ok is false (with the reason) when the
// outputs cannot be read or do not match the output digest, or the receipt is missing.
std::shared_ptr<const execute_result> from_wire_result(const net::result& r, const key32& provider);

}  // namespace gpugrid::grid
