// A crafted GenTokens frame whose token structs sit at a 4-byte offset: the FlatBuffers
// verifier checks a vector's length field for 4-byte alignment, not its 8-byte structs, so
// the decoder must refuse the frame itself instead of reading the structs misaligned.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "net/codec.h"
#include "net/testing.h"
#include "schemas/gpugrid_generated.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

const identity& signer() {
  static const identity id = identity::from_seed(testing::pattern<32>(11));
  return id;
}

const session_key& key() {
  static const session_key k = [] {
    session_key s;
    s.bytes = testing::pattern<32>(12);
    return s;
  }();
  return k;
}

// Wraps a Body in an envelope carrying a valid session MAC, the body 8-byte aligned in it.
std::vector<uint64_t> wrap(const std::vector<uint8_t>& body, size_t* size) {
  uint64_t seq = flatbuffers::GetRoot<fb::Body>(body.data())->sequence();
  auto tag = session_mac(key(), seq, body.data(), body.size());
  flatbuffers::FlatBufferBuilder e(body.size() + 256);
  auto sender = e.CreateVector(signer().public_key().data(), 32);
  auto mac = e.CreateVector(tag.data(), tag.size());
  e.ForceVectorAlignment(body.size(), 1, 8);
  auto b = e.CreateVector(body.data(), body.size());
  fb::EnvelopeBuilder x(e);
  x.add_sender_key(sender);
  x.add_body(b);
  x.add_mac(mac);
  e.Finish(x.Finish(), fb::EnvelopeIdentifier());
  // uint64_t storage: the frame starts 8-byte aligned, as a received one does.
  std::vector<uint64_t> out((e.GetSize() + 7) / 8);
  std::memcpy(out.data(), e.GetBufferPointer(), e.GetSize());
  *size = e.GetSize();
  return out;
}

expected<decoded_frame> decode_body(const std::vector<uint8_t>& body) {
  size_t n = 0;
  auto f = wrap(body, &n);
  decode_options o;
  o.session = &key();
  return decode(reinterpret_cast<const uint8_t*>(f.data()), n, o);
}

// The Body of a MAC'd frame carrying the sample GenTokens message.
std::vector<uint8_t> gen_tokens_body() {
  gen_tokens sample;
  for (auto& m : testing::sample_messages())
    if (auto* x = std::get_if<gen_tokens>(&m)) sample = *x;
  REQUIRE(sample.tokens.size() >= 2);
  frame_header h;
  h.sequence = 5;
  h.channel = testing::pattern<16>(3);
  auto f = encode_mac(sample, signer().public_key(), key(), h);
  REQUIRE(f);
  const fb::Envelope* env = fb::GetEnvelope(f->data());
  return {env->body()->data(), env->body()->data() + env->body()->size()};
}

// Copies the token vector to the end of the body so that its length field is 8-byte aligned
// and its structs are not, and points the table's field at the copy.
std::vector<uint8_t> with_misaligned_tokens(std::vector<uint8_t> body) {
  const auto* msg = flatbuffers::GetRoot<fb::Body>(body.data())->msg_as_GenTokens();
  REQUIRE(msg != nullptr);
  const auto* table = reinterpret_cast<const flatbuffers::Table*>(msg);
  auto field = table->GetOptionalFieldOffset(fb::GenTokens::VT_TOKENS);
  REQUIRE(field != 0);
  size_t field_at = reinterpret_cast<const uint8_t*>(table) + field - body.data();
  const auto* tokens = msg->tokens();
  size_t data_bytes = tokens->size() * sizeof(fb::GenToken);
  std::vector<uint8_t> copy(reinterpret_cast<const uint8_t*>(tokens),
                            reinterpret_cast<const uint8_t*>(tokens) + 4 + data_bytes);
  body.resize((body.size() + 7) / 8 * 8, 0);
  size_t vec_at = body.size();  // 8-byte aligned: the structs start at 4 mod 8
  body.insert(body.end(), copy.begin(), copy.end());
  body.resize((body.size() + 7) / 8 * 8, 0);
  flatbuffers::uoffset_t rel = static_cast<flatbuffers::uoffset_t>(vec_at - field_at);
  std::memcpy(body.data() + field_at, &rel, sizeof rel);
  return body;
}

}  // namespace

TEST_CASE("a GenTokens frame with misaligned token structs is refused", "[net][codec][gen]") {
  auto body = gen_tokens_body();
  auto clean = decode_body(body);
  REQUIRE(clean);
  REQUIRE(std::get<gen_tokens>(clean->msg).tokens.size() >= 2);

  auto crafted = with_misaligned_tokens(body);
  // The crafted body passes the FlatBuffers verifier: only the decoder's own check stops it.
  flatbuffers::Verifier v(crafted.data(), crafted.size());
  REQUIRE(v.VerifyBuffer<fb::Body>(nullptr));
  const auto* tokens = flatbuffers::GetRoot<fb::Body>(crafted.data())->msg_as_GenTokens()->tokens();
  REQUIRE(reinterpret_cast<uintptr_t>(tokens->Data()) % 8 == 4);

  auto d = decode_body(crafted);
  REQUIRE_FALSE(d);
  CHECK_THAT(d.error().message(), Catch::Contains("misaligned"));
}
