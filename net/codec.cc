#include "net/codec.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <chrono>
#include <cmath>
#include <cctype>
#include <cstring>
#include <optional>
#include <type_traits>

#include "net/hash.h"
#include "schemas/gpugrid_generated.h"

namespace gpugrid::net {

namespace {

namespace fb = ::gpugrid::fb;
using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;
using flatbuffers::String;
using flatbuffers::Vector;

static_assert(std::variant_size_v<message> == static_cast<size_t>(fb::Message::MAX),
              "net::message must have one alternative per schema union member, in order");
static_assert(std::is_same_v<std::variant_alternative_t<static_cast<size_t>(fb::Message::Receipt) - 1, message>,
                             ledger::receipt>,
              "union order");
static_assert(std::is_same_v<std::variant_alternative_t<static_cast<size_t>(fb::Message::Execute) - 1, message>,
                             execute>,
              "union order");

constexpr char kEnvelopePrefix[8] = {'G', 'G', 'E', 'N', 'V', '1', 0, 0};
constexpr char kBidPrefix[8] = {'G', 'G', 'B', 'I', 'D', '1', 0, 0};
constexpr size_t kMacBytes = crypto_aead_chacha20poly1305_ietf_ABYTES;
static_assert(kMacBytes == 16, "Poly1305 tag size");

// Sanity limits on list lengths (the frame limit bounds bytes; these bound work per frame).
constexpr size_t kMaxTensors = 4096;
constexpr size_t kMaxRank = 32;
constexpr size_t kMaxPeers = kMaxPeersPerExchange;
constexpr size_t kMaxUrlBytes = 2048;  // URLs and reasons in the reachability and relay messages
constexpr size_t kMaxDevices = 256;
constexpr size_t kMaxGenFiles = 256;
constexpr size_t kMaxStopStrings = 64;

// A file name a provider may create in a model folder: no directories, no dot files.
bool plain_file_name(const std::string& n) {
  if (n.empty() || n.size() > 255 || n[0] == '.') return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------- shared checks

size_t element_size(int32_t code) {
  switch (static_cast<dtype>(code)) {
    case dtype::u8: case dtype::i8: case dtype::boolean: return 1;
    case dtype::u16: case dtype::i16: case dtype::f16: case dtype::bf16: return 2;
    case dtype::f32: case dtype::i32: case dtype::u32: return 4;
    case dtype::i64: case dtype::u64: case dtype::f64: return 8;
    default: return 0;  // undefined, string and codes the engine does not know
  }
}

template <typename Dims>
status check_tensor(const char* where, const std::string& name, int32_t code, const Dims& shape, size_t data_bytes) {
  size_t es = element_size(code);
  if (es == 0) return invalid_input("{}: tensor '{}' has unsupported dtype code {}", where, name, code);
  if (shape.size() > kMaxRank) return invalid_input("{}: tensor '{}' has rank {} (limit {})", where, name, shape.size(), kMaxRank);
  // Overflow-safe product, bounded by the bytes actually present.
  uint64_t elements = 1;
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0) return invalid_input("{}: tensor '{}' has a negative dimension {}", where, name, d);
    if (d == 0) zero = true;
  }
  if (!zero) {
    const uint64_t cap = data_bytes / es + 1;
    for (int64_t d : shape) {
      if (static_cast<uint64_t>(d) > cap || elements > cap / static_cast<uint64_t>(d)) {
        elements = cap;  // larger than the data can hold
        break;
      }
      elements *= static_cast<uint64_t>(d);
    }
  } else {
    elements = 0;
  }
  if (elements * es != data_bytes)
    return invalid_input("{}: tensor '{}' holds {} bytes, which does not match its shape and dtype", where, name,
                         data_bytes);
  return status::ok();
}

status check_finite(const char* where, const char* field, double v) {
  if (!std::isfinite(v)) return invalid_input("{}: {} is not a finite number", where, field);
  return status::ok();
}

// ---------------------------------------------------------------- encoding

fb::Bytes16 b16(const bytes16& a) { return fb::Bytes16(flatbuffers::make_span(a)); }
fb::Bytes32 b32(const std::array<uint8_t, 32>& a) { return fb::Bytes32(flatbuffers::make_span(a)); }
fb::Bytes64 b64(const sig64& a) { return fb::Bytes64(flatbuffers::make_span(a)); }

class body_writer {
 public:
  explicit body_writer(FlatBufferBuilder& b) : b_(b) {}
  status error;

