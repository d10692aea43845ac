// Test and benchmark helpers for the wire layer: one filled-in sample of every message.
// Header-only; not for production code.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "net/messages.h"

namespace gpugrid::net::testing {

template <size_t N>
std::array<uint8_t, N> pattern(uint8_t seed) {
  std::array<uint8_t, N> a{};
  for (size_t i = 0; i < N; ++i) a[i] = static_cast<uint8_t>(seed + 7 * i);
  return a;
}

inline wire_tensor sample_tensor(const std::string& name, size_t elements, uint8_t seed) {
  wire_tensor t;
  t.name = name;
  t.type = dtype::f32;
  t.shape = {1, static_cast<int64_t>(elements)};
  t.data.resize(elements * 4);
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<char>(seed + i);
  return t;
}

inline ledger::receipt sample_receipt() {
  ledger::receipt r;
  r.kind = ledger::receipt_kind::payment;
  r.job_id = pattern<16>(1);
  r.client_key = pattern<32>(2);
  r.provider_key = pattern<32>(3);
  r.model_hash = pattern<32>(4);
  r.input_digest = pattern<32>(5);
  r.output_digest = pattern<32>(6);
  r.price_micros = 1234567;
  r.started_ms = 1700000000000;
  r.finished_ms = 1700000000456;
  r.provider_sig = pattern<64>(7);
  r.client_sig = pattern<64>(8);
  return r;
}

inline device_info sample_device() {
  device_info d;
  d.name = "NVIDIA H100 80GB HBM3";
  d.kind = "cuda";
  d.memory_bytes = int64_t{80} << 30;
  d.cc_major = 9;
  d.cc_minor = 0;
  d.gflops = 51234.5;
  d.index = 0;
  return d;
}

// One of every message, every field set (in union order).
// A voucher with arbitrary (not chain-valid) bytes: the wire layer carries it unread.
inline ledger::voucher_claim sample_voucher() {
  ledger::voucher_claim c;
  c.chain_id = pattern<32>(30);
  c.contract = pattern<20>(31);
  c.channel = pattern<32>(32);
  c.amount = pattern<32>(33);
  c.nonce = pattern<32>(34);
  c.r = pattern<32>(35);
  c.s = pattern<32>(36);
  c.v = 1;
  c.price = pattern<32>(37);
  return c;
}

inline std::vector<message> sample_messages() {
  std::vector<message> v;
  hello h;
  h.node_key = pattern<32>(10);
  h.challenge = pattern<32>(11);
  h.ephemeral_key = pattern<32>(12);
  h.listen_url = "wss://203.0.113.7:7447";
  h.role = node_role::provider;
  h.devices = {sample_device(), device_info{"CPU (16 threads)", "cpu", int64_t{128} << 30, 0, 0, 812.25, 0}};
  h.ledger.hash = pattern<32>(13);
  h.ledger.count = 42;
  h.price_per_gflop = 0.001;
  h.slots = 2;
  h.max_frame_bytes = 64 << 20;
  h.max_model_bytes = uint64_t{1} << 30;
  h.software = "gpugrid 0.1.0";
  v.push_back(h);
  v.push_back(hello_ack{1, pattern<64>(14)});
  v.push_back(goodbye{goodbye_reason::version_mismatch, "this node speaks 1..1"});
  peer_exchange px;
  px.peers = {peer_info{pattern<32>(15), "ws://198.51.100.1:7447", 1700000000000, node_role::provider},
              peer_info{pattern<32>(16), "wss://[2001:db8::1]:7447", 1700000001000, node_role::both}};
  px.want_reply = true;
  v.push_back(px);
  v.push_back(ping{0x0123456789abcdefULL});
  v.push_back(pong{0xfedcba9876543210ULL});
  v.push_back(bid_request{pattern<16>(17), pattern<32>(18), 123456789, 4.5, 602112, 0.25, 30000});
  bid b;
  b.job = pattern<16>(17);
  b.price = 0.0045;
  b.eta_ms = 12;
  b.model_cached = true;
  b.device = sample_device();
  b.valid_ms = 5000;
  b.signature = pattern<64>(19);
  b.capacity = 17;
  v.push_back(b);
  v.push_back(bid_decline{pattern<16>(17), decline_reason::too_cheap, "price limit 0.001 is below 0.0045"});
  v.push_back(award{pattern<16>(17), 0.0045});
  v.push_back(cancel{pattern<16>(17), "another provider answered first"});
  v.push_back(model_put{pattern<32>(18), 123456789, 4 << 20, pattern<16>(17)});
  model_chunk c;
  c.model_hash = pattern<32>(18);
  c.index = 3;
  c.data = std::string(1000, 'x');
  v.push_back(c);
  v.push_back(model_need{pattern<32>(18), pattern<16>(17)});
  execute e;
  e.job = pattern<16>(17);
  e.model_hash = pattern<32>(18);
  e.inputs = {sample_tensor("input", 16, 1), sample_tensor("mask", 4, 2)};
  e.inputs[1].type = dtype::u8;
  e.inputs[1].shape = {2, 8};
  e.input_digest = pattern<32>(20);
  e.price = 0.0045;
  e.started_ms = 1700000000000;
  v.push_back(e);
  result r;
  r.job = pattern<16>(17);
  r.outputs = {sample_tensor("logits", 10, 3)};
  r.output_digest = pattern<32>(21);
  r.signature = pattern<64>(22);
  r.compute_ms = 1.25;
  r.model_was_cached = true;
  r.receipt = sample_receipt();
  v.push_back(r);
  v.push_back(job_error{pattern<16>(17), job_error_code::bad_input, "input 'x' has shape [1, 3], expected [1, 4]"});
  v.push_back(sample_receipt());
  v.push_back(receipt_ack{pattern<16>(17), receipt_status::retry_later, "the ledger cannot be written"});
  gen_open go;
  go.session = pattern<16>(23);
  go.manifest = pattern<32>(24);
  go.files = {gen_file{"model.onnx", pattern<32>(25), 123456}, gen_file{"tokenizer.json", pattern<32>(26), 2048}};
  go.prompt_tokens = 37;
  go.max_new_tokens = 200;
  go.max_price_prompt = 0.01;
  go.max_price_generated = -1;
  v.push_back(go);
  v.push_back(gen_bid{pattern<16>(23), 0.002, 0.02, 41.5, true, 30000, pattern<64>(27)});
  gen_prompt gp;
  gp.session = pattern<16>(23);
  gp.manifest = pattern<32>(24);
  gp.prompt_ids = {1, 15043, 3186, 29991};
  gp.generated_ids = {450, 1234};
  gp.sampling = {0.7, 40, 0.9, 0.05, 1.1, 42};
  gp.max_new_tokens = 200;
  gp.stop_strings = {"\n\nUser:"};
  gp.stop_token_ids = {2};
  gp.ignore_eos = true;
  gp.price_prompt = 0.002;
  gp.price_generated = 0.02;
  gp.started_ms = 1700000000000;
  v.push_back(gp);
  gen_tokens gt;
  gt.session = pattern<16>(23);
  gt.tokens = {gen_token{450, -0.25f, 2}, gen_token{29889, -1.5f, 3}};
  gt.done = true;
  gt.finish_reason = 1;
  gt.stream_digest = pattern<32>(28);
  gt.signature = pattern<64>(29);
  gt.receipt = sample_receipt();
  gt.tokens_per_s = 38.25;
  v.push_back(gt);
  v.push_back(dial_back{0x0102030405060708ull});
  v.push_back(dial_back_result{0x0102030405060708ull, false, "ws://10.0.0.2:7447", "connecting failed: refused"});
  v.push_back(relay_attach{true});
  v.push_back(relay_attach_ack{true, "ws://203.0.113.5:7447/relay/ggaaaa", ""});
  v.push_back(relay_incoming{pattern<16>(23)});
  v.push_back(node_status{false, "ws://203.0.113.5:7447/relay/ggaaaa", false});
  discovery::provider_record pr;
  pr.key = pattern<32>(23);
  pr.provider = pattern<32>(24);
  pr.addresses = {"ws://198.51.100.2:7447", "wss://p.example:7447"};
  pr.device_class = "cuda-sm90-80g";
  pr.price = 0.002;
  pr.issued_ms = 1700000000000;
  pr.expires_ms = 1700000900000;
  pr.sig = pattern<64>(25);
  dht_query dq;
  dq.request_id = 77;
  dq.kind = discovery::query_kind::add_provider;
  dq.target = pattern<32>(23);
  dq.sender_address = "ws://198.51.100.2:7447";
  dq.device_class = "cpu";
  dq.max_price = 0.01;
  dq.limit = 20;
  dq.records = {pr};
  v.push_back(dq);
  dht_reply dr;
  dr.request_id = 77;
  dr.nodes = {discovery::contact{pattern<32>(26), "ws://198.51.100.3:7447"}};
  dr.records = {pr};
  dr.stored = 1;
  v.push_back(dr);
  gen_pay pay;
  pay.session = pattern<16>(23);
  pay.voucher = sample_voucher();
  v.push_back(pay);
  return v;
}

}  // namespace gpugrid::net::testing
