// The frame codec: message structs <-> signed FlatBuffers envelopes (schemas/gpugrid.fbs).
//
// A frame is one WebSocket binary message: an Envelope holding the sender's Ed25519 key, the
// body (a nested FlatBuffer: version, sequence, timestamp, channel binding, one message) and
// exactly one authenticator:
//  - signature: Ed25519 over envelope_statement(body) = "GGENV1\0\0" || BLAKE2b-256(body).
//    Signing the digest costs one BLAKE2b pass over a large body instead of Ed25519's two
//    SHA-512 passes, and the prefix keeps an envelope signature from ever being valid as a
//    result or receipt signature (those sign other prefixes, see ledger/receipt.h).
//  - mac: a 16-byte Poly1305 tag (ChaCha20-Poly1305-IETF with an empty plaintext and the body as
//    associated data; nonce = the body's sequence number) under a per-direction session key
//    agreed in the handshake (net/handshake.h). Only the connection that agreed the key can
//    check it, so such frames are not evidence; messages that must be are signed inside
//    (Bid.signature, Result.signature, Receipt).
//
// decode() checks, in this order: size limit, identifier, the FlatBuffers verifier (depth and
// table limits), the nested body's verifier, the authenticator, then every field while it
// builds the struct (fixed sizes, known enum values, finite prices, tensor byte counts).
// Each failure is a status naming the reason plus a frame_error code for counting. Sequence
// numbers, channel binding and the sender's identity are the connection's job (transport.cc):
// decode() is stateless.
//
// All functions are thread-safe and never throw; they allocate the decoded struct (payload
// bytes are copied out of the frame once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "net/identity.h"
#include "net/messages.h"

namespace gpugrid::net {

constexpr size_t kDefaultMaxFrameBytes = size_t{64} << 20;
// A PeerExchange with more peers than this is malformed: larger lists go out in pages.
constexpr size_t kMaxPeersPerExchange = 10000;

// The encoded bytes of one envelope: immutable, cheap to copy (shared ownership), 8-aligned.
class frame {
 public:
  frame() = default;
  static frame copy_of(const void* data, size_t n);
  frame(std::shared_ptr<const void> owner, const uint8_t* data, size_t n)
      : owner_(std::move(owner)), data_(data), size_(n) {}

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

 private:
  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A ChaCha20-Poly1305 key for one direction of one connection.
struct session_key {
  std::array<uint8_t, 32> bytes{};
};

struct frame_header {
  uint64_t sequence = 0;
  std::optional<bytes16> channel;      // the receiver's challenge prefix; absent only in Hello
  int64_t timestamp_ms = -1;           // < 0: now
  uint16_t protocol_version = kProtocolVersion;
};

// Encodes and signs with `signer` (Ed25519). Fails (invalid_input) when a field cannot be
// represented: a tensor whose bytes do not match its shape, a body over 2 GiB.
expected<frame> encode(const message& m, const identity& signer, const frame_header& h);
inline expected<frame> encode(const message& m, const identity& signer, uint64_t sequence) {
  frame_header h;
  h.sequence = sequence;
  return encode(m, signer, h);
}
// Encodes with a session MAC instead of a signature; `sender` is the sender's node key.
expected<frame> encode_mac(const message& m, const key32& sender, const session_key& key, const frame_header& h);

enum class frame_error : uint8_t {
  none = 0,
  oversized,        // larger than the frame limit
  not_flatbuffer,   // wrong identifier or the Envelope fails the verifier
  bad_envelope,     // wrong key / signature / MAC sizes, no body, both or neither authenticator
  bad_body,         // the nested Body fails the verifier
  bad_signature,    // Ed25519 signature does not verify
  bad_mac,          // session MAC does not verify
  no_session,       // a MAC'd frame where no session key was agreed
  unknown_message,  // empty or unknown union member (a newer peer?)
  bad_message,      // a field is missing or out of range
};
const char* to_string(frame_error e);

struct decode_options {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  uint32_t max_depth = 16;             // nesting depth of tables/vectors
  uint32_t max_tables = 200000;        // tables in one frame
  const session_key* session = nullptr;  // accept MAC'd frames under this key
};

struct decoded_frame {
  key32 sender{};
  uint64_t sequence = 0;
  uint16_t protocol_version = 0;
  int64_t timestamp_ms = 0;
  std::optional<bytes16> channel;
  bool authenticated_by_mac = false;   // false: Ed25519 signature
  size_t frame_bytes = 0;
  message msg;
};

expected<decoded_frame> decode(const uint8_t* data, size_t n, const decode_options& o = {},
                               frame_error* why = nullptr);
inline expected<decoded_frame> decode(std::string_view bytes, const decode_options& o = {},
                                      frame_error* why = nullptr) {
  return decode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), o, why);
}

// The session MAC of a body sent with `sequence` under `key` (what encode_mac puts in the
// envelope). Exposed for tests and the fuzz target, which wrap bodies of their own making.
std::array<uint8_t, 16> session_mac(const session_key& key, uint64_t sequence, const uint8_t* body, size_t n);

// "GGENV1\0\0" || BLAKE2b-256(body): what an envelope signature signs.
std::string envelope_statement(const uint8_t* body, size_t n);

// What Bid.signature signs: "GGBID1\0\0" || job || price || eta || cached || valid_ms (LE).
// The bidder's key comes from the connection (or the envelope) it arrived on.
std::string bid_statement(const bid& b);
void sign_bid(bid& b, const identity& bidder);
bool verify_bid(const bid& b, const key32& bidder);

// What GenBid.signature signs: "GGGBID1\0" || session || prices, tokens/s (IEEE bits) ||
// cached || valid_ms (LE).
std::string gen_bid_statement(const gen_bid& b);
void sign_gen_bid(gen_bid& b, const identity& bidder);
bool verify_gen_bid(const gen_bid& b, const key32& bidder);

// The digest a provider signs over the tokens it streamed for one prompt: BLAKE2b-256 of
// "GGGSTRM1" || session || per token (id i32, logprob f32 bits, index i64, LE). Both sides
// build it token by token. Not thread-safe.
class gen_stream_digest {
 public:
  void add(const gen_token& t);
  size_t count() const { return count_; }
  digest32 finish(const bytes16& session) const;

 private:
  std::string bytes_;
  size_t count_ = 0;
};

// Lets encode() size its buffer in one allocation: payload bytes plus a small overhead.
size_t encoded_size_estimate(const message& m);

}  // namespace gpugrid::net
