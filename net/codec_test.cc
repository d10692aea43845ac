// The frame codec: round trips of every message, and every way a frame can be wrong.
// (This test is part of the wire layer, so it may build malformed frames with generated code.)
#include "net/codec.h"

#include <catch2/catch.hpp>
#include <sodium.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "net/hash.h"
#include "net/testing.h"
#include "schemas/gpugrid_generated.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

frame_header fixed_header(uint64_t seq) {
  frame_header h;
  h.sequence = seq;
  h.channel = testing::pattern<16>(99);
  h.timestamp_ms = 1700000000000;
  return h;
}

const identity& alice() {
  static const identity id = identity::from_seed(testing::pattern<32>(1));
  return id;
}
const identity& bob() {
  static const identity id = identity::from_seed(testing::pattern<32>(2));
  return id;
}

// Wraps arbitrary body bytes into a signed envelope (for bodies the encoder would never make).
std::string signed_envelope(const uint8_t* body, size_t n, const identity& signer) {
  flatbuffers::FlatBufferBuilder e;
  sig64 sig = signer.sign(envelope_statement(body, n));
  auto key = e.CreateVector(signer.public_key().data(), 32);
  auto s = e.CreateVector(sig.data(), 64);
  e.ForceVectorAlignment(n, 1, 8);
  auto b = e.CreateVector(body, n);
  fb::EnvelopeBuilder x(e);
  x.add_sender_key(key);
  x.add_signature(s);
  x.add_body(b);
  e.Finish(x.Finish(), fb::EnvelopeIdentifier());
  return std::string(reinterpret_cast<const char*>(e.GetBufferPointer()), e.GetSize());
}

// Builds a body around one message table made by `make`.
template <typename Make>
std::string signed_body_frame(fb::Message type, Make make, uint64_t seq = 0) {
  flatbuffers::FlatBufferBuilder b;
  flatbuffers::Offset<void> msg = make(b);
  fb::BodyBuilder x(b);
  x.add_protocol_version(kProtocolVersion);
  x.add_sequence(seq);
  x.add_msg_type(type);
  if (!msg.IsNull()) x.add_msg(msg);
  b.Finish(x.Finish());
  return signed_envelope(b.GetBufferPointer(), b.GetSize(), alice());
}

expected<decoded_frame> decode_str(const std::string& s, frame_error* why, const decode_options& o = {}) {
  return decode(s, o, why);
}

}  // namespace

TEST_CASE("every message round-trips through a signed frame", "[net][codec]") {
  auto samples = testing::sample_messages();
  REQUIRE(samples.size() == std::variant_size_v<message>);
  for (size_t i = 0; i < samples.size(); ++i) {
    INFO(message_name(samples[i]));
    REQUIRE(samples[i].index() == i);
    auto f = encode(samples[i], alice(), fixed_header(i + 2));
    REQUIRE(f.has_value());
    REQUIRE(reinterpret_cast<uintptr_t>(f->data()) % 8 == 0);
    frame_error why = frame_error::none;
    auto d = decode(f->data(), f->size(), {}, &why);
    REQUIRE(d.has_value());
    CHECK(why == frame_error::none);
    CHECK(d->sender == alice().public_key());
    CHECK(d->sequence == i + 2);
    CHECK(d->timestamp_ms == 1700000000000);
    CHECK(d->protocol_version == kProtocolVersion);
    REQUIRE(d->channel.has_value());
    CHECK(*d->channel == testing::pattern<16>(99));
    CHECK_FALSE(d->authenticated_by_mac);
    CHECK(d->frame_bytes == f->size());
    REQUIRE(d->msg.index() == i);
    // Ed25519 is deterministic: the decoded struct re-encodes to the very same bytes, so
    // every field survived.
    auto again = encode(d->msg, alice(), fixed_header(i + 2));
    REQUIRE(again.has_value());
    CHECK(again->view() == f->view());
  }
}