  Offset<Vector<uint8_t>> bytes(const std::string& s) {
    return b_.CreateVector(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  Offset<String> str(const std::string& s) { return b_.CreateString(s); }

  Offset<fb::DeviceInfo> device(const device_info& d) {
    auto name = str(d.name);
    auto kind = str(d.kind);
    fb::DeviceInfoBuilder x(b_);
    x.add_name(name);
    x.add_kind(kind);
    x.add_memory_bytes(d.memory_bytes);
    x.add_cc_major(d.cc_major);
    x.add_cc_minor(d.cc_minor);
    x.add_gflops(d.gflops);
    x.add_index(d.index);
    return x.Finish();
  }

  Offset<fb::Tensor> tensor(const wire_tensor& t) {
    status s = check_tensor("encode", t.name, static_cast<int32_t>(t.type), t.shape, t.data.size());
    if (!s.is_ok() && error.is_ok()) error = s;
    auto name = str(t.name);
    auto shape = b_.CreateVector(t.shape);
    auto data = bytes(t.data);
    fb::TensorBuilder x(b_);
    x.add_name(name);
    x.add_dtype(static_cast<int32_t>(t.type));
    x.add_shape(shape);
    x.add_data(data);
    return x.Finish();
  }

  Offset<Vector<Offset<fb::Tensor>>> tensors(const std::vector<wire_tensor>& ts) {
    std::vector<Offset<fb::Tensor>> v;
    v.reserve(ts.size());
    for (const auto& t : ts) v.push_back(tensor(t));
    return b_.CreateVector(v);
  }

  Offset<fb::Receipt> receipt(const ledger::receipt& r) {
    auto job = b16(r.job_id);
    auto client = b32(r.client_key), provider = b32(r.provider_key), model = b32(r.model_hash);
    auto in = b32(r.input_digest), out = b32(r.output_digest);
    auto psig = b64(r.provider_sig), csig = b64(r.client_sig);
    fb::ReceiptBuilder x(b_);
    x.add_kind(static_cast<fb::ReceiptKind>(r.kind));
    x.add_job_id(&job);
    x.add_client_key(&client);
    x.add_provider_key(&provider);
    x.add_model_hash(&model);
    x.add_input_digest(&in);
    x.add_output_digest(&out);
    x.add_price_micros(r.price_micros);
    x.add_started_ms(r.started_ms);
    x.add_finished_ms(r.finished_ms);
    x.add_provider_sig(&psig);
    x.add_client_sig(&csig);
    return x.Finish();
  }

  Offset<void> operator()(const hello& m) {
    std::vector<Offset<fb::DeviceInfo>> devs;
    for (const auto& d : m.devices) devs.push_back(device(d));
    auto devices = b_.CreateVector(devs);
    auto url = str(m.listen_url);
    auto software = str(m.software);
    auto key = b32(m.node_key), challenge = b32(m.challenge);
    fb::Bytes32 eph = m.ephemeral_key ? b32(*m.ephemeral_key) : fb::Bytes32();
    fb::LedgerHead head(b32(m.ledger.hash), m.ledger.count);
    fb::HelloBuilder x(b_);
    x.add_protocol_version(m.protocol_version);
    x.add_min_version(m.min_version);
    x.add_node_key(&key);
    x.add_challenge(&challenge);
    if (m.ephemeral_key) x.add_ephemeral_key(&eph);
    x.add_listen_url(url);
    x.add_role(static_cast<fb::Role>(m.role));
    x.add_devices(devices);
    x.add_ledger_head(&head);
    x.add_price_per_gflop(m.price_per_gflop);
    x.add_slots(m.slots);
    x.add_max_frame_bytes(m.max_frame_bytes);
    x.add_max_model_bytes(m.max_model_bytes);
    x.add_software(software);
    return x.Finish().Union();
  }
  Offset<void> operator()(const hello_ack& m) {
    auto sig = b64(m.signature);
    fb::HelloAckBuilder x(b_);
    x.add_protocol_version(m.protocol_version);
    x.add_signature(&sig);
    return x.Finish().Union();
  }
  Offset<void> operator()(const goodbye& m) {
    auto text = str(m.message);
    fb::GoodbyeBuilder x(b_);
    x.add_reason(static_cast<fb::GoodbyeReason>(m.reason));
    x.add_message(text);
    return x.Finish().Union();
  }
  Offset<void> operator()(const peer_exchange& m) {
    std::vector<Offset<fb::PeerInfo>> peers;
    peers.reserve(m.peers.size());
    for (const auto& p : m.peers) {
      auto url = str(p.url);
      auto key = b32(p.node_key);
      fb::PeerInfoBuilder x(b_);
      x.add_node_key(&key);
      x.add_url(url);
      x.add_last_seen_ms(p.last_seen_ms);
      x.add_role(static_cast<fb::Role>(p.role));
      peers.push_back(x.Finish());
    }
    auto list = b_.CreateVector(peers);
    fb::PeerExchangeBuilder x(b_);
    x.add_peers(list);
    x.add_want_reply(m.want_reply);
    return x.Finish().Union();
  }
  Offset<void> operator()(const ping& m) { return fb::CreatePing(b_, m.nonce).Union(); }
  Offset<void> operator()(const pong& m) { return fb::CreatePong(b_, m.nonce).Union(); }
  Offset<void> operator()(const bid_request& m) {
    auto job = b16(m.job);
    auto hash = b32(m.model_hash);
    fb::BidRequestBuilder x(b_);
    x.add_job_id(&job);
    x.add_model_hash(&hash);
    x.add_model_bytes(m.model_bytes);
    x.add_gflops(m.gflops);
    x.add_input_bytes(m.input_bytes);
    x.add_max_price(m.max_price);
    x.add_deadline_ms(m.deadline_ms);
    return x.Finish().Union();
  }
  Offset<void> operator()(const bid& m) {
    Offset<fb::DeviceInfo> dev;
    if (m.device) dev = device(*m.device);
    auto job = b16(m.job);
    fb::Bytes64 sig = m.signature ? b64(*m.signature) : fb::Bytes64();
    Offset<flatbuffers::Vector<uint8_t>> terms;
    if (m.terms) terms = bytes(m.terms->pack());
    fb::BidBuilder x(b_);
    x.add_job_id(&job);
    x.add_price(m.price);
    x.add_eta_ms(m.eta_ms);
    x.add_model_cached(m.model_cached);
    if (m.device) x.add_device(dev);
    x.add_valid_ms(m.valid_ms);
    if (m.signature) x.add_signature(&sig);
    if (m.terms) x.add_chain_terms(terms);
    if (m.capacity != 0) x.add_capacity(m.capacity);
    return x.Finish().Union();
  }
  Offset<void> operator()(const bid_decline& m) {
    auto detail = str(m.detail);
    auto job = b16(m.job);
    fb::BidDeclineBuilder x(b_);
    x.add_job_id(&job);
    x.add_reason(static_cast<fb::DeclineReason>(m.reason));
    x.add_detail(detail);
    return x.Finish().Union();
  }
  Offset<void> operator()(const award& m) {
    auto job = b16(m.job);
    fb::AwardBuilder x(b_);
    x.add_job_id(&job);
    x.add_price(m.price);
    return x.Finish().Union();
  }
  Offset<void> operator()(const cancel& m) {
    auto reason = str(m.reason);
    auto job = b16(m.job);
    fb::CancelBuilder x(b_);
    x.add_job_id(&job);
    x.add_reason(reason);
    return x.Finish().Union();
  }
  Offset<void> operator()(const model_put& m) {
    auto hash = b32(m.model_hash);
    fb::Bytes16 job = m.job ? b16(*m.job) : fb::Bytes16();
    fb::ModelPutBuilder x(b_);
    x.add_model_hash(&hash);
    x.add_total_bytes(m.total_bytes);
    x.add_chunk_bytes(m.chunk_bytes);
    if (m.job) x.add_job_id(&job);
    return x.Finish().Union();
  }
  Offset<void> operator()(const model_chunk& m) {
    auto data = bytes(m.data);
    auto hash = b32(m.model_hash);
    fb::ModelChunkBuilder x(b_);
    x.add_model_hash(&hash);
    x.add_index(m.index);
    x.add_data(data);
    return x.Finish().Union();
  }
  Offset<void> operator()(const model_need& m) {
    auto hash = b32(m.model_hash);
    fb::Bytes16 job = m.job ? b16(*m.job) : fb::Bytes16();
    fb::ModelNeedBuilder x(b_);
    x.add_model_hash(&hash);
    if (m.job) x.add_job_id(&job);
    return x.Finish().Union();
  }
  Offset<void> operator()(const execute& m) {
    auto inputs = tensors(m.inputs);
    auto job = b16(m.job);
    auto hash = b32(m.model_hash), digest = b32(m.input_digest);
    Offset<flatbuffers::Vector<uint8_t>> voucher;
    if (m.voucher) voucher = bytes(m.voucher->pack());
    fb::ExecuteBuilder x(b_);
    x.add_job_id(&job);
    x.add_model_hash(&hash);
    x.add_inputs(inputs);
    x.add_input_digest(&digest);
    x.add_price(m.price);
    x.add_started_ms(m.started_ms);
    if (m.voucher) x.add_voucher(voucher);
    return x.Finish().Union();
  }
  Offset<void> operator()(const result& m) {
    auto outputs = tensors(m.outputs);
    Offset<fb::Receipt> rc;
    if (m.receipt) rc = receipt(*m.receipt);
    auto job = b16(m.job);
    auto digest = b32(m.output_digest);
    auto sig = b64(m.signature);
    fb::ResultBuilder x(b_);
    x.add_job_id(&job);
    x.add_outputs(outputs);
    x.add_output_digest(&digest);
    x.add_signature(&sig);
    x.add_compute_ms(m.compute_ms);
    x.add_model_was_cached(m.model_was_cached);
    if (m.receipt) x.add_receipt(rc);
    return x.Finish().Union();
  }
  Offset<void> operator()(const job_error& m) {
    auto text = str(m.message);
    auto job = b16(m.job);
    fb::JobErrorBuilder x(b_);
    x.add_job_id(&job);
    x.add_code(static_cast<fb::JobErrorCode>(m.code));
    x.add_message(text);
    return x.Finish().Union();
  }
  Offset<void> operator()(const ledger::receipt& m) { return receipt(m).Union(); }
  Offset<void> operator()(const receipt_ack& m) {
    auto detail = str(m.detail);
    auto job = b16(m.job);
    fb::ReceiptAckBuilder x(b_);
    x.add_job_id(&job);
    x.add_status(static_cast<fb::ReceiptStatus>(m.status));
    x.add_detail(detail);
    return x.Finish().Union();
  }
  Offset<void> operator()(const dht_query& m) {
    auto records = provider_records(m.records);
    auto addr = str(m.sender_address);
    auto cls = str(m.device_class);
    auto target = b32(m.target);
    fb::DhtQueryBuilder x(b_);
    x.add_request_id(m.request_id);
    x.add_kind(static_cast<fb::DhtQueryKind>(m.kind));
    x.add_target(&target);
    x.add_sender_address(addr);
    x.add_device_class(cls);
    x.add_max_price(m.max_price);
    x.add_limit(m.limit);
    x.add_records(records);
    return x.Finish().Union();
  }
  Offset<void> operator()(const dht_reply& m) {
    std::vector<Offset<fb::DhtContact>> nodes;
    nodes.reserve(m.nodes.size());
    for (const auto& c : m.nodes) {
      auto addr = str(c.address);
      auto key = b32(c.id);
      fb::DhtContactBuilder x(b_);
      x.add_node_key(&key);
      x.add_address(addr);
      nodes.push_back(x.Finish());
    }
    auto node_list = b_.CreateVector(nodes);
    auto records = provider_records(m.records);
    fb::DhtReplyBuilder x(b_);
    x.add_request_id(m.request_id);
    x.add_nodes(node_list);
    x.add_records(records);
    x.add_stored(m.stored);
    return x.Finish().Union();
  }

  Offset<void> operator()(const gen_open& m) {
    std::vector<Offset<fb::GenFile>> files;
    files.reserve(m.files.size());
    for (const auto& f : m.files) {
      auto name = str(f.name);
      auto hash = b32(f.hash);
      fb::GenFileBuilder x(b_);
      x.add_name(name);
      x.add_hash(&hash);
      x.add_size(f.size);
      files.push_back(x.Finish());
    }
    auto list = b_.CreateVector(files);
    auto session = b16(m.session);
    auto manifest = b32(m.manifest);
    fb::GenOpenBuilder x(b_);
    x.add_session_id(&session);
    x.add_manifest_hash(&manifest);
    x.add_files(list);
    x.add_prompt_tokens(m.prompt_tokens);
    x.add_max_new_tokens(m.max_new_tokens);
    x.add_max_price_prompt(m.max_price_prompt);
    x.add_max_price_generated(m.max_price_generated);
    return x.Finish().Union();
  }
  Offset<void> operator()(const gen_bid& m) {
    auto session = b16(m.session);
    fb::Bytes64 sig = m.signature ? b64(*m.signature) : fb::Bytes64();
    Offset<flatbuffers::Vector<uint8_t>> terms, terms_prompt;
    if (m.terms) {
      terms = bytes(m.terms->terms.pack());
      terms_prompt = bytes(std::string(m.terms->price_prompt.begin(), m.terms->price_prompt.end()));
    }
    fb::GenBidBuilder x(b_);
    x.add_session_id(&session);
    x.add_price_prompt(m.price_prompt);
    x.add_price_generated(m.price_generated);
    x.add_tokens_per_s(m.tokens_per_s);
    x.add_model_cached(m.model_cached);
    x.add_valid_ms(m.valid_ms);
    if (m.signature) x.add_signature(&sig);
    if (m.terms) {
      x.add_chain_terms(terms);
      x.add_chain_price_prompt(terms_prompt);
    }
    return x.Finish().Union();
  }
  Offset<void> operator()(const gen_pay& m) {
    auto voucher = bytes(m.voucher.pack());
    auto session = b16(m.session);
    fb::GenPayBuilder x(b_);
    x.add_session_id(&session);
    x.add_voucher(voucher);
    return x.Finish().Union();
  }
  Offset<void> operator()(const gen_prompt& m) {
    auto prompt = b_.CreateVector(m.prompt_ids);
    auto generated = b_.CreateVector(m.generated_ids);
    std::vector<Offset<String>> stops;
    for (const auto& t : m.stop_strings) stops.push_back(str(t));
    auto stop_list = b_.CreateVector(stops);
    auto stop_ids = b_.CreateVector(m.stop_token_ids);
    const gen_sampling& g = m.sampling;
    auto sampling = fb::CreateGenSampling(b_, g.temperature, g.top_k, g.top_p, g.min_p, g.repetition_penalty, g.seed);
    auto session = b16(m.session);
    auto manifest = b32(m.manifest);
    Offset<flatbuffers::Vector<uint8_t>> voucher;
    if (m.voucher) voucher = bytes(m.voucher->pack());
    fb::GenPromptBuilder x(b_);
    x.add_session_id(&session);
    x.add_manifest_hash(&manifest);
    x.add_prompt_ids(prompt);
    x.add_generated_ids(generated);
    x.add_sampling(sampling);
    x.add_max_new_tokens(m.max_new_tokens);
    x.add_stop_strings(stop_list);
    x.add_stop_token_ids(stop_ids);
    x.add_ignore_eos(m.ignore_eos);
    x.add_price_prompt(m.price_prompt);
    x.add_price_generated(m.price_generated);
    x.add_started_ms(m.started_ms);
    x.add_score_only(m.score_only);
    if (m.voucher) x.add_voucher(voucher);
    return x.Finish().Union();
  }
  Offset<void> operator()(const gen_tokens& m) {
    std::vector<fb::GenToken> toks;
    toks.reserve(m.tokens.size());
    for (const auto& t : m.tokens) toks.emplace_back(t.id, t.logprob, t.index);
    auto list = b_.CreateVectorOfStructs(toks);
    Offset<fb::Receipt> rc;
    if (m.receipt) rc = receipt(*m.receipt);
    auto session = b16(m.session);
    auto digest = b32(m.stream_digest);
    auto sig = b64(m.signature);
    fb::GenTokensBuilder x(b_);
    x.add_session_id(&session);
    x.add_tokens(list);
    x.add_done(m.done);
    x.add_finish_reason(m.finish_reason);
    x.add_stream_digest(&digest);
    x.add_signature(&sig);
    if (m.receipt) x.add_receipt(rc);
    x.add_tokens_per_s(m.tokens_per_s);
    return x.Finish().Union();
  }
  Offset<void> operator()(const dial_back& m) {
    fb::DialBackBuilder x(b_);
    x.add_nonce(m.nonce);
    return x.Finish().Union();
  }
  Offset<void> operator()(const dial_back_result& m) {
    auto url = str(m.url);
    auto detail = str(m.detail);
    fb::DialBackResultBuilder x(b_);
    x.add_nonce(m.nonce);
    x.add_reachable(m.reachable);
    x.add_url(url);
    x.add_detail(detail);
    return x.Finish().Union();
  }
  Offset<void> operator()(const relay_attach& m) {
    fb::RelayAttachBuilder x(b_);
    x.add_attach(m.attach);
    return x.Finish().Union();
  }
  Offset<void> operator()(const relay_attach_ack& m) {
    auto url = str(m.relayed_url);
    auto detail = str(m.detail);
    fb::RelayAttachAckBuilder x(b_);
    x.add_accepted(m.accepted);
    x.add_relayed_url(url);
    x.add_detail(detail);
    return x.Finish().Union();
  }
  Offset<void> operator()(const relay_incoming& m) {
    auto token = b16(m.token);
    fb::RelayIncomingBuilder x(b_);
    x.add_token(&token);
    return x.Finish().Union();
  }
  Offset<void> operator()(const node_status& m) {
    auto url = str(m.url);
    fb::NodeStatusBuilder x(b_);
    x.add_reachable(m.reachable);
    x.add_url(url);
    x.add_relay(m.relay);
    return x.Finish().Union();
  }

 private:
  Offset<Vector<Offset<fb::ProviderRecord>>> provider_records(const std::vector<discovery::provider_record>& rs) {
    std::vector<Offset<fb::ProviderRecord>> out;
    out.reserve(rs.size());
    for (const auto& r : rs) {
      std::vector<Offset<String>> addrs;
      for (const auto& a : r.addresses) addrs.push_back(str(a));
      auto addr_list = b_.CreateVector(addrs);
      auto cls = str(r.device_class);
      auto key = b32(r.key), provider = b32(r.provider);
      auto sig = b64(r.sig);
      fb::ProviderRecordBuilder x(b_);
      x.add_key(&key);
      x.add_provider(&provider);
      x.add_addresses(addr_list);
      x.add_device_class(cls);
      x.add_price(r.price);
      x.add_issued_ms(r.issued_ms);
      x.add_expires_ms(r.expires_ms);
      x.add_signature(&sig);
      out.push_back(x.Finish());
    }
    return b_.CreateVector(out);
  }
  FlatBufferBuilder& b_;
};

size_t tensors_bytes(const std::vector<wire_tensor>& ts) {
  size_t n = 0;
  for (const auto& t : ts) n += t.data.size() + t.name.size() + 8 * t.shape.size() + 64;
  return n;
}

// Builds the Body table into the fresh builder `b`.
expected<Offset<fb::Body>> build_body(FlatBufferBuilder& b, const message& m, const frame_header& h) {
  body_writer w(b);
  Offset<void> msg = std::visit(w, m);
  GG_RETURN_IF_ERROR(w.error);
  fb::Bytes16 channel = h.channel ? b16(*h.channel) : fb::Bytes16();
  fb::BodyBuilder x(b);
  x.add_protocol_version(h.protocol_version);
  x.add_sequence(h.sequence);
  x.add_timestamp_ms(h.timestamp_ms < 0 ? now_ms() : h.timestamp_ms);
  if (h.channel) x.add_channel(&channel);
  x.add_msg_type(static_cast<fb::Message>(m.index() + 1));
  x.add_msg(msg);
  return x.Finish();
}

void mac_nonce(uint64_t sequence, unsigned char nonce[12]) {
  std::memset(nonce, 0, 12);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<unsigned char>(sequence >> (8 * i));
}

// ChaCha20-Poly1305 (RFC 8439) over an empty plaintext with the body as associated data.
// libsodium for small bodies; OpenSSL for large ones, whose vectorised Poly1305 is about twice
// as fast here. Both compute the same tag (codec_test checks).
constexpr size_t kOpenSslMacFrom = 16 << 10;

bool openssl_mac(const session_key& k, const unsigned char nonce[12], const uint8_t* body, size_t n,
                 uint8_t tag[16]) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return false;
  bool ok = EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx, nullptr, nullptr, k.bytes.data(), nonce) == 1;
  while (ok && n > 0) {
    int chunk = static_cast<int>(std::min<size_t>(n, size_t{1} << 30));
    int len = 0;
    ok = EVP_EncryptUpdate(ctx, nullptr, &len, body, chunk) == 1;
    body += chunk;
    n -= static_cast<size_t>(chunk);
  }
  int len = 0;
  ok = ok && EVP_EncryptFinal_ex(ctx, nullptr, &len) == 1 &&
       EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1;
  EVP_CIPHER_CTX_free(ctx);
  return ok;
}

std::array<uint8_t, 16> compute_mac(const session_key& k, uint64_t sequence, const uint8_t* body, size_t n) {
  unsigned char nonce[12];
  mac_nonce(sequence, nonce);
  std::array<uint8_t, 16> tag{};
  if (n >= kOpenSslMacFrom && openssl_mac(k, nonce, body, n, tag.data())) return tag;
  unsigned char dummy = 0;
  unsigned long long taglen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(&dummy, tag.data(), &taglen, &dummy, 0, body, n, nullptr, nonce,
                                                     k.bytes.data());
  return tag;
}

bool check_mac(const session_key& k, uint64_t sequence, const uint8_t* body, size_t n, const uint8_t* tag) {
  std::array<uint8_t, 16> want = compute_mac(k, sequence, body, n);
  return sodium_memcmp(want.data(), tag, want.size()) == 0;
}

constexpr size_t kMaxBody = size_t{0x7fffffff} - 4096;

// Builds the envelope in one buffer: the Body first (as a nested buffer at the end of the
// builder, exactly as Finish() would lay it out), then the authenticator over those bytes,
// then the envelope around them. This saves copying a large body a second time.
// `auth` gets the body bytes and fills either *sig or *mac.
template <typename Auth>
expected<frame> build_frame(const message& m, const frame_header& h, const key32& sender, Auth auth) {
  FlatBufferBuilder b(encoded_size_estimate(m) + 512);
  GG_ASSIGN_OR_RETURN(Offset<fb::Body> body, build_body(b, m, h));
  // Finish the nested buffer by hand: its root offset, 8-aligned so that the body's own 8-byte
  // fields are aligned relative to its start (it ends where the builder's buffer ends).
  b.PreAlign(sizeof(flatbuffers::uoffset_t), 8);
  b.PushElement(b.ReferTo(body.o));
  const size_t body_size = b.GetSize();
  if (body_size > kMaxBody) return invalid_input("encode: {} body of {} bytes is too large", message_name(m), body_size);
  std::optional<sig64> sig;
  std::optional<std::array<uint8_t, 16>> mac;
  auth(b.GetCurrentBufferPointer(), body_size, &sig, &mac);
  // The length prefix turns the nested buffer into a [ubyte] vector.
  b.PushElement(static_cast<flatbuffers::uoffset_t>(body_size));
  Offset<Vector<uint8_t>> body_vec(b.GetSize());
  auto key = b.CreateVector(sender.data(), sender.size());
  Offset<Vector<uint8_t>> s, t;
  if (sig) s = b.CreateVector(sig->data(), sig->size());
  if (mac) t = b.CreateVector(mac->data(), mac->size());
  fb::EnvelopeBuilder x(b);
  x.add_sender_key(key);
  if (sig) x.add_signature(s);
  x.add_body(body_vec);
  if (mac) x.add_mac(t);
  b.Finish(x.Finish(), fb::EnvelopeIdentifier());
  auto owner = std::make_shared<flatbuffers::DetachedBuffer>(b.Release());
  const uint8_t* data = owner->data();
  size_t size = owner->size();
  return frame(std::move(owner), data, size);
}

// FLATBUFFERS_MIN_BUFFER_SIZE, spelled out (the macro needs the flatbuffers namespace in scope).
constexpr size_t kMinBufferSize = sizeof(flatbuffers::uoffset_t) + sizeof(flatbuffers::soffset_t) + 2 * sizeof(uint16_t);

// ---------------------------------------------------------------- decoding

struct bad {
  frame_error code;
  status why;
};

template <size_t N, typename S>
bool copy_fixed(const S* s, std::array<uint8_t, N>& out) {
  static_assert(sizeof(S) == N, "fixed-size struct");
  if (!s) return false;
  std::memcpy(out.data(), s->v()->data(), N);
  return true;
}

std::string str(const String* s) { return s ? s->str() : std::string(); }
std::string bytes(const Vector<uint8_t>* v) {
  return v ? std::string(reinterpret_cast<const char*>(v->data()), v->size()) : std::string();
}

#define GG_NEED(what, ok, field) \
  if (!(ok)) return invalid_input("{}: missing {}", what, field)

status read_device(const fb::DeviceInfo* d, const char* where, device_info& out) {
  if (!d) return invalid_input("{}: null device entry", where);
  out.name = str(d->name());
  out.kind = str(d->kind());
  out.memory_bytes = d->memory_bytes();
  out.cc_major = d->cc_major();
  out.cc_minor = d->cc_minor();
  out.gflops = d->gflops();
  out.index = d->index();
  return check_finite(where, "device gflops", out.gflops);
}

status read_tensors(const Vector<Offset<fb::Tensor>>* v, const char* where, std::vector<wire_tensor>& out) {
  if (!v) return status::ok();
  if (v->size() > kMaxTensors) return invalid_input("{}: {} tensors (limit {})", where, v->size(), kMaxTensors);
  out.reserve(v->size());
  for (const fb::Tensor* t : *v) {
    if (!t) return invalid_input("{}: null tensor entry", where);
    wire_tensor w;
    w.name = str(t->name());
    const Vector<int64_t>* shape = t->shape();
    size_t nbytes = t->data() ? t->data()->size() : 0;
    if (shape) {
      if (shape->size() > kMaxRank) return invalid_input("{}: tensor '{}' has rank {} (limit {})", where, w.name, shape->size(), kMaxRank);
      // memcpy, not the vector's iterators: the verifier checks a vector's length field for
      // 4-byte alignment only, so 8-byte elements may sit misaligned (found by fuzz_frame).
      static_assert(FLATBUFFERS_LITTLEENDIAN, "the wire is little-endian");
      w.shape.resize(shape->size());
      if (shape->size()) std::memcpy(w.shape.data(), shape->Data(), shape->size() * sizeof(int64_t));
    }
    GG_RETURN_IF_ERROR(check_tensor(where, w.name, t->dtype(), w.shape, nbytes));
    w.type = static_cast<dtype>(t->dtype());
    w.data = bytes(t->data());
    out.push_back(std::move(w));
  }
  return status::ok();
}

status read_receipt(const fb::Receipt* r, const char* where, ledger::receipt& out) {
  auto kind = static_cast<uint8_t>(r->kind());
  if (kind < 1 || kind > 3) return invalid_input("{}: unknown receipt kind {}", where, kind);
  out.kind = static_cast<ledger::receipt_kind>(kind);
  GG_NEED(where, copy_fixed(r->job_id(), out.job_id), "job_id");
  GG_NEED(where, copy_fixed(r->client_key(), out.client_key), "client_key");
  GG_NEED(where, copy_fixed(r->provider_key(), out.provider_key), "provider_key");
  GG_NEED(where, copy_fixed(r->model_hash(), out.model_hash), "model_hash");
  GG_NEED(where, copy_fixed(r->input_digest(), out.input_digest), "input_digest");
  GG_NEED(where, copy_fixed(r->output_digest(), out.output_digest), "output_digest");
  GG_NEED(where, copy_fixed(r->provider_sig(), out.provider_sig), "provider_sig");
  GG_NEED(where, copy_fixed(r->client_sig(), out.client_sig), "client_sig");
  out.price_micros = r->price_micros();
  out.started_ms = r->started_ms();
  out.finished_ms = r->finished_ms();
  return status::ok();
}

status read_provider_records(const Vector<Offset<fb::ProviderRecord>>* v, const char* where,
                             std::vector<discovery::provider_record>& out) {
  if (!v) return status::ok();
  if (v->size() > discovery::kMaxRecordsPerMessage)
    return invalid_input("{}: {} records (limit {})", where, v->size(), discovery::kMaxRecordsPerMessage);
  out.reserve(v->size());
  for (const fb::ProviderRecord* r : *v) {
    if (!r) return invalid_input("{}: null record", where);
    discovery::provider_record& x = out.emplace_back();
    GG_NEED(where, copy_fixed(r->key(), x.key), "record key");
    GG_NEED(where, copy_fixed(r->provider(), x.provider), "record provider");
    GG_NEED(where, copy_fixed(r->signature(), x.sig), "record signature");
    if (const auto* addrs = r->addresses()) {
      if (addrs->size() > discovery::kMaxAddresses)
        return invalid_input("{}: a record with {} addresses (limit {})", where, addrs->size(), discovery::kMaxAddresses);
      for (const String* a : *addrs) x.addresses.push_back(str(a));
    }
    x.device_class = str(r->device_class());
    x.price = r->price();
    GG_RETURN_IF_ERROR(check_finite(where, "record price", x.price));
    x.issued_ms = r->issued_ms();
    x.expires_ms = r->expires_ms();
  }
  return status::ok();
}

template <typename E>
bool enum_in_range(E v) {
  return static_cast<uint64_t>(v) <= static_cast<uint64_t>(E::MAX);
}

expected<message> read_message(const fb::Body* body, frame_error* code) {
  *code = frame_error::bad_message;
  if (body->msg_type() != fb::Message::NONE && enum_in_range(body->msg_type()) && !body->msg())
    return invalid_input("{} frame has no message table", message_name(static_cast<size_t>(body->msg_type()) - 1));
  switch (body->msg_type()) {
    case fb::Message::Hello: {
      const char* w = "Hello";
      const fb::Hello* x = body->msg_as_Hello();
      hello m;
      m.protocol_version = x->protocol_version();
      m.min_version = x->min_version();
      GG_NEED(w, copy_fixed(x->node_key(), m.node_key), "node_key");
      GG_NEED(w, copy_fixed(x->challenge(), m.challenge), "challenge");
      if (x->ephemeral_key()) copy_fixed(x->ephemeral_key(), m.ephemeral_key.emplace());
      m.listen_url = str(x->listen_url());
      if (!enum_in_range(x->role())) return invalid_input("Hello: unknown role {}", static_cast<int>(x->role()));
      m.role = static_cast<node_role>(x->role());
      if (const auto* devs = x->devices()) {
        if (devs->size() > kMaxDevices) return invalid_input("Hello: {} devices (limit {})", devs->size(), kMaxDevices);
        for (const fb::DeviceInfo* d : *devs) GG_RETURN_IF_ERROR(read_device(d, w, m.devices.emplace_back()));
      }
      if (const fb::LedgerHead* h = x->ledger_head()) {
        copy_fixed(&h->hash(), m.ledger.hash);
        m.ledger.count = h->count();
      }
      m.price_per_gflop = x->price_per_gflop();
      GG_RETURN_IF_ERROR(check_finite(w, "price_per_gflop", m.price_per_gflop));
      m.slots = x->slots();
      m.max_frame_bytes = x->max_frame_bytes();
      m.max_model_bytes = x->max_model_bytes();
      m.software = str(x->software());
      if (m.min_version > m.protocol_version)
        return invalid_input("Hello: min_version {} is above protocol_version {}", m.min_version, m.protocol_version);
      return message(std::move(m));
    }
    case fb::Message::HelloAck: {
      const fb::HelloAck* x = body->msg_as_HelloAck();
      hello_ack m;
      m.protocol_version = x->protocol_version();
      GG_NEED("HelloAck", copy_fixed(x->signature(), m.signature), "signature");
      return message(m);
    }
    case fb::Message::Goodbye: {
      const fb::Goodbye* x = body->msg_as_Goodbye();
      goodbye m;
      // A reason this build does not know (a newer peer) still closes the connection.
      m.reason = enum_in_range(x->reason()) ? static_cast<goodbye_reason>(x->reason()) : goodbye_reason::protocol_error;
      m.message = str(x->message());
      return message(std::move(m));
    }
    case fb::Message::PeerExchange: {
      const fb::PeerExchange* x = body->msg_as_PeerExchange();
      peer_exchange m;
      m.want_reply = x->want_reply();
      if (const auto* peers = x->peers()) {
        if (peers->size() > kMaxPeers) return invalid_input("PeerExchange: {} peers (limit {})", peers->size(), kMaxPeers);
        m.peers.reserve(peers->size());
        for (const fb::PeerInfo* p : *peers) {
          if (!p) return invalid_input("PeerExchange: null peer entry");
          peer_info& q = m.peers.emplace_back();
          GG_NEED("PeerExchange", copy_fixed(p->node_key(), q.node_key), "node_key");
          q.url = str(p->url());
          q.last_seen_ms = p->last_seen_ms();
          if (!enum_in_range(p->role())) return invalid_input("PeerExchange: unknown role {}", static_cast<int>(p->role()));
          q.role = static_cast<node_role>(p->role());
        }
      }
      return message(std::move(m));
    }
    case fb::Message::Ping: return message(ping{body->msg_as_Ping()->nonce()});
    case fb::Message::Pong: return message(pong{body->msg_as_Pong()->nonce()});
    case fb::Message::BidRequest: {
      const char* w = "BidRequest";
      const fb::BidRequest* x = body->msg_as_BidRequest();
      bid_request m;
      GG_NEED(w, copy_fixed(x->job_id(), m.job), "job_id");
      GG_NEED(w, copy_fixed(x->model_hash(), m.model_hash), "model_hash");
      m.model_bytes = x->model_bytes();
      m.gflops = x->gflops();
      m.input_bytes = x->input_bytes();
      m.max_price = x->max_price();
      m.deadline_ms = x->deadline_ms();
      GG_RETURN_IF_ERROR(check_finite(w, "gflops", m.gflops));
      GG_RETURN_IF_ERROR(check_finite(w, "max_price", m.max_price));
      if (m.gflops < 0) return invalid_input("BidRequest: negative gflops");
      return message(m);
    }
    case fb::Message::Bid: {
      const char* w = "Bid";
      const fb::Bid* x = body->msg_as_Bid();
      bid m;
      GG_NEED(w, copy_fixed(x->job_id(), m.job), "job_id");
      m.price = x->price();
      GG_RETURN_IF_ERROR(check_finite(w, "price", m.price));
      if (m.price < 0) return invalid_input("Bid: negative price");
      m.eta_ms = x->eta_ms();
      m.model_cached = x->model_cached();
      if (x->device()) GG_RETURN_IF_ERROR(read_device(x->device(), w, m.device.emplace()));
      m.valid_ms = x->valid_ms();
      m.capacity = x->capacity();
      if (m.capacity < 0) return invalid_input("Bid: negative capacity");
      if (x->signature()) copy_fixed(x->signature(), m.signature.emplace());
      if (x->chain_terms()) {
        auto t = ledger::chain_terms::unpack(bytes(x->chain_terms()), "Bid.chain_terms");
        if (!t) return t.error();
        m.terms = *t;
      }
      return message(std::move(m));
    }
    case fb::Message::BidDecline: {
      const fb::BidDecline* x = body->msg_as_BidDecline();
      bid_decline m;
      GG_NEED("BidDecline", copy_fixed(x->job_id(), m.job), "job_id");
      m.reason = enum_in_range(x->reason()) ? static_cast<decline_reason>(x->reason()) : decline_reason::internal;
      m.detail = str(x->detail());
      return message(std::move(m));
    }
    case fb::Message::Award: {
      const fb::Award* x = body->msg_as_Award();
      award m;
      GG_NEED("Award", copy_fixed(x->job_id(), m.job), "job_id");
      m.price = x->price();
      GG_RETURN_IF_ERROR(check_finite("Award", "price", m.price));
      return message(m);
    }
    case fb::Message::Cancel: {
      const fb::Cancel* x = body->msg_as_Cancel();
      cancel m;
      GG_NEED("Cancel", copy_fixed(x->job_id(), m.job), "job_id");
      m.reason = str(x->reason());
      return message(std::move(m));
    }
    case fb::Message::ModelPut: {
      const fb::ModelPut* x = body->msg_as_ModelPut();
      model_put m;
      GG_NEED("ModelPut", copy_fixed(x->model_hash(), m.model_hash), "model_hash");
      m.total_bytes = x->total_bytes();
      m.chunk_bytes = x->chunk_bytes();
      if (x->job_id()) copy_fixed(x->job_id(), m.job.emplace());
      return message(m);
    }
    case fb::Message::ModelChunk: {
      const fb::ModelChunk* x = body->msg_as_ModelChunk();
      model_chunk m;
      GG_NEED("ModelChunk", copy_fixed(x->model_hash(), m.model_hash), "model_hash");
      m.index = x->index();
      m.data = bytes(x->data());
      return message(std::move(m));
    }
    case fb::Message::ModelNeed: {
      const fb::ModelNeed* x = body->msg_as_ModelNeed();
      model_need m;
      GG_NEED("ModelNeed", copy_fixed(x->model_hash(), m.model_hash), "model_hash");
      if (x->job_id()) copy_fixed(x->job_id(), m.job.emplace());
      return message(m);
    }
    case fb::Message::Execute: {
      const char* w = "Execute";
      const fb::Execute* x = body->msg_as_Execute();
      execute m;
      GG_NEED(w, copy_fixed(x->job_id(), m.job), "job_id");
      GG_NEED(w, copy_fixed(x->model_hash(), m.model_hash), "model_hash");
      GG_NEED(w, copy_fixed(x->input_digest(), m.input_digest), "input_digest");
      m.price = x->price();
      GG_RETURN_IF_ERROR(check_finite(w, "price", m.price));
      m.started_ms = x->started_ms();
      GG_RETURN_IF_ERROR(read_tensors(x->inputs(), w, m.inputs));
      if (x->voucher()) {
        auto v = ledger::voucher_claim::unpack(bytes(x->voucher()), "Execute.voucher");
        if (!v) return v.error();
        m.voucher = *v;
      }
      return message(std::move(m));
    }
    case fb::Message::Result: {
      const char* w = "Result";
      const fb::Result* x = body->msg_as_Result();
      result m;
      GG_NEED(w, copy_fixed(x->job_id(), m.job), "job_id");
      GG_NEED(w, copy_fixed(x->output_digest(), m.output_digest), "output_digest");
      GG_NEED(w, copy_fixed(x->signature(), m.signature), "signature");
      m.compute_ms = x->compute_ms();
      GG_RETURN_IF_ERROR(check_finite(w, "compute_ms", m.compute_ms));
      m.model_was_cached = x->model_was_cached();
      GG_RETURN_IF_ERROR(read_tensors(x->outputs(), w, m.outputs));
      if (x->receipt()) GG_RETURN_IF_ERROR(read_receipt(x->receipt(), "Result.receipt", m.receipt.emplace()));
      return message(std::move(m));
    }
    case fb::Message::JobError: {
      const fb::JobError* x = body->msg_as_JobError();
      job_error m;
      GG_NEED("JobError", copy_fixed(x->job_id(), m.job), "job_id");
      m.code = enum_in_range(x->code()) ? static_cast<job_error_code>(x->code()) : job_error_code::internal;
      m.message = str(x->message());
      return message(std::move(m));
    }
    case fb::Message::Receipt: {
      ledger::receipt m;
      GG_RETURN_IF_ERROR(read_receipt(body->msg_as_Receipt(), "Receipt", m));
      return message(m);
    }
    case fb::Message::ReceiptAck: {
      const fb::ReceiptAck* x = body->msg_as_ReceiptAck();
      receipt_ack m;
      GG_NEED("ReceiptAck", copy_fixed(x->job_id(), m.job), "job_id");
      if (!enum_in_range(x->status()))
        return invalid_input("ReceiptAck: unknown status {}", static_cast<int>(x->status()));
      m.status = static_cast<receipt_status>(x->status());
      m.detail = str(x->detail());
      return message(std::move(m));
    }
    case fb::Message::GenOpen: {
      const char* w = "GenOpen";
      const fb::GenOpen* x = body->msg_as_GenOpen();
      gen_open m;
      GG_NEED(w, copy_fixed(x->session_id(), m.session), "session_id");
      GG_NEED(w, copy_fixed(x->manifest_hash(), m.manifest), "manifest_hash");
      if (x->files()) {
        if (x->files()->size() > kMaxGenFiles) return invalid_input("GenOpen: {} files (limit {})", x->files()->size(), kMaxGenFiles);
        for (const fb::GenFile* f : *x->files()) {
          if (!f) return invalid_input("GenOpen: null file entry");
          gen_file g;
          g.name = str(f->name());
          if (!plain_file_name(g.name)) return invalid_input("GenOpen: '{}' is not a plain file name", g.name);
          GG_NEED(w, copy_fixed(f->hash(), g.hash), "file hash");
          g.size = f->size();
          m.files.push_back(std::move(g));
        }
      }
      if (m.files.empty()) return invalid_input("GenOpen: no files");
      m.prompt_tokens = x->prompt_tokens();
      m.max_new_tokens = x->max_new_tokens();
      m.max_price_prompt = x->max_price_prompt();
      m.max_price_generated = x->max_price_generated();
      GG_RETURN_IF_ERROR(check_finite(w, "max_price_prompt", m.max_price_prompt));
      GG_RETURN_IF_ERROR(check_finite(w, "max_price_generated", m.max_price_generated));
      return message(std::move(m));
    }
    case fb::Message::GenBid: {
      const char* w = "GenBid";
      const fb::GenBid* x = body->msg_as_GenBid();
      gen_bid m;
      GG_NEED(w, copy_fixed(x->session_id(), m.session), "session_id");
      m.price_prompt = x->price_prompt();
      m.price_generated = x->price_generated();
      m.tokens_per_s = x->tokens_per_s();
      GG_RETURN_IF_ERROR(check_finite(w, "price_prompt", m.price_prompt));
      GG_RETURN_IF_ERROR(check_finite(w, "price_generated", m.price_generated));
      GG_RETURN_IF_ERROR(check_finite(w, "tokens_per_s", m.tokens_per_s));
      if (m.price_prompt < 0 || m.price_generated < 0) return invalid_input("GenBid: negative price");
      m.model_cached = x->model_cached();
      m.valid_ms = x->valid_ms();
      if (x->signature()) copy_fixed(x->signature(), m.signature.emplace());
      if (x->chain_terms() || x->chain_price_prompt()) {
        if (!x->chain_terms() || !x->chain_price_prompt())
          return invalid_input("GenBid: chain_terms and chain_price_prompt come together");
        auto t = ledger::chain_terms::unpack(bytes(x->chain_terms()), "GenBid.chain_terms");
        if (!t) return t.error();
        if (x->chain_price_prompt()->size() != 32)
          return invalid_input("GenBid.chain_price_prompt: {} bytes, not 32", x->chain_price_prompt()->size());
        gen_chain_terms& g = m.terms.emplace();
        g.terms = *t;
        std::copy(x->chain_price_prompt()->begin(), x->chain_price_prompt()->end(), g.price_prompt.begin());
      }
      return message(std::move(m));
    }
    case fb::Message::GenPay: {
      const fb::GenPay* x = body->msg_as_GenPay();
      gen_pay m;
      GG_NEED("GenPay", copy_fixed(x->session_id(), m.session), "session_id");
      if (!x->voucher()) return invalid_input("GenPay: no voucher");
      auto v = ledger::voucher_claim::unpack(bytes(x->voucher()), "GenPay.voucher");
      if (!v) return v.error();
      m.voucher = *v;
      return message(std::move(m));
    }
    case fb::Message::GenPrompt: {
      const char* w = "GenPrompt";
      const fb::GenPrompt* x = body->msg_as_GenPrompt();
      gen_prompt m;
      GG_NEED(w, copy_fixed(x->session_id(), m.session), "session_id");
      GG_NEED(w, copy_fixed(x->manifest_hash(), m.manifest), "manifest_hash");
      if (x->prompt_ids()) m.prompt_ids.assign(x->prompt_ids()->begin(), x->prompt_ids()->end());
      if (x->generated_ids()) m.generated_ids.assign(x->generated_ids()->begin(), x->generated_ids()->end());
      if (m.prompt_ids.empty()) return invalid_input("GenPrompt: empty prompt");
      if (const fb::GenSampling* g = x->sampling()) {
        m.sampling = {g->temperature(), g->top_k(), g->top_p(), g->min_p(), g->repetition_penalty(), g->seed()};
        for (double v : {m.sampling.temperature, m.sampling.top_p, m.sampling.min_p, m.sampling.repetition_penalty})
          GG_RETURN_IF_ERROR(check_finite(w, "sampling", v));
      }
      m.max_new_tokens = x->max_new_tokens();
      if (m.max_new_tokens < 0) return invalid_input("GenPrompt: negative max_new_tokens");
      if (x->stop_strings()) {
        if (x->stop_strings()->size() > kMaxStopStrings)
          return invalid_input("GenPrompt: {} stop strings (limit {})", x->stop_strings()->size(), kMaxStopStrings);
        for (const String* t : *x->stop_strings()) m.stop_strings.push_back(str(t));
      }
      if (x->stop_token_ids()) m.stop_token_ids.assign(x->stop_token_ids()->begin(), x->stop_token_ids()->end());
      m.ignore_eos = x->ignore_eos();
      m.price_prompt = x->price_prompt();
      m.price_generated = x->price_generated();
      GG_RETURN_IF_ERROR(check_finite(w, "price_prompt", m.price_prompt));
      GG_RETURN_IF_ERROR(check_finite(w, "price_generated", m.price_generated));
      m.started_ms = x->started_ms();
      m.score_only = x->score_only();
      if (x->voucher()) {
        auto v = ledger::voucher_claim::unpack(bytes(x->voucher()), "GenPrompt.voucher");
        if (!v) return v.error();
        m.voucher = *v;
      }
      return message(std::move(m));
    }
    case fb::Message::GenTokens: {
      const char* w = "GenTokens";
      const fb::GenTokens* x = body->msg_as_GenTokens();
      gen_tokens m;
      GG_NEED(w, copy_fixed(x->session_id(), m.session), "session_id");
      if (x->tokens()) {
        // The verifier checks a vector's length field for 4-byte alignment, not its structs for
        // theirs: a crafted frame can put these 8-byte-aligned structs at a 4-byte offset.
        if (reinterpret_cast<uintptr_t>(x->tokens()->Data()) % alignof(fb::GenToken) != 0)
          return invalid_input("GenTokens: misaligned token list");
        m.tokens.reserve(x->tokens()->size());
        for (const fb::GenToken* t : *x->tokens()) m.tokens.push_back({t->id(), t->logprob(), t->index()});
      }
      m.done = x->done();
      m.finish_reason = x->finish_reason();
      GG_NEED(w, copy_fixed(x->stream_digest(), m.stream_digest), "stream_digest");
      GG_NEED(w, copy_fixed(x->signature(), m.signature), "signature");
      if (x->receipt()) GG_RETURN_IF_ERROR(read_receipt(x->receipt(), "GenTokens.receipt", m.receipt.emplace()));
      m.tokens_per_s = x->tokens_per_s();
      GG_RETURN_IF_ERROR(check_finite(w, "tokens_per_s", m.tokens_per_s));
      return message(std::move(m));
    }
    case fb::Message::DialBack: return message(dial_back{body->msg_as_DialBack()->nonce()});
    case fb::Message::DialBackResult: {
      const fb::DialBackResult* x = body->msg_as_DialBackResult();
      dial_back_result m;
      m.nonce = x->nonce();
      m.reachable = x->reachable();
      m.url = str(x->url());
      m.detail = str(x->detail());
      if (m.url.size() > kMaxUrlBytes) return invalid_input("DialBackResult: URL of {} bytes (limit {})", m.url.size(), kMaxUrlBytes);
      if (m.detail.size() > kMaxUrlBytes) m.detail.resize(kMaxUrlBytes);
      return message(std::move(m));
    }
    case fb::Message::RelayAttach: return message(relay_attach{body->msg_as_RelayAttach()->attach()});
    case fb::Message::RelayAttachAck: {
      const fb::RelayAttachAck* x = body->msg_as_RelayAttachAck();
      relay_attach_ack m;
      m.accepted = x->accepted();
      m.relayed_url = str(x->relayed_url());
      m.detail = str(x->detail());
      if (m.relayed_url.size() > kMaxUrlBytes)
        return invalid_input("RelayAttachAck: URL of {} bytes (limit {})", m.relayed_url.size(), kMaxUrlBytes);
      if (m.detail.size() > kMaxUrlBytes) m.detail.resize(kMaxUrlBytes);
      return message(std::move(m));
    }
    case fb::Message::RelayIncoming: {
      relay_incoming m;
      GG_NEED("RelayIncoming", copy_fixed(body->msg_as_RelayIncoming()->token(), m.token), "token");
      return message(m);
    }
    case fb::Message::NodeStatus: {
      const fb::NodeStatus* x = body->msg_as_NodeStatus();
      node_status m;
      m.reachable = x->reachable();
      m.url = str(x->url());
      m.relay = x->relay();
      if (m.url.size() > kMaxUrlBytes) return invalid_input("NodeStatus: URL of {} bytes (limit {})", m.url.size(), kMaxUrlBytes);
      return message(std::move(m));
    }
    case fb::Message::DhtQuery: {
      const fb::DhtQuery* x = body->msg_as_DhtQuery();
      dht_query m;
      m.request_id = x->request_id();
      if (!enum_in_range(x->kind())) return invalid_input("DhtQuery: unknown kind {}", static_cast<int>(x->kind()));
      m.kind = static_cast<discovery::query_kind>(x->kind());
      GG_NEED("DhtQuery", copy_fixed(x->target(), m.target), "target");
      m.sender_address = str(x->sender_address());
      m.device_class = str(x->device_class());
      m.max_price = x->max_price();
      m.limit = x->limit();
      GG_RETURN_IF_ERROR(read_provider_records(x->records(), "DhtQuery", m.records));
      GG_RETURN_IF_ERROR(discovery::validate(m));
      return message(std::move(m));
    }
    case fb::Message::DhtReply: {
      const fb::DhtReply* x = body->msg_as_DhtReply();
      dht_reply m;
      m.request_id = x->request_id();
      if (const auto* nodes = x->nodes()) {
        if (nodes->size() > discovery::kMaxNodesPerReply)
          return invalid_input("DhtReply: {} nodes (limit {})", nodes->size(), discovery::kMaxNodesPerReply);
        for (const fb::DhtContact* c : *nodes) {
          if (!c) return invalid_input("DhtReply: null node entry");
          discovery::contact& out = m.nodes.emplace_back();
          GG_NEED("DhtReply", copy_fixed(c->node_key(), out.id), "node_key");
          out.address = str(c->address());
        }
      }
      GG_RETURN_IF_ERROR(read_provider_records(x->records(), "DhtReply", m.records));
      m.stored = x->stored();
      GG_RETURN_IF_ERROR(discovery::validate(m));
      return message(std::move(m));
    }
    case fb::Message::NONE:
      *code = frame_error::unknown_message;
      return invalid_input("frame carries no message");
  }
  *code = frame_error::unknown_message;
  return invalid_input("unknown message type {} (a newer protocol version?)", static_cast<int>(body->msg_type()));
}

#undef GG_NEED

// An 8-aligned private copy, for input that arrives misaligned.
struct aligned_copy {
  std::unique_ptr<uint64_t[]> words;
  const uint8_t* get(const uint8_t* data, size_t n) {
    words.reset(new uint64_t[(n + 7) / 8]);
    std::memcpy(words.get(), data, n);
    return reinterpret_cast<const uint8_t*>(words.get());
  }
};

}  // namespace

