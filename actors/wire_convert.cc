#include "actors/wire_convert.h"

#include <algorithm>
#include <cstring>

#include "net/codec.h"

namespace gpugrid::grid {

net::wire_tensor to_wire_tensor(const tensor& t) {
  net::wire_tensor w;
  w.type = t.type();
  w.shape = t.shape();
  if (t.bytes()) w.data.assign(static_cast<const char*>(t.raw()), t.bytes());
  return w;
}

expected<tensor> from_wire_tensor(const net::wire_tensor& w) {
  if (w.type == dtype::undefined || w.type == dtype::string) return invalid_input("a tensor of unsupported dtype");
  for (int64_t d : w.shape)
    if (d < 0) return invalid_input("a tensor with a negative dimension");
  tensor t = tensor::zeros(w.type, w.shape);
  if (t.bytes() != w.data.size())
    return invalid_input("a tensor of {} bytes where its shape needs {}", w.data.size(), t.bytes());
  if (!w.data.empty()) std::memcpy(t.raw(), w.data.data(), w.data.size());
  return t;
}

net::device_info to_device_info(const device_summary& d, int index) {
  net::device_info i;
  i.name = d.name;
  i.kind = d.kind;
  i.memory_bytes = d.memory_bytes;
  i.cc_major = d.cc_major;
  i.cc_minor = d.cc_minor;
  i.gflops = d.gflops;
  i.index = index;
  return i;
}

device_summary from_device_info(const net::device_info& d) {
  device_summary s;
  s.name = d.name;
  s.kind = d.kind;
  s.memory_bytes = d.memory_bytes;
  s.cc_major = d.cc_major;
  s.cc_minor = d.cc_minor;
  s.gflops = d.gflops;
  return s;
}

provider_info info_from_hello(const net::hello& h) {
  provider_info p;
  p.key = h.node_key;
  p.url = h.listen_url;
  for (const auto& d : h.devices) p.devices.push_back(from_device_info(d));
  p.price_per_gflop = h.price_per_gflop;
  p.slots = h.slots;
  p.ledger_head = h.ledger.hash;
  p.ledger_count = h.ledger.count;
  return p;
}

net::bid_request to_wire_bid_request(const bid_request& r) {
  net::bid_request b;
  b.job = r.job;
  b.model_hash = r.model_hash;
  b.model_bytes = static_cast<uint64_t>(std::max<int64_t>(0, r.model_bytes));
  b.gflops = r.gflops;
  b.input_bytes = static_cast<uint64_t>(std::max<int64_t>(0, r.input_bytes));
  b.max_price = r.max_price;
  return b;
}

bid_request from_wire_bid_request(const net::bid_request& br, const key32& client) {
  bid_request req;
  req.job = br.job;
  req.client = client;
  req.model_hash = br.model_hash;
  req.model_bytes = static_cast<int64_t>(std::min<uint64_t>(br.model_bytes, INT64_MAX));
  req.gflops = br.gflops;
  req.input_bytes = static_cast<int64_t>(std::min<uint64_t>(br.input_bytes, INT64_MAX));
  req.max_price = br.max_price;
  return req;
}

net::bid to_wire_bid(const bid_reply& r) {
  net::bid b;
  b.job = r.job;
  b.price = r.price;
  b.eta_ms = r.eta_ms;
  b.model_cached = r.model_cached;
  b.valid_ms = r.valid_ms;
  b.signature = r.signature;
  b.terms = r.terms;
  b.capacity = r.capacity;
  return b;
}

net::bid_decline to_wire_decline(const bid_reply& r) {
  net::bid_decline d;
  d.job = r.job;
  d.reason = static_cast<net::decline_reason>(r.reason);
  d.detail = r.detail;
  return d;
}

bid_reply from_wire_bid(const net::bid& b, const key32& provider) {
  bid_reply r;
  r.job = b.job;
  r.provider = provider;
  r.accepted = true;
  r.price = b.price;
  r.eta_ms = b.eta_ms;
  r.model_cached = b.model_cached;
  r.signature = b.signature;
  r.valid_ms = b.valid_ms;
  r.terms = b.terms;
  r.capacity = b.capacity;
  return r;
}

bid_reply from_wire_decline(const net::bid_decline& d, const key32& provider) {
  bid_reply r;
  r.job = d.job;
  r.provider = provider;
  r.accepted = false;
  r.reason = static_cast<decline_reason>(d.reason);
  r.detail = d.detail;
  return r;
}

bool bid_signature_ok(const bid_reply& r) {
  if (!r.signature) return true;
  return net::verify_bid(to_wire_bid(r), r.provider);
}

net::execute to_wire_execute(const execute_request& r) {
  net::execute e;
  e.job = r.job;
  e.model_hash = r.model_hash;
  for (const auto& t : r.inputs) e.inputs.push_back(to_wire_tensor(t));
  e.input_digest = r.input_digest;
  e.price = r.price;
  e.started_ms = r.started_ms;
  e.voucher = r.voucher;
  return e;
}

net::result to_wire_result(const execute_result& r) {
  net::result w;
  w.job = r.job;
  for (const auto& t : r.outputs) w.outputs.push_back(to_wire_tensor(t));
  w.output_digest = r.output_digest;
  w.signature = r.result_sig;
  w.compute_ms = r.compute_ms;
  w.model_was_cached = r.model_was_cached;
  w.receipt = r.receipt;
  return w;
}

std::shared_ptr<const execute_result> from_wire_result(const net::result& r, const key32& provider) {
  auto out = std::make_shared<execute_result>();
  out->job = r.job;
  out->provider = provider;
  auto fail = [&](std::string why) {
    out->ok = false;
    out->error = std::move(why);
    out->outputs.clear();
    return out;
  };
  for (const auto& w : r.outputs) {
    auto t = from_wire_tensor(w);
    if (!t) return fail("the result holds " + t.error().message());
    out->outputs.push_back(std::move(t).value());
  }
  out->output_digest = tensors_digest(out->outputs);
  if (out->output_digest != r.output_digest) return fail("the result's output digest does not match its outputs");
  // The result signature is checked when it is needed as evidence (a dispute receipt); the
  // payment path checks the receipt's signature instead.
  if (!r.receipt) return fail("the result carries no receipt");
  out->result_sig = r.signature;
  out->receipt = *r.receipt;
  out->compute_ms = r.compute_ms;
  out->model_was_cached = r.model_was_cached;
  out->ok = true;
  return out;
}

}  // namespace gpugrid::grid
