// Recursive Length Prefix encoding (Ethereum yellow paper, appendix B), enough for
// transactions: byte strings, unsigned integers (minimal big-endian) and lists of already
// encoded items. Pure; any thread.
#pragma once

#include <vector>

#include "chain/bytes.h"

namespace gpugrid::chain::rlp {

bytes encode_bytes(const uint8_t* p, size_t n);
inline bytes encode_bytes(const bytes& b) { return encode_bytes(b.data(), b.size()); }
bytes encode_uint(const u256& v);
// `items` are each already RLP-encoded.
bytes encode_list(const std::vector<bytes>& items);

}  // namespace gpugrid::chain::rlp