TEST_CASE("decoded fields match the originals", "[net][codec]") {
  auto samples = testing::sample_messages();
  auto round = [](const message& m) {
    auto f = encode(m, alice(), 7);
    REQUIRE(f.has_value());
    auto d = decode(f->data(), f->size());
    REQUIRE(d.has_value());
    return d->msg;
  };
  const auto& h0 = std::get<hello>(samples[0]);
  auto h = std::get<hello>(round(h0));
  CHECK(h.node_key == h0.node_key);
  CHECK(h.challenge == h0.challenge);
  CHECK(h.ephemeral_key == h0.ephemeral_key);
  CHECK(h.listen_url == h0.listen_url);
  CHECK(h.role == node_role::provider);
  REQUIRE(h.devices.size() == 2);
  CHECK(h.devices[0].name == "NVIDIA H100 80GB HBM3");
  CHECK(h.devices[0].cc_major == 9);
  CHECK(h.devices[1].gflops == 812.25);
  CHECK(h.ledger.count == 42);
  CHECK(h.ledger.hash == h0.ledger.hash);
  CHECK(h.max_frame_bytes == 64u << 20);
  CHECK(h.software == "gpugrid 0.1.0");

  auto bd = std::get<bid>(round(samples[7]));
  CHECK(bd.capacity == 17);
  CHECK(bd.valid_ms == 5000);

  auto e = std::get<execute>(round(samples[14]));
  REQUIRE(e.inputs.size() == 2);
  CHECK(e.inputs[0].name == "input");
  CHECK(e.inputs[0].type == dtype::f32);
  CHECK(e.inputs[0].shape == std::vector<int64_t>{1, 16});
  CHECK(e.inputs[0].data == std::get<execute>(samples[14]).inputs[0].data);
  CHECK(e.inputs[1].type == dtype::u8);

  auto r = std::get<result>(round(samples[15]));
  REQUIRE(r.receipt.has_value());
  CHECK(r.receipt->canonical_bytes() == testing::sample_receipt().canonical_bytes());
  CHECK(r.compute_ms == 1.25);

  auto rc = std::get<ledger::receipt>(round(samples[17]));
  CHECK(rc.canonical_bytes() == testing::sample_receipt().canonical_bytes());
  auto ack = std::get<receipt_ack>(round(samples[18]));
  CHECK(ack.job == std::get<receipt_ack>(samples[18]).job);
  CHECK(ack.status == receipt_status::retry_later);
  CHECK(ack.detail == "the ledger cannot be written");

  // Optional fields stay absent.
  hello bare;
  bare.node_key = alice().public_key();
  auto hb = std::get<hello>(round(bare));
  CHECK_FALSE(hb.ephemeral_key.has_value());
  CHECK(hb.devices.empty());
  bid b;
  auto bb = std::get<bid>(round(b));
  CHECK_FALSE(bb.device.has_value());
  CHECK_FALSE(bb.signature.has_value());
  CHECK(bb.capacity == 0);
  model_put mp;
  CHECK_FALSE(std::get<model_put>(round(mp)).job.has_value());
}

TEST_CASE("every message round-trips through a MAC'd frame", "[net][codec]") {
  session_key k;
  k.bytes = testing::pattern<32>(5);
  for (const message& m : testing::sample_messages()) {
    INFO(message_name(m));
    auto f = encode_mac(m, alice().public_key(), k, fixed_header(9));
    REQUIRE(f.has_value());
    decode_options o;
    o.session = &k;
    auto d = decode(f->data(), f->size(), o);
    REQUIRE(d.has_value());
    CHECK(d->authenticated_by_mac);
    CHECK(d->msg.index() == m.index());
    // Without the key: refused. With another key: refused.
    frame_error why;
    CHECK_FALSE(decode(f->data(), f->size(), {}, &why).has_value());
    CHECK(why == frame_error::no_session);
    session_key other;
    other.bytes = testing::pattern<32>(6);
    o.session = &other;
    CHECK_FALSE(decode(f->data(), f->size(), o, &why).has_value());
    CHECK(why == frame_error::bad_mac);
  }
}

TEST_CASE("decode refuses every truncation of a frame", "[net][codec]") {
  auto f = encode(testing::sample_messages()[0], alice(), fixed_header(0));
  REQUIRE(f.has_value());
  std::string bytes(f->view());
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::string cut = bytes.substr(0, n);
    frame_error why = frame_error::none;
    auto d = decode_str(cut, &why);
    INFO("length " << n);
    CHECK_FALSE(d.has_value());
    CHECK(why != frame_error::none);
  }
}

TEST_CASE("flipped bytes are refused or harmless, never a crash", "[net][codec]") {
  auto original = testing::sample_messages()[15];  // Result: tensors, receipt, nested tables
  auto f = encode(original, alice(), fixed_header(3));
  REQUIRE(f.has_value());
  std::string bytes(f->view());
  size_t accepted = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::string bad = bytes;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      frame_error why;
      auto d = decode_str(bad, &why);
      if (d) {
        // Only bytes the decoder never reads (padding, unused vtable slack) may change.
        ++accepted;
        auto again = encode(d->msg, alice(), fixed_header(3));
        REQUIRE(again.has_value());
        CHECK(again->view() == f->view());
      }
    }
  }
  CHECK(accepted < bytes.size() / 10);
}

