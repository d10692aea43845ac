#include "ledger/receipt.h"

#include <sodium.h>

#include <cstdint>
#include <cstring>

namespace gpugrid::ledger {

namespace {

constexpr char magic[8] = {'G', 'G', 'R', 'C', 'P', 'T', '1', '\0'};

void put_i64(std::string& out, int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}
int64_t get_i64(const uint8_t* p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<int64_t>(u);
}
template <size_t N>
void put(std::string& out, const std::array<uint8_t, N>& a) { out.append(reinterpret_cast<const char*>(a.data()), N); }
template <size_t N>
void get(std::array<uint8_t, N>& a, const uint8_t*& p) { std::memcpy(a.data(), p, N); p += N; }

struct sodium_init {
  sodium_init() { (void)sodium_init_once(); }
  static int sodium_init_once() { return ::sodium_init(); }
};
const sodium_init init_sodium;

}  // namespace

const char* to_string(receipt_kind k) {
  switch (k) {
    case receipt_kind::payment: return "payment";
    case receipt_kind::dispute: return "dispute";
    case receipt_kind::generation: return "generation";
  }
  return "unknown";
}

digest32 token_terms::pack() const {
  std::string out;
  put_i64(out, prompt_tokens);
  put_i64(out, generated_tokens);
  put_i64(out, prompt_micros_per_1k);
  put_i64(out, generated_micros_per_1k);
  digest32 d{};
  std::memcpy(d.data(), out.data(), d.size());
  return d;
}

token_terms token_terms::unpack(const digest32& d) {
  token_terms t;
  t.prompt_tokens = get_i64(d.data());
  t.generated_tokens = get_i64(d.data() + 8);
  t.prompt_micros_per_1k = get_i64(d.data() + 16);
  t.generated_micros_per_1k = get_i64(d.data() + 24);
  return t;
}

int64_t token_terms::price_micros() const {
  // Exact in 128 bits: counts and prices are each below 2^63.
  __int128 n = static_cast<__int128>(prompt_tokens) * prompt_micros_per_1k +
               static_cast<__int128>(generated_tokens) * generated_micros_per_1k;
  n = (n + 500) / 1000;
  return n > INT64_MAX ? INT64_MAX : static_cast<int64_t>(n);
}

std::string receipt::body_bytes() const {
  std::string out(magic, 8);
  out.push_back(static_cast<char>(kind));
  put(out, job_id);
  put(out, client_key);
  put(out, provider_key);
  put(out, model_hash);
  put(out, input_digest);
  put(out, output_digest);
  put_i64(out, price_micros);
  put_i64(out, started_ms);
  put_i64(out, finished_ms);
  return out;
}

std::string receipt::canonical_bytes() const {
  std::string out = body_bytes();
  put(out, provider_sig);
  put(out, client_sig);
  return out;
}

bool is_receipt_bytes(const char* bytes) {
  const auto kind = static_cast<uint8_t>(bytes[8]);
  return std::memcmp(bytes, magic, 8) == 0 && kind >= 1 && kind <= 3;
}

expected<receipt> receipt::parse(const std::string& c, const std::string& what) {
  if (c.size() != receipt_size) return invalid_input("{}: a receipt is {} bytes, got {}", what, receipt_size, c.size());
  if (std::memcmp(c.data(), magic, 8) != 0) return invalid_input("{}: not a receipt (bad magic)", what);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(c.data()) + 8;
  receipt r;
  uint8_t k = *p++;
  if (k < 1 || k > 3) return invalid_input("{}: unknown receipt kind {}", what, k);
  r.kind = static_cast<receipt_kind>(k);
  get(r.job_id, p);
  get(r.client_key, p);
  get(r.provider_key, p);
  get(r.model_hash, p);
  get(r.input_digest, p);
  get(r.output_digest, p);
  r.price_micros = get_i64(p); p += 8;
  r.started_ms = get_i64(p); p += 8;
  r.finished_ms = get_i64(p); p += 8;
  get(r.provider_sig, p);
  get(r.client_sig, p);
  return r;
}

digest32 blake2b_256(const std::string& bytes) {
  digest32 d{};
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), nullptr, 0);
  return d;
}

bool verify_signature(const key32& key, const std::string& message, const sig64& sig) {
  return crypto_sign_verify_detached(sig.data(), reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                     key.data()) == 0;
}

std::string to_hex(const uint8_t* data, size_t n) {
  std::string s(2 * n + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), data, n);
  s.pop_back();
  return s;
}

std::string result_statement(const std::array<uint8_t, 16>& job_id, const digest32& output_digest) {
  std::string s("GGRSLT1", 8);
  put(s, job_id);
  put(s, output_digest);
  return s;
}

namespace {
std::string provider_message(const receipt& r) {
  return r.kind == receipt_kind::dispute ? result_statement(r.job_id, r.output_digest) : r.body_bytes();
}
}  // namespace

void sign_as_provider(receipt& r, const std::array<uint8_t, 64>& sk) {
  std::string body = provider_message(r);
  crypto_sign_detached(r.provider_sig.data(), nullptr, reinterpret_cast<const unsigned char*>(body.data()), body.size(), sk.data());
}

void sign_as_client(receipt& r, const std::array<uint8_t, 64>& sk) {
  std::string msg = r.body_bytes();
  msg.append(reinterpret_cast<const char*>(r.provider_sig.data()), 64);
  crypto_sign_detached(r.client_sig.data(), nullptr, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), sk.data());
}

status verify_provider_signature(const receipt& r) {
  if (!verify_signature(r.provider_key, provider_message(r), r.provider_sig))
    return invalid_input("the provider's signature does not verify");
  return status::ok();
}

status verify_client_signature(const receipt& r) {
  std::string msg = r.body_bytes();
  msg.append(reinterpret_cast<const char*>(r.provider_sig.data()), 64);
  if (!verify_signature(r.client_key, msg, r.client_sig)) return invalid_input("the client's signature does not verify");
  return status::ok();
}

bool provider_signature_is(const receipt& r, const std::array<uint8_t, 64>& secret_key) {
  receipt mine = r;
  sign_as_provider(mine, secret_key);
  return sodium_memcmp(mine.provider_sig.data(), r.provider_sig.data(), r.provider_sig.size()) == 0;
}

status verify_receipt(const receipt& r) {
  GG_RETURN_IF_ERROR(verify_provider_signature(r));
  return verify_client_signature(r);
}

}  // namespace gpugrid::ledger