// ---------------------------------------------------------------- public

frame frame::copy_of(const void* data, size_t n) {
  auto words = std::shared_ptr<uint64_t[]>(new uint64_t[(n + 7) / 8 + 1]);
  if (n) std::memcpy(words.get(), data, n);
  const auto* p = reinterpret_cast<const uint8_t*>(words.get());
  return frame(std::shared_ptr<const void>(words, words.get()), p, n);
}

const char* to_string(frame_error e) {
  switch (e) {
    case frame_error::none: return "none";
    case frame_error::oversized: return "oversized";
    case frame_error::not_flatbuffer: return "not a gpugrid frame";
    case frame_error::bad_envelope: return "bad envelope";
    case frame_error::bad_body: return "bad body";
    case frame_error::bad_signature: return "bad signature";
    case frame_error::bad_mac: return "bad MAC";
    case frame_error::no_session: return "MAC without a session";
    case frame_error::unknown_message: return "unknown message";
    case frame_error::bad_message: return "bad message";
  }
  return "unknown";
}

size_t encoded_size_estimate(const message& m) {
  size_t payload = std::visit(
      [](const auto& x) -> size_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, model_chunk>) return x.data.size();
        if constexpr (std::is_same_v<T, execute>) return tensors_bytes(x.inputs);
        if constexpr (std::is_same_v<T, result>) return tensors_bytes(x.outputs);
        if constexpr (std::is_same_v<T, gen_prompt>) return 4 * (x.prompt_ids.size() + x.generated_ids.size());
        if constexpr (std::is_same_v<T, gen_tokens>) return 16 * x.tokens.size();
        if constexpr (std::is_same_v<T, gen_open>) return 96 * x.files.size();
        if constexpr (std::is_same_v<T, dht_query>) return x.records.size() * 512;
        if constexpr (std::is_same_v<T, dht_reply>) return x.records.size() * 512 + x.nodes.size() * 128;
        if constexpr (std::is_same_v<T, peer_exchange>) return x.peers.size() * 96 + [&] {
          size_t n = 0;
          for (const auto& p : x.peers) n += p.url.size();
          return n;
        }();
        return 0;
      },
      m);
  return payload + 1024;
}