TEST_CASE("decode names what is wrong with a frame", "[net][codec]") {
  auto f = encode(testing::sample_messages()[6], alice(), fixed_header(2));
  REQUIRE(f.has_value());
  std::string good(f->view());
  frame_error why;

  SECTION("oversized") {
    decode_options o;
    o.max_frame_bytes = good.size() - 1;
    auto d = decode_str(good, &why, o);
    REQUIRE_FALSE(d.has_value());
    CHECK(why == frame_error::oversized);
    CHECK_THAT(d.error().message(), Catch::Contains("exceeds the limit"));
  }
  SECTION("not a flatbuffer") {
    auto d = decode_str("hello world, this is not a frame", &why);
    CHECK(why == frame_error::not_flatbuffer);
    std::string mis_tagged = good;
    mis_tagged[4] = 'X';  // the file identifier
    d = decode_str(mis_tagged, &why);
    CHECK(why == frame_error::not_flatbuffer);
    CHECK_THAT(d.error().message(), Catch::Contains("GGW1"));
    d = decode_str(std::string(), &why);
    CHECK(why == frame_error::not_flatbuffer);
  }
  SECTION("bad signature") {
    const fb::Envelope* env = fb::GetEnvelope(good.data());
    size_t at = static_cast<size_t>(env->signature()->data() - reinterpret_cast<const uint8_t*>(good.data()));
    std::string bad = good;
    bad[at + 10] = static_cast<char>(bad[at + 10] ^ 1);
    auto d = decode_str(bad, &why);
    CHECK(why == frame_error::bad_signature);
    CHECK_THAT(d.error().message(), Catch::Contains("signature does not verify"));
  }
  SECTION("someone else's key on alice's frame") {
    const fb::Envelope* env = fb::GetEnvelope(good.data());
    size_t at = static_cast<size_t>(env->sender_key()->data() - reinterpret_cast<const uint8_t*>(good.data()));
    std::string bad = good;
    std::memcpy(&bad[at], bob().public_key().data(), 32);
    (void)decode_str(bad, &why);
    CHECK(why == frame_error::bad_signature);
  }
  SECTION("a changed body byte breaks the signature") {
    const fb::Envelope* env = fb::GetEnvelope(good.data());
    const auto* body = env->body();
    size_t at = static_cast<size_t>(body->data() - reinterpret_cast<const uint8_t*>(good.data()));
    // The sequence number (a ulong) lives somewhere in the body: change the last body byte
    // that is not padding by trying each until the verifier still passes.
    bool saw_bad_signature = false;
    for (size_t i = 0; i < body->size(); ++i) {
      std::string bad = good;
      bad[at + i] = static_cast<char>(bad[at + i] ^ 0x40);
      if (!decode_str(bad, &why) && why == frame_error::bad_signature) saw_bad_signature = true;
    }
    CHECK(saw_bad_signature);
  }
}

