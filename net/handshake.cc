#include "net/handshake.h"

#include <sodium.h>

#include <cstring>

#include "net/hash.h"

namespace gpugrid::net {

namespace {
constexpr char kHandshakePrefix[8] = {'G', 'G', 'H', 'S', 'K', '1', 0, 0};

void append(std::string& s, const uint8_t* p, size_t n) { s.append(reinterpret_cast<const char*>(p), n); }
}  // namespace

std::string handshake_statement(const nonce32& receiver_challenge, const key32& signer, const key32& receiver,
                                const std::optional<key32>& signer_eph, const std::optional<key32>& receiver_eph) {
  static const key32 zero{};
  std::string s(kHandshakePrefix, sizeof kHandshakePrefix);
  append(s, receiver_challenge.data(), 32);
  append(s, signer.data(), 32);
  append(s, receiver.data(), 32);
  append(s, (signer_eph ? *signer_eph : zero).data(), 32);
  append(s, (receiver_eph ? *receiver_eph : zero).data(), 32);
  return s;
}

expected<uint16_t> negotiate_version(const hello& mine, const hello& theirs) {
  uint16_t v = std::min(mine.protocol_version, theirs.protocol_version);
  if (v < mine.min_version || v < theirs.min_version)
    return status(error_kind::invalid_input,
                  fmt::format("protocol version mismatch: this node speaks versions {}..{}, the peer speaks {}..{}",
                              mine.min_version, mine.protocol_version, theirs.min_version, theirs.protocol_version));
  return v;
}

handshake::handshake(const identity& self, bool initiator, hello local, const handshake_options& o)
    : self_(self), initiator_(initiator), options_(o), local_(std::move(local)) {
  ensure_sodium();
  local_.protocol_version = o.newest_version;
  local_.min_version = o.oldest_version;
  local_.node_key = self.public_key();
  randombytes_buf(local_.challenge.data(), local_.challenge.size());
  local_.ephemeral_key.reset();
  if (o.session_mac) {
    key32 pk{};
    crypto_kx_keypair(pk.data(), eph_secret_.data());
    local_.ephemeral_key = pk;
  }
}

handshake::~handshake() { sodium_memzero(eph_secret_.data(), eph_secret_.size()); }

bytes16 handshake::tx_channel() const {
  bytes16 c{};
  std::memcpy(c.data(), peer_.challenge.data(), c.size());
  return c;
}

bytes16 handshake::rx_channel() const {
  bytes16 c{};
  std::memcpy(c.data(), local_.challenge.data(), c.size());
  return c;
}

expected<hello_ack> handshake::on_hello(const decoded_frame& f, goodbye_reason* reason) {
  *reason = goodbye_reason::protocol_error;
  if (got_hello_) return invalid_input("a second Hello");
  const hello* h = std::get_if<hello>(&f.msg);
  if (!h) return invalid_input("expected Hello, got {}", message_name(f.msg));
  if (f.authenticated_by_mac) return invalid_input("Hello must be signed, not MAC'd");
  *reason = goodbye_reason::auth_failed;
  if (h->node_key != f.sender) return invalid_input("Hello names node key {} but is signed by {}", node_id_of(h->node_key), node_id_of(f.sender));
  if (options_.expected_peer && *options_.expected_peer != h->node_key)
    return invalid_input("the peer is {}, not the expected {}", node_id_of(h->node_key), node_id_of(*options_.expected_peer));
  if (h->node_key == self_.public_key()) {
    *reason = goodbye_reason::normal;
    return invalid_input("connected to itself ({})", node_id_of(h->node_key));
  }
  *reason = goodbye_reason::version_mismatch;
  auto v = negotiate_version(local_, *h);
  if (!v) return v.error();
  version_ = *v;
  peer_ = *h;
  got_hello_ = true;

  if (local_.ephemeral_key && peer_.ephemeral_key) {
    session_key rx, tx;
    int rc = initiator_ ? crypto_kx_client_session_keys(rx.bytes.data(), tx.bytes.data(), local_.ephemeral_key->data(),
                                                        eph_secret_.data(), peer_.ephemeral_key->data())
                        : crypto_kx_server_session_keys(rx.bytes.data(), tx.bytes.data(), local_.ephemeral_key->data(),
                                                        eph_secret_.data(), peer_.ephemeral_key->data());
    *reason = goodbye_reason::auth_failed;
    if (rc != 0) return invalid_input("the peer's ephemeral key is not a valid X25519 key");
    rx_key_ = rx;
    tx_key_ = tx;
  }

  hello_ack ack;
  ack.protocol_version = version_;
  ack.signature = self_.sign(handshake_statement(peer_.challenge, self_.public_key(), peer_.node_key,
                                                 local_.ephemeral_key, peer_.ephemeral_key));
  return ack;
}

status handshake::on_hello_ack(const decoded_frame& f, goodbye_reason* reason) {
  *reason = goodbye_reason::protocol_error;
  const hello_ack* a = std::get_if<hello_ack>(&f.msg);
  if (!a) return invalid_input("expected HelloAck, got {}", message_name(f.msg));
  if (!got_hello_) return invalid_input("HelloAck before Hello");
  if (established_) return invalid_input("a second HelloAck");
  *reason = goodbye_reason::auth_failed;
  if (f.sender != peer_.node_key) return invalid_input("HelloAck from {} after a Hello from {}", node_id_of(f.sender), node_id_of(peer_.node_key));
  std::string statement = handshake_statement(local_.challenge, peer_.node_key, self_.public_key(),
                                              peer_.ephemeral_key, local_.ephemeral_key);
  if (!verify_signature(peer_.node_key, statement, a->signature))
    return invalid_input("the peer's HelloAck signature does not prove key {}", node_id_of(peer_.node_key));
  *reason = goodbye_reason::version_mismatch;
  if (a->protocol_version != version_)
    return invalid_input("the peer chose protocol version {}, expected {}", a->protocol_version, version_);
  established_ = true;
  return status::ok();
}

}  // namespace gpugrid::net
