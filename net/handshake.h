// The connection handshake as plain logic (no sockets), so tests can drive it directly.
//
// Both sides send a Hello first (sequence 0, Ed25519-signed envelope): versions, node key, a
// fresh 32-byte challenge and, when session MACs are wanted, an ephemeral X25519 key. On the
// peer's Hello each side checks the key and the versions and answers with a HelloAck (sequence 1)
// whose signature covers the peer's challenge, both node keys and both ephemeral keys
// (handshake_statement). A HelloAck that verifies proves the peer holds its key *now*, on this
// connection; the ephemeral keys it covers cannot have been swapped by anyone in between.
//
// Versions: both speak min(newest of each); refused when that is below either side's oldest.
// Session MACs are used when both Hellos carry an ephemeral key; the keys are libsodium's
// crypto_kx session keys (X25519 + BLAKE2b), the connecting side playing the kx client.
//
// Not thread-safe: one handshake belongs to one connection's strand.
#pragma once

#include <optional>
#include <string>

#include "base/status.h"
#include "net/codec.h"
#include "net/identity.h"
#include "net/messages.h"

namespace gpugrid::net {

struct handshake_options {
  bool session_mac = false;              // offer an ephemeral key (used if the peer offers one too)
  std::optional<key32> expected_peer;    // refuse any other peer key (dialing a known node)
  uint16_t newest_version = kProtocolVersion;   // overridable so tests can play old/new peers
  uint16_t oldest_version = kMinProtocolVersion;
};

// "GGHSK1\0\0" || receiver challenge || signer key || receiver key || signer eph || receiver eph
// (an absent ephemeral key counts as 32 zero bytes).
std::string handshake_statement(const nonce32& receiver_challenge, const key32& signer, const key32& receiver,
                                const std::optional<key32>& signer_eph, const std::optional<key32>& receiver_eph);

// The version two Hellos agree on, or why there is none (names both ranges).
expected<uint16_t> negotiate_version(const hello& mine, const hello& theirs);

class handshake {
 public:
  // `local` supplies the descriptive fields (role, URL, devices, prices); the protocol fields
  // (versions, key, challenge, ephemeral key) are filled in here.
  handshake(const identity& self, bool initiator, hello local, const handshake_options& o);
  ~handshake();

  const hello& local_hello() const { return local_; }

  // The peer's Hello, already decoded and its signature checked. Returns the HelloAck to send,
  // or the error; *reason says which Goodbye to send with it.
  expected<hello_ack> on_hello(const decoded_frame& f, goodbye_reason* reason);
  // The peer's HelloAck. OK means the connection is established.
  status on_hello_ack(const decoded_frame& f, goodbye_reason* reason);

  bool got_hello() const { return got_hello_; }
  bool established() const { return established_; }
  const hello& peer_hello() const { return peer_; }
  const key32& peer_key() const { return peer_.node_key; }
  uint16_t version() const { return version_; }
  // Channel binding: what we put in frames we send / expect in frames we receive.
  bytes16 tx_channel() const;
  bytes16 rx_channel() const;
  // Present after on_hello when both sides offered ephemeral keys.
  const std::optional<session_key>& tx_key() const { return tx_key_; }
  const std::optional<session_key>& rx_key() const { return rx_key_; }

 private:
  const identity& self_;
  bool initiator_;
  handshake_options options_;
  hello local_;
  hello peer_;
  std::array<uint8_t, 32> eph_secret_{};
  bool got_hello_ = false;
  bool established_ = false;
  uint16_t version_ = 0;
  std::optional<session_key> tx_key_, rx_key_;
};

}  // namespace gpugrid::net