TEST_CASE("crafted envelopes and bodies are refused with a reason", "[net][codec]") {
  frame_error why;
  SECTION("both signature and mac") {
    flatbuffers::FlatBufferBuilder e;
    auto key = e.CreateVector(alice().public_key().data(), 32);
    sig64 sig{};
    std::array<uint8_t, 16> mac{};
    auto s = e.CreateVector(sig.data(), 64);
    auto m = e.CreateVector(mac.data(), 16);
    std::vector<uint8_t> body(16, 0);
    auto b = e.CreateVector(body);
    fb::EnvelopeBuilder x(e);
    x.add_sender_key(key);
    x.add_signature(s);
    x.add_mac(m);
    x.add_body(b);
    e.Finish(x.Finish(), fb::EnvelopeIdentifier());
    auto d = decode(e.GetBufferPointer(), e.GetSize(), {}, &why);
    CHECK(why == frame_error::bad_envelope);
    CHECK_THAT(d.error().message(), Catch::Contains("exactly one"));
  }
  SECTION("short key") {
    flatbuffers::FlatBufferBuilder e;
    auto key = e.CreateVector(alice().public_key().data(), 31);
    fb::EnvelopeBuilder x(e);
    x.add_sender_key(key);
    e.Finish(x.Finish(), fb::EnvelopeIdentifier());
    (void)decode(e.GetBufferPointer(), e.GetSize(), {}, &why);
    CHECK(why == frame_error::bad_envelope);
  }
  SECTION("body that is not a flatbuffer") {
    std::string junk(64, '\x7f');
    auto env = signed_envelope(reinterpret_cast<const uint8_t*>(junk.data()), junk.size(), alice());
    (void)decode_str(env, &why);
    CHECK(why == frame_error::bad_body);
  }
  SECTION("no message") {
    auto env = signed_body_frame(fb::Message::NONE, [](auto&) { return flatbuffers::Offset<void>(); });
    auto d = decode_str(env, &why);
    CHECK(why == frame_error::unknown_message);
  }
  SECTION("a message type from the future") {
    auto env = signed_body_frame(static_cast<fb::Message>(200), [](flatbuffers::FlatBufferBuilder& b) {
      return fb::CreatePing(b, 1).Union();
    });
    auto d = decode_str(env, &why);
    CHECK(why == frame_error::unknown_message);
    CHECK_THAT(d.error().message(), Catch::Contains("unknown message type 200"));
  }
  SECTION("a type tag without its table") {
    auto env = signed_body_frame(fb::Message::Execute, [](auto&) { return flatbuffers::Offset<void>(); });
    auto d = decode_str(env, &why);
    CHECK(why == frame_error::bad_message);
  }
  SECTION("a mis-tagged union (Ping's table under the Execute tag)") {
    auto env = signed_body_frame(fb::Message::Execute, [](flatbuffers::FlatBufferBuilder& b) {
      return fb::CreatePing(b, 12345).Union();
    });
    auto d = decode_str(env, &why);
    REQUIRE_FALSE(d.has_value());
    CHECK((why == frame_error::bad_message || why == frame_error::bad_body));
  }
  SECTION("missing job id") {
    auto env = signed_body_frame(fb::Message::Award, [](flatbuffers::FlatBufferBuilder& b) {
      fb::AwardBuilder x(b);
      x.add_price(1.0);
      return x.Finish().Union();
    });
    auto d = decode_str(env, &why);
    CHECK(why == frame_error::bad_message);
    CHECK_THAT(d.error().message(), Catch::Contains("Award: missing job_id"));
  }
  SECTION("a price that is not a number") {
    auto env = signed_body_frame(fb::Message::Bid, [](flatbuffers::FlatBufferBuilder& b) {
      fb::Bytes16 job;
      fb::BidBuilder x(b);
      x.add_job_id(&job);
      x.add_price(std::numeric_limits<double>::quiet_NaN());
      return x.Finish().Union();
    });
    auto d = decode_str(env, &why);
    CHECK(why == frame_error::bad_message);
    CHECK_THAT(d.error().message(), Catch::Contains("price is not a finite number"));
  }
  SECTION("a tensor whose bytes do not match its shape") {
    auto env = signed_body_frame(fb::Message::Execute, [](flatbuffers::FlatBufferBuilder& b) {
      auto name = b.CreateString("x");
      std::vector<int64_t> dims = {2, 3};
      auto shape = b.CreateVector(dims);
      std::vector<uint8_t> bytes(20);  // 2*3 floats need 24
      auto data = b.CreateVector(bytes);
      auto t = fb::CreateTensor(b, name, 1, shape, data);
      std::vector<flatbuffers::Offset<fb::Tensor>> ts = {t};
      auto inputs = b.CreateVector(ts);
      fb::Bytes16 job;
      fb::Bytes32 hash;
      fb::ExecuteBuilder x(b);
      x.add_job_id(&job);
      x.add_model_hash(&hash);
      x.add_input_digest(&hash);
      x.add_inputs(inputs);
      return x.Finish().Union();
    });
    auto d = decode_str(env, &why);
    CHECK(why == frame_error::bad_message);
    CHECK_THAT(d.error().message(), Catch::Contains("tensor 'x' holds 20 bytes"));
  }
  SECTION("a tensor with a huge shape and no data") {
    auto env = signed_body_frame(fb::Message::Execute, [](flatbuffers::FlatBufferBuilder& b) {
      std::vector<int64_t> dims = {int64_t{1} << 40, int64_t{1} << 40, 3};  // overflows 64 bits
      auto shape = b.CreateVector(dims);
      auto t = fb::CreateTensor(b, 0, 1, shape, 0);
      std::vector<flatbuffers::Offset<fb::Tensor>> ts = {t};
      auto inputs = b.CreateVector(ts);
      fb::Bytes16 job;
      fb::Bytes32 hash;
      fb::ExecuteBuilder x(b);
      x.add_job_id(&job);
      x.add_model_hash(&hash);
      x.add_input_digest(&hash);
      x.add_inputs(inputs);
      return x.Finish().Union();
    });
    (void)decode_str(env, &why);
    CHECK(why == frame_error::bad_message);
  }
  SECTION("too many tables for the verifier's limit") {
    peer_exchange px;
    px.peers.resize(100);
    auto f = encode(px, alice(), 0);
    REQUIRE(f.has_value());
    decode_options o;
    o.max_tables = 10;
    (void)decode(f->data(), f->size(), o, &why);
    CHECK(why == frame_error::bad_body);
    CHECK(decode(f->data(), f->size()).has_value());
  }
}