std::array<uint8_t, 16> session_mac(const session_key& key, uint64_t sequence, const uint8_t* body, size_t n) {
  return compute_mac(key, sequence, body, n);
}

std::string envelope_statement(const uint8_t* body, size_t n) {
  digest32 d = blake2b_256(body, n);
  std::string s(kEnvelopePrefix, sizeof kEnvelopePrefix);
  s.append(reinterpret_cast<const char*>(d.data()), d.size());
  return s;
}

expected<frame> encode(const message& m, const identity& signer, const frame_header& h) {
  return build_frame(m, h, signer.public_key(),
                     [&](const uint8_t* body, size_t n, std::optional<sig64>* sig, std::optional<std::array<uint8_t, 16>>*) {
                       *sig = signer.sign(envelope_statement(body, n));
                     });
}

expected<frame> encode_mac(const message& m, const key32& sender, const session_key& key, const frame_header& h) {
  return build_frame(m, h, sender,
                     [&](const uint8_t* body, size_t n, std::optional<sig64>*, std::optional<std::array<uint8_t, 16>>* mac) {
                       *mac = compute_mac(key, h.sequence, body, n);
                     });
}

expected<decoded_frame> decode(const uint8_t* data, size_t n, const decode_options& o, frame_error* why) {
  frame_error scratch = frame_error::none;
  frame_error& code = why ? *why : scratch;
  code = frame_error::none;
  auto fail = [&](frame_error e, status s) -> status {
    code = e;
    return s;
  };

  if (n > o.max_frame_bytes)
    return fail(frame_error::oversized, invalid_input("frame of {} bytes exceeds the limit of {}", n, o.max_frame_bytes));
  if (n < 12 || !fb::EnvelopeBufferHasIdentifier(data))
    return fail(frame_error::not_flatbuffer, invalid_input("not a gpugrid frame (no GGW1 identifier)"));
  aligned_copy outer_copy;
  if (reinterpret_cast<uintptr_t>(data) % 8 != 0) data = outer_copy.get(data, n);

  flatbuffers::Verifier::Options vo;
  vo.max_depth = o.max_depth;
  vo.max_tables = o.max_tables;
  vo.check_nested_flatbuffers = false;  // verified below, with the same limits
  {
    flatbuffers::Verifier v(data, n, vo);
    if (!fb::VerifyEnvelopeBuffer(v))
      return fail(frame_error::not_flatbuffer, invalid_input("the envelope fails the FlatBuffers verifier"));
  }
  const fb::Envelope* env = fb::GetEnvelope(data);
  const Vector<uint8_t>* key = env->sender_key();
  const Vector<uint8_t>* sig = env->signature();
  const Vector<uint8_t>* mac = env->mac();
  const Vector<uint8_t>* body = env->body();
  if (!key || key->size() != 32)
    return fail(frame_error::bad_envelope, invalid_input("envelope sender_key must be 32 bytes, got {}", key ? key->size() : 0));
  if ((sig != nullptr) == (mac != nullptr))
    return fail(frame_error::bad_envelope, invalid_input("envelope must carry exactly one of signature and mac"));
  if (sig && sig->size() != 64)
    return fail(frame_error::bad_envelope, invalid_input("envelope signature must be 64 bytes, got {}", sig->size()));
  if (mac && mac->size() != kMacBytes)
    return fail(frame_error::bad_envelope, invalid_input("envelope mac must be {} bytes, got {}", kMacBytes, mac->size()));
  if (!body || body->size() < kMinBufferSize)
    return fail(frame_error::bad_envelope, invalid_input("envelope has no body"));

  const uint8_t* body_data = body->data();
  const size_t body_size = body->size();
  aligned_copy body_copy;
  if (reinterpret_cast<uintptr_t>(body_data) % 8 != 0) body_data = body_copy.get(body_data, body_size);
  {
    flatbuffers::Verifier v(body_data, body_size, vo);
    if (!v.VerifyBuffer<fb::Body>(nullptr))
      return fail(frame_error::bad_body, invalid_input("the body fails the FlatBuffers verifier"));
  }
  const fb::Body* b = flatbuffers::GetRoot<fb::Body>(body_data);

  decoded_frame out;
  std::memcpy(out.sender.data(), key->data(), 32);
  out.sequence = b->sequence();
  out.protocol_version = b->protocol_version();
  out.timestamp_ms = b->timestamp_ms();
  if (b->channel()) copy_fixed(b->channel(), out.channel.emplace());
  out.frame_bytes = n;

  if (sig) {
    sig64 s{};
    std::memcpy(s.data(), sig->data(), 64);
    std::string statement = envelope_statement(body_data, body_size);
    if (!verify_signature(out.sender, statement, s))
      return fail(frame_error::bad_signature,
                  invalid_input("envelope signature does not verify for sender {}", node_id_of(out.sender)));
  } else {
    if (!o.session)
      return fail(frame_error::no_session, invalid_input("frame carries a session MAC but no session key was agreed"));
    if (!check_mac(*o.session, out.sequence, body_data, body_size, mac->data()))
      return fail(frame_error::bad_mac, invalid_input("session MAC does not verify (sequence {})", out.sequence));
    out.authenticated_by_mac = true;
  }

  frame_error msg_code = frame_error::none;
  auto msg = read_message(b, &msg_code);
  if (!msg) return fail(msg_code, msg.error());
  out.msg = std::move(msg).value();
  return out;
}

