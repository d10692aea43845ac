#include "actors/messages.h"

#include <sodium.h>

#include <chrono>

#include "net/identity.h"

namespace gpugrid::grid {

keypair keypair::generate() {
  if (sodium_init() < 0) std::abort();
  keypair k;
  crypto_sign_keypair(k.public_key.data(), k.secret_key.data());
  return k;
}

const char* to_string(decline_reason r) {
  switch (r) {
    case decline_reason::none: return "none";
    case decline_reason::busy: return "busy";
    case decline_reason::unsupported: return "unsupported model";
    case decline_reason::too_big: return "model too big";
    case decline_reason::too_cheap: return "price limit below the provider's price";
    case decline_reason::draining: return "shutting down";
    case decline_reason::internal: return "internal error";
  }
  return "unknown";
}

digest32 tensors_digest(const std::vector<tensor>& tensors) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  for (const tensor& t : tensors) {
    int32_t code = static_cast<int32_t>(t.type());
    uint32_t rank = static_cast<uint32_t>(t.rank());
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(&code), 4);
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(&rank), 4);
    for (int64_t d : t.shape()) crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(&d), 8);
    if (t.bytes()) crypto_generichash_update(&st, static_cast<const unsigned char*>(t.raw()), t.bytes());
  }
  digest32 out{};
  crypto_generichash_final(&st, out.data(), 32);
  return out;
}

job_id new_job_id() {
  job_id j{};
  randombytes_buf(j.data(), j.size());
  return j;
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string short_hex(const key32& key) { return net::node_id_of(key); }

}  // namespace gpugrid::grid