TEST_CASE("encode refuses tensors that do not add up", "[net][codec]") {
  execute e;
  e.inputs = {testing::sample_tensor("x", 4, 0)};
  e.inputs[0].data.pop_back();
  auto f = encode(e, alice(), 0);
  REQUIRE_FALSE(f.has_value());
  CHECK_THAT(f.error().message(), Catch::Contains("tensor 'x'"));
  e.inputs[0] = testing::sample_tensor("s", 1, 0);
  e.inputs[0].type = dtype::string;
  CHECK_FALSE(encode(e, alice(), 0).has_value());
  // Zero-sized tensors are fine.
  e.inputs[0] = wire_tensor{"empty", dtype::f32, {0, 5}, ""};
  CHECK(encode(e, alice(), 0).has_value());
}

TEST_CASE("misaligned input decodes the same", "[net][codec]") {
  auto f = encode(testing::sample_messages()[15], alice(), fixed_header(4));
  REQUIRE(f.has_value());
  std::string buf(f->size() + 1, '\0');
  std::memcpy(&buf[1], f->data(), f->size());
  auto d = decode(reinterpret_cast<const uint8_t*>(buf.data()) + 1, f->size());
  REQUIRE(d.has_value());
  CHECK(std::get<result>(d->msg).outputs.at(0).name == "logits");
}

TEST_CASE("bid signatures bind the offer to the bidder", "[net][codec]") {
  bid b = std::get<bid>(testing::sample_messages()[7]);
  b.signature.reset();
  CHECK_FALSE(verify_bid(b, alice().public_key()));
  sign_bid(b, alice());
  CHECK(verify_bid(b, alice().public_key()));
  CHECK_FALSE(verify_bid(b, bob().public_key()));
  bid cheaper = b;
  cheaper.price /= 2;
  CHECK_FALSE(verify_bid(cheaper, alice().public_key()));
  CHECK(bid_statement(b).substr(0, 6) == "GGBID1");
  // An envelope signature is never a valid bid signature and vice versa: different prefixes.
  std::string env = envelope_statement(reinterpret_cast<const uint8_t*>("x"), 1);
  CHECK(env.substr(0, 6) == "GGENV1");
  CHECK(env.size() == 40);
}

TEST_CASE("frame errors and messages have names", "[net][codec]") {
  CHECK(std::string(to_string(frame_error::bad_signature)) == "bad signature");
  CHECK(std::string(message_name(testing::sample_messages()[16])) == "JobError");
  CHECK(std::string(to_string(job_error_code::model_missing)) == "model missing");
}

TEST_CASE("session MACs are RFC 8439 ChaCha20-Poly1305 tags at every size", "[net][codec]") {
  session_key k;
  k.bytes = testing::pattern<32>(77);
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, size_t{16} << 10, (size_t{16} << 10) + 3, size_t{300000}}) {
    INFO(n);
    std::string body(n, '\0');
    for (size_t i = 0; i < n; ++i) body[i] = static_cast<char>(i * 31 + 7);
    const auto* p = reinterpret_cast<const uint8_t*>(body.data());
    auto tag = session_mac(k, 0x0102030405060708ULL, p, n);
    unsigned char nonce[12] = {0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1};
    std::array<uint8_t, 16> want{};
    unsigned char dummy = 0;
    unsigned long long len = 0;
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(&dummy, want.data(), &len, &dummy, 0, p, n, nullptr, nonce,
                                                       k.bytes.data());
    CHECK(tag == want);
    CHECK(session_mac(k, 0x0102030405060709ULL, p, n) != want);
  }
}
