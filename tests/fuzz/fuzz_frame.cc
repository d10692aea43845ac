// libFuzzer target for the frame decoder (net/codec.h decode()).
//
// Each input is tried two ways:
//  1. as a whole frame, as it would arrive from a peer (with and without a session key);
//  2. as a bare Body wrapped in an envelope with a *valid* session MAC, so that inputs get
//     past the authenticator to the body verifier and every message converter. (A fuzzer
//     cannot forge a signature or MAC, so without this the converters would never run.)
//
// Seeds: run once with GG_FUZZ_WRITE_SEEDS=DIR to write one frame and one bare body per
// message type into DIR, then fuzz with DIR as the corpus.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "net/codec.h"
#include "net/identity.h"
#include "net/testing.h"
#include "schemas/gpugrid_generated.h"

namespace {

using namespace gpugrid;
using namespace gpugrid::net;

const identity& fuzz_identity() {
  static const identity id = identity::from_seed(testing::pattern<32>(42));
  return id;
}

const session_key& fuzz_key() {
  static const session_key k = [] {
    session_key s;
    s.bytes = testing::pattern<32>(43);
    return s;
  }();
  return k;
}

constexpr size_t kMaxInput = 1 << 20;

// Wraps `body` in an envelope with a valid MAC (needs the body's sequence number, so only
// bodies that pass the verifier are wrapped).
bool wrap_with_mac(const uint8_t* body, size_t n, std::string* out) {
  flatbuffers::Verifier v(body, n);
  if (!v.VerifyBuffer<fb::Body>(nullptr)) return false;
  uint64_t seq = flatbuffers::GetRoot<fb::Body>(body)->sequence();
  auto tag = session_mac(fuzz_key(), seq, body, n);
  flatbuffers::FlatBufferBuilder e(n + 256);
  auto key = e.CreateVector(fuzz_identity().public_key().data(), 32);
  auto mac = e.CreateVector(tag.data(), tag.size());
  e.ForceVectorAlignment(n, 1, 8);
  auto b = e.CreateVector(body, n);
  fb::EnvelopeBuilder x(e);
  x.add_sender_key(key);
  x.add_body(b);
  x.add_mac(mac);
  e.Finish(x.Finish(), fb::EnvelopeIdentifier());
  out->assign(reinterpret_cast<const char*>(e.GetBufferPointer()), e.GetSize());
  return true;
}

void write_file(const std::string& path, const void* data, size_t n) {
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, n, f);
    std::fclose(f);
  }
}

void write_seeds(const std::string& dir) {
  auto samples = testing::sample_messages();
  for (size_t i = 0; i < samples.size(); ++i) {
    frame_header h;
    h.sequence = i;
    h.channel = testing::pattern<16>(7);
    auto signed_frame = encode(samples[i], fuzz_identity(), h);
    auto mac_frame = encode_mac(samples[i], fuzz_identity().public_key(), fuzz_key(), h);
    if (!signed_frame || !mac_frame) continue;
    std::string name = message_name(samples[i]);
    write_file(dir + "/signed-" + name, signed_frame->data(), signed_frame->size());
    write_file(dir + "/mac-" + name, mac_frame->data(), mac_frame->size());
    const fb::Envelope* env = fb::GetEnvelope(signed_frame->data());
    write_file(dir + "/body-" + name, env->body()->data(), env->body()->size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("GG_FUZZ_WRITE_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  decode_options o;
  o.max_frame_bytes = kMaxInput + 4096;
  (void)decode(data, size, o);
  o.session = &fuzz_key();
  (void)decode(data, size, o);

  // The body path needs an 8-aligned copy (bodies are always 8-aligned inside envelopes).
  std::string aligned(reinterpret_cast<const char*>(data), size);
  std::string wrapped;
  if (size >= 12 && wrap_with_mac(reinterpret_cast<const uint8_t*>(aligned.data()), size, &wrapped)) {
    auto d = decode(wrapped, o);
    if (d) {
      // Whatever decodes must encode again (the struct is self-consistent).
      auto again = encode(d->msg, fuzz_identity(), 1);
      if (!again) std::abort();
    }
  }
  return 0;
}