std::string bid_statement(const bid& b) {
  std::string s(kBidPrefix, sizeof kBidPrefix);
  s.append(reinterpret_cast<const char*>(b.job.data()), b.job.size());
  auto put64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  uint64_t price_bits = 0;
  std::memcpy(&price_bits, &b.price, 8);
  put64(price_bits);
  put64(static_cast<uint64_t>(b.eta_ms));
  s.push_back(b.model_cached ? 1 : 0);
  put64(static_cast<uint64_t>(b.valid_ms));
  if (b.terms) s += "GGTERMS1" + b.terms->pack();  // absent: the statement of earlier versions
  return s;
}

void sign_bid(bid& b, const identity& bidder) { b.signature = bidder.sign(bid_statement(b)); }

bool verify_bid(const bid& b, const key32& bidder) {
  return b.signature && verify_signature(bidder, bid_statement(b), *b.signature);
}

std::string gen_bid_statement(const gen_bid& b) {
  std::string s("GGGBID1", 8);
  s.append(reinterpret_cast<const char*>(b.session.data()), b.session.size());
  auto put64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  auto put_double = [&](double d) {
    uint64_t bits = 0;
    std::memcpy(&bits, &d, 8);
    put64(bits);
  };
  put_double(b.price_prompt);
  put_double(b.price_generated);
  put_double(b.tokens_per_s);
  s.push_back(b.model_cached ? 1 : 0);
  put64(static_cast<uint64_t>(b.valid_ms));
  if (b.terms) {  // absent: the statement of earlier versions
    s += "GGTERMS1" + b.terms->terms.pack();
    s.append(b.terms->price_prompt.begin(), b.terms->price_prompt.end());
  }
  return s;
}

void sign_gen_bid(gen_bid& b, const identity& bidder) { b.signature = bidder.sign(gen_bid_statement(b)); }

bool verify_gen_bid(const gen_bid& b, const key32& bidder) {
  return b.signature && verify_signature(bidder, gen_bid_statement(b), *b.signature);
}

void gen_stream_digest::add(const gen_token& t) {
  auto put = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  uint32_t lp = 0;
  std::memcpy(&lp, &t.logprob, 4);
  put(static_cast<uint32_t>(t.id), 4);
  put(lp, 4);
  put(static_cast<uint64_t>(t.index), 8);
  ++count_;
}

digest32 gen_stream_digest::finish(const bytes16& session) const {
  std::string s("GGGSTRM1", 8);
  s.append(reinterpret_cast<const char*>(session.data()), session.size());
  s += bytes_;
  return blake2b_256(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace gpugrid::net
