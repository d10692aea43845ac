#include "llm/generator.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "engine/tensor.h"

namespace gpugrid::llm {

const char* finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::none: return "none";
    case finish_reason::length: return "length";
    case finish_reason::stop_token: return "stop";
    case finish_reason::stop_string: return "stop_string";
    case finish_reason::context_full: return "context_full";
    case finish_reason::cancelled: return "cancelled";
  }
  return "none";
}

// ---------------------------------------------------------------- sampling

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A uniform draw in [0, 1) that depends only on (seed, index).
double draw(uint64_t seed, int64_t index) {
  uint64_t x = seed;
  uint64_t a = splitmix64(x);
  x = a ^ (static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull);
  uint64_t r = splitmix64(x);
  return static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0);
}

int32_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return static_cast<int32_t>(best);
}

}  // namespace

float token_logprob(const float* logits, int64_t n, int32_t id) {
  if (id < 0 || id >= n) return -std::numeric_limits<float>::infinity();
  float mx = logits[argmax(logits, n)];
  // Terms in float (each at most 1), summed in double: a vocabulary's worth of exp per token.
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
  return static_cast<float>(logits[id] - mx - std::log(sum));
}

void apply_sampling_filters(std::vector<float>& logits, const sampling_options& s, const std::vector<int32_t>& seen) {
  const int64_t n = static_cast<int64_t>(logits.size());
  const float ninf = -std::numeric_limits<float>::infinity();
  if (s.repetition_penalty != 1.0 && s.repetition_penalty > 0) {
    std::vector<char> done(logits.size(), 0);
    for (int32_t id : seen) {
      if (id < 0 || id >= n || done[id]) continue;
      done[id] = 1;
      float& l = logits[id];
      l = l > 0 ? static_cast<float>(l / s.repetition_penalty) : static_cast<float>(l * s.repetition_penalty);
    }
  }
  if (s.temperature <= 0) return;
  for (float& l : logits) l = static_cast<float>(l / s.temperature);
  if (s.top_k > 0 && s.top_k < n) {
    std::vector<float> sorted(logits);
    std::nth_element(sorted.begin(), sorted.begin() + (s.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[s.top_k - 1];
    for (float& l : logits)
      if (l < kth) l = ninf;
  }
  const float mx = logits[argmax(logits.data(), n)];
  if (mx == ninf) return;
  std::vector<double> p(logits.size());
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += p[i] = std::exp(static_cast<double>(logits[i] - mx));
  for (double& v : p) v /= sum;
  if (s.top_p < 1.0) {
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    double cum = 0;
    size_t keep = 0;
    while (keep < order.size()) {
      cum += p[order[keep]];
      ++keep;
      if (cum >= s.top_p) break;
    }
    for (size_t i = keep; i < order.size(); ++i) logits[order[i]] = ninf;
  }
  if (s.min_p > 0) {
    const double pmax = *std::max_element(p.begin(), p.end());
    for (int64_t i = 0; i < n; ++i)
      if (p[i] < s.min_p * pmax) logits[i] = ninf;
  }
}

int32_t sample_token(const std::vector<float>& raw, const sampling_options& s, const std::vector<int32_t>& seen,
                     int64_t index) {
  std::vector<float> logits(raw);
  apply_sampling_filters(logits, s, seen);
  const int64_t n = static_cast<int64_t>(logits.size());
  if (s.temperature <= 0) return argmax(logits.data(), n);
  const int32_t best = argmax(logits.data(), n);
  const float mx = logits[best];
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
  double target = draw(s.seed, index) * sum, cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    cum += std::exp(static_cast<double>(logits[i] - mx));
    if (logits[i] != -std::numeric_limits<float>::infinity() && cum > target) return static_cast<int32_t>(i);
  }
  return best;
}

// ---------------------------------------------------------------- the model's inputs and outputs

struct generator::model_io {
  struct cache_slot {
    size_t input = 0, output = 0;  // indices in graph inputs / outputs
  };
  size_t input_ids = 0, logits = 0;
  dtype ids_type = dtype::i64;
  int attention_mask = -1, position_ids = -1, use_cache_branch = -1;
  dtype mask_type = dtype::i64, pos_type = dtype::i64;
  std::vector<cache_slot> cache;  // past.* inputs in graph input order, each with its present.*
  dtype cache_type = dtype::f32;
  int64_t kv_heads = 0, head_size = 0;
  bool gqa = false;           // per-sequence lengths (GroupQueryAttention), right padding
  bool share_buffer = false;  // genai past_present_share_buffer: a max-length cache from the start
  size_t num_inputs = 0;
  // The input added in front of the language-model head (see select_logits_positions): which
  // positions get logits; -1 when the graph was left as it is.
  int logits_positions = -1;
};

namespace {

bool is_int_type(dtype t) { return t == dtype::i64 || t == dtype::i32; }

tensor int_tensor(dtype t, shape_t shape, const std::vector<int64_t>& v) {
  tensor x = tensor::zeros(t, std::move(shape));
  if (t == dtype::i64) std::copy(v.begin(), v.end(), x.data<int64_t>());
  else
    for (size_t i = 0; i < v.size(); ++i) x.data<int32_t>()[i] = static_cast<int32_t>(v[i]);
  return x;
}

// Row r (of length n) of a float-like [rows, n] tensor, as float.
void logits_row(const tensor& t, int64_t r, int64_t n, std::vector<float>* out) {
  out->resize(static_cast<size_t>(n));
  const int64_t off = r * n;
  switch (t.type()) {
    case dtype::f32: std::copy(t.data<float>() + off, t.data<float>() + off + n, out->begin()); break;
    case dtype::f16:
      for (int64_t i = 0; i < n; ++i) (*out)[i] = static_cast<float>(t.data<half>()[off + i]);
      break;
    case dtype::bf16:
      for (int64_t i = 0; i < n; ++i) (*out)[i] = static_cast<float>(t.data<bfloat16>()[off + i]);
      break;
    default:
      for (int64_t i = 0; i < n; ++i) (*out)[i] = static_cast<float>(t.as_double(off + i));
  }
}

bool read_share_buffer(const std::string& dir) {
  std::ifstream f(dir + "/genai_config.json");
  if (!f) return false;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("search") || !j["search"].is_object()) return false;
  auto& s = j["search"];
  return s.contains("past_present_share_buffer") && s["past_present_share_buffer"].is_boolean() &&
         s["past_present_share_buffer"].get<bool>();
}

// Gives the model an extra int64 input, the positions whose logits are wanted, and gathers
// those positions (axis 1 of [batch, sequence, hidden]) in front of the language-model head:
// a prompt's prefill then multiplies one row by the vocabulary-sized head, not every row.
// Only when the logits output comes (through Identity or Cast nodes) from a MatMul or
// MatMulNBits in the main graph whose input is not declared other than 3-D (an undeclared one
// is checked by the load's warm-up step); returns the new input's index, or -1 when left
// unchanged.
int select_logits_positions(graph& g, size_t logits_output) {
  const std::string name = "gpugrid_logits_positions";
  if (g.find_value(name) >= 0) return -1;
  auto producer = [&g](int v) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (int o : g.nodes[i].outputs)
        if (o == v) return static_cast<int>(i);
    return -1;
  };
  int ni = producer(g.outputs[logits_output]);
  while (ni >= 0 && (g.nodes[ni].op_type == "Identity" || g.nodes[ni].op_type == "Cast") &&
         g.nodes[ni].domain.empty() && !g.nodes[ni].inputs.empty() && g.nodes[ni].inputs[0] >= 0)
    ni = producer(g.nodes[ni].inputs[0]);
  if (ni < 0) return -1;
  const node& head = g.nodes[ni];
  const bool matmul = head.op_type == "MatMul" && head.domain.empty();
  const bool nbits = head.op_type == "MatMulNBits" && head.domain == "com.microsoft";
  if ((!matmul && !nbits) || head.inputs.empty() || head.inputs[0] < 0 || g.initializers.count(head.inputs[0])) return -1;
  const int x = head.inputs[0];
  const auto& xs = g.values[x].shape;
  if (xs && xs->size() != 3) return -1;  // not [batch, sequence, hidden]
  const std::string x_name = g.values[x].name;
  const dtype x_type = g.values[x].type;
  const int pos = g.value_id(name);
  g.values[pos].type = dtype::i64;
  g.values[pos].shape = std::vector<dim_t>{dim_t{-1, "logits_positions"}};
  const int y = g.value_id(x_name + "/gpugrid_logits_positions");
  g.values[y].type = x_type;
  node gather;
  gather.name = "/gpugrid/logits_positions/Gather";
  gather.op_type = "Gather";
  gather.opset = g.opsets.count("") ? g.opsets.at("") : 13;
  gather.inputs = {x, pos};
  gather.outputs = {y};
  attribute axis;
  axis.type = attribute::kind::integer;
  axis.i = 1;
  gather.attrs["axis"] = axis;
  g.nodes[ni].inputs[0] = y;
  g.nodes.insert(g.nodes.begin() + ni, std::move(gather));
  g.inputs.push_back(pos);
  return static_cast<int>(g.inputs.size() - 1);
}

using clock_type = std::chrono::steady_clock;
double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

expected<std::shared_ptr<generator>> generator::load(const std::string& model_dir, const generator_options& options) {
  GG_ASSIGN_OR_RETURN(model_config cfg, load_model_config(model_dir));
  GG_ASSIGN_OR_RETURN(tokenizer tok, tokenizer::load(cfg.tokenizer_path));
  GG_ASSIGN_OR_RETURN(std::shared_ptr<graph> g, load_model_file(cfg.model_path));
  auto io = std::make_unique<model_io>();
  const std::string& path = cfg.model_path;
  io->num_inputs = g->inputs.size();
  bool have_ids = false, have_logits = false;
  std::map<std::string, size_t> outputs;
  for (size_t i = 0; i < g->outputs.size(); ++i) outputs[g->values[g->outputs[i]].name] = i;
  for (size_t i = 0; i < g->inputs.size(); ++i) {
    const value_info& v = g->values[g->inputs[i]];
    const std::string& n = v.name;
    if (n == "input_ids") {
      if (!is_int_type(v.type)) return invalid_input("{}: input_ids must be int64 or int32", path);
      io->input_ids = i, io->ids_type = v.type, have_ids = true;
    } else if (n == "attention_mask") {
      if (!is_int_type(v.type)) return invalid_input("{}: attention_mask must be int64 or int32", path);
      io->attention_mask = static_cast<int>(i), io->mask_type = v.type;
    } else if (n == "position_ids") {
      if (!is_int_type(v.type)) return invalid_input("{}: position_ids must be int64 or int32", path);
      io->position_ids = static_cast<int>(i), io->pos_type = v.type;
    } else if (n == "use_cache_branch") {
      if (v.type != dtype::boolean) return invalid_input("{}: use_cache_branch must be bool", path);
      io->use_cache_branch = static_cast<int>(i);
    } else if (n.rfind("past_key_values.", 0) == 0 || n.rfind("past.", 0) == 0) {
      std::string rest = n.substr(n.find('.') + 1);
      auto it = outputs.find("present." + rest);
      if (it == outputs.end()) return invalid_input("{}: input {} has no output present.{}", path, n, rest);
      if (!v.shape || v.shape->size() != 4 || (*v.shape)[1].value <= 0 || (*v.shape)[3].value <= 0)
        return invalid_input("{}: {} must be declared [batch, kv_heads, past_length, head_size] with numbers", path, n);
      if (!is_float(v.type)) return invalid_input("{}: {} must be a float type", path, n);
      const int64_t heads = (*v.shape)[1].value, hs = (*v.shape)[3].value;
      if (!io->cache.empty() && (heads != io->kv_heads || hs != io->head_size || v.type != io->cache_type))
        return invalid_input("{}: {} differs in shape or type from the other past inputs", path, n);
      io->kv_heads = heads, io->head_size = hs, io->cache_type = v.type;
      io->cache.push_back({i, it->second});
    } else {
      return invalid_input("{}: unsupported decoder input '{}' (expected input_ids, attention_mask, position_ids, "
                           "past_key_values.*, use_cache_branch)",
                           path, n);
    }
  }
  if (auto it = outputs.find("logits"); it != outputs.end()) io->logits = it->second, have_logits = true;
  if (!have_ids || !have_logits) return invalid_input("{}: a decoder needs an input_ids input and a logits output", path);
  if (io->attention_mask < 0) return invalid_input("{}: a decoder needs an attention_mask input", path);
  if (io->cache.empty()) return invalid_input("{}: a decoder needs past_key_values.* inputs (a KV cache)", path);
  for (const node& nd : g->nodes)
    if (nd.op_type == "GroupQueryAttention") io->gqa = true;
  io->share_buffer = io->gqa && cfg.format == model_config::folder_format::genai && read_share_buffer(cfg.dir);
  // The graph with only the wanted positions' logits (a copy; initializers are shared).
  auto selected = std::make_shared<graph>(*g);
  io->logits_positions = select_logits_positions(*selected, io->logits);

#ifdef __GLIBC__
  // Every step allocates its tensors afresh and frees them after: keep blocks up to 32 MiB in
  // the heap (not mmap'ed and unmapped per tensor) and freed memory up to 256 MiB mapped, so
  // a step reuses the pages of the last one instead of faulting in zeroed pages.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  // The few products that still go to OpenBLAS use at most as many threads as the engine (its
  // default is one per core), and one where the engine's own products run (limit_blas_threads).
  set_blas_threads(options.threads);
  session_options so;
  so.threads = options.threads;
  so.device = options.device;
  // Shapes change every step (the mask and the cache grow), so a memory plan per input shape
  // would be made, and kept, for every length: run unplanned.
  so.memory_plan = false;
  // The cache buffers are handed to each run and not read again: a GroupQueryAttention with a
  // shared past/present buffer writes the new positions into it in place.
  so.overwrite_inputs = true;
  std::shared_ptr<generator> gen(new generator());
  gen->max_length_ = options.max_length > 0 ? options.max_length : cfg.context_length > 0 ? cfg.context_length : 4096;
  if (cfg.context_length > 0) gen->max_length_ = std::min(gen->max_length_, cfg.context_length);
  if (io->share_buffer && cfg.generation.max_length > 0)
    gen->max_length_ = std::min(gen->max_length_, cfg.generation.max_length);
  gen->config_ = std::move(cfg);
  gen->tokenizer_ = std::move(tok);
  gen->io_ = std::move(io);
  gen->reuse_caches_ = std::max(0, options.reuse_caches);
  // One throw-away step, so that one-time costs (weight packing, first allocations) are paid at
  // load and not by the first answer's time to first token. The prompt has several tokens: a
  // matrix product of one or two rows takes the matrix-vector path, which packs no weights, so
  // a one-token warm-up left the packing of every weight to the first real prompt. The step
  // also checks the logits-positions graph: when it fails (a head that does not read [batch,
  // sequence, hidden]), the model runs as it was given.
  completion_request warm;
  const int64_t warm_len = gen->config_.context_length > 0 ? std::min<int64_t>(8, gen->config_.context_length - 1) : 8;
  warm.prompt_ids.assign(static_cast<size_t>(std::max<int64_t>(1, warm_len)),
                         gen->config_.bos_token_id >= 0 ? gen->config_.bos_token_id : 0);
  warm.stop.max_new_tokens = 1;
  auto warm_up = [&]() -> status {
    GG_ASSIGN_OR_RETURN(std::unique_ptr<batch> b, gen->start({warm}));
    std::vector<generated_token> out;
    return b->step(&out).with_context(gen->config_.model_path);
  };
  if (gen->io_->logits_positions >= 0) {
    gen->io_->num_inputs = selected->inputs.size();
    auto s = session::create(selected, so);
    if (s.has_value()) {
      gen->session_ = std::move(s.value());
      if (warm_up().is_ok()) return gen;
    }
    gen->session_.reset();
  }
  gen->io_->logits_positions = -1;
  gen->io_->num_inputs = g->inputs.size();
  GG_ASSIGN_OR_RETURN(gen->session_, session::create(g, so));
  GG_RETURN_IF_ERROR(warm_up());
  return gen;
}

generator::~generator() = default;

std::string generator::device_name() const { return session_->device_name(); }
double generator::measured_tokens_per_s() const { return measured_tps_.load(); }

// ---------------------------------------------------------------- batches

namespace {

// One sequence of a batch: its ids, its text state (UTF-8 and stop-string hold-back), its stats.
struct sequence {
  completion_request req;
  std::vector<int32_t> ids;  // prompt + answer so far
  int64_t cached = 0;        // tokens already in the KV cache (real ones)
  int64_t answer_start = 0;  // where the answer begins in ids
  finish_reason reason = finish_reason::none;
  std::unique_ptr<decode_stream> text;
  std::string held;          // decoded text not emitted yet (could start a stop string)
  completion_stats stats;
  std::vector<int32_t> eos;  // ids that end the answer
  size_t max_stop = 0;
};

}  // namespace

struct batch::state {
  std::shared_ptr<generator> gen;
  std::vector<sequence> seqs;
  std::vector<tensor> cache;  // per model_io::cache slot
  int64_t past = 0;           // optimum: the shared cache length
  std::vector<std::vector<char>> valid;  // optimum: per sequence, which cache positions are real
  bool prefilled = false;
  bool reused = false;        // the cache came from an earlier completion (seqs[0].cached tokens)
  clock_type::time_point started, first_token;
  bool any_token = false;
};

batch::batch(std::unique_ptr<state> s) : s_(std::move(s)) {}
batch::~batch() = default;
size_t batch::size() const { return s_->seqs.size(); }
bool batch::done() const {
  for (auto& q : s_->seqs)
    if (q.reason == finish_reason::none) return false;
  return true;
}
finish_reason batch::reason(size_t i) const { return s_->seqs.at(i).reason; }
const completion_stats& batch::stats(size_t i) const { return s_->seqs.at(i).stats; }
void batch::cancel(size_t i) {
  auto& q = s_->seqs.at(i);
  if (q.reason == finish_reason::none) q.reason = q.stats.reason = finish_reason::cancelled;
}
int64_t batch::kv_cache_bytes() const {
  int64_t n = 0;
  for (auto& t : s_->cache) n += static_cast<int64_t>(t.bytes());
  return n;
}

namespace {

// Feeds one answer token into the sequence's text state; returns the text it releases and sets
// the finish reason when it ends the answer. emit=false replays a continuation's tokens.
std::string accept_token(sequence& q, int32_t id, int64_t max_length) {
  std::string out;
  const int64_t n_answer = static_cast<int64_t>(q.ids.size()) - q.answer_start;  // before this one
  q.ids.push_back(id);
  q.stats.token_ids.push_back(id);
  const bool is_stop = (!q.req.stop.ignore_eos && std::find(q.eos.begin(), q.eos.end(), id) != q.eos.end()) ||
                       std::find(q.req.stop.stop_token_ids.begin(), q.req.stop.stop_token_ids.end(), id) !=
                           q.req.stop.stop_token_ids.end();
  if (is_stop) {
    out.swap(q.held);
    q.reason = finish_reason::stop_token;
  } else {
    q.held += q.text->step(id);
    size_t cut = std::string::npos, cut_len = 0;
    for (const std::string& s : q.req.stop.stop_strings) {
      if (s.empty()) continue;
      size_t p = q.held.find(s);
      if (p != std::string::npos && p < cut) cut = p, cut_len = s.size();
    }
    if (cut != std::string::npos) {
      out = q.held.substr(0, cut);
      q.held.clear();
      q.reason = finish_reason::stop_string;
      (void)cut_len;
    } else {
      // Keep back the longest tail that begins some stop string.
      size_t keep = 0;
      for (const std::string& s : q.req.stop.stop_strings)
        for (size_t k = std::min(s.size() - (s.empty() ? 0 : 1), q.held.size()); k > keep; --k)
          if (q.held.compare(q.held.size() - k, k, s, 0, k) == 0) {
            keep = k;
            break;
          }
      out = q.held.substr(0, q.held.size() - keep);
      q.held.erase(0, q.held.size() - keep);
    }
  }
  if (q.reason == finish_reason::none) {
    if (n_answer + 1 >= q.req.stop.max_new_tokens) q.reason = finish_reason::length;
    else if (static_cast<int64_t>(q.ids.size()) >= max_length) q.reason = finish_reason::context_full;
    if (q.reason != finish_reason::none) {
      out += q.held;
      q.held.clear();
    }
  }
  q.stats.text += out;
  q.stats.reason = q.reason;
  return out;
}

}  // namespace

expected<std::unique_ptr<batch>> generator::start(const std::vector<completion_request>& requests) {
  if (requests.empty()) return invalid_input("a batch needs at least one request");
  auto st = std::make_unique<batch::state>();
  st->gen = shared_from_this();
  const int64_t vocab = static_cast<int64_t>(tokenizer_.vocab_size());
  for (const completion_request& r : requests) {
    sequence q;
    q.req = r;
    const int64_t n = static_cast<int64_t>(r.prompt_ids.size() + r.generated_ids.size());
    if (r.prompt_ids.empty()) return invalid_input("the prompt is empty");
    if (n >= max_length_)
      return invalid_input("the prompt has {} tokens; the model's context is {}", n, max_length_);
    for (const auto* v : {&r.prompt_ids, &r.generated_ids})
      for (int32_t id : *v)
        if (id < 0 || (config_.vocab_size > 0 && id >= config_.vocab_size) || (config_.vocab_size <= 0 && id >= vocab))
          return invalid_input("token id {} is outside the model's vocabulary", id);
    if (r.stop.max_new_tokens < 1) return invalid_input("max new tokens must be at least 1, not {}", r.stop.max_new_tokens);
    if (r.sampling.temperature < 0 || r.sampling.top_p <= 0 || r.sampling.top_p > 1 || r.sampling.min_p < 0 ||
        r.sampling.min_p > 1 || r.sampling.top_k < 0 || r.sampling.repetition_penalty <= 0)
      return invalid_input("sampling settings out of range (temperature >= 0, 0 < top-p <= 1, 0 <= min-p <= 1, "
                           "top-k >= 0, repetition penalty > 0)");
    q.eos = config_.eos_token_ids;
    q.text = std::make_unique<decode_stream>(tokenizer_, true);
    q.ids = r.prompt_ids;
    q.answer_start = static_cast<int64_t>(r.prompt_ids.size());
    q.stats.prompt_tokens = static_cast<int64_t>(r.prompt_ids.size());
    for (int32_t id : r.generated_ids) {
      if (q.reason != finish_reason::none) break;
      accept_token(q, id, max_length_);
    }
    st->seqs.push_back(std::move(q));
  }
  return std::unique_ptr<batch>(new batch(std::move(st)));
}

status batch::step(std::vector<generated_token>* out, const cancel_check& cancelled) {
  state& st = *s_;
  generator& g = *st.gen;
  const generator::model_io& io = *g.io_;
  const size_t B = st.seqs.size();
  out->assign(B, generated_token{});
  if (done()) return status::ok();
  if (cancelled && cancelled()) {
    for (size_t i = 0; i < B; ++i) cancel(i);
    return status::ok();
  }
  if (!st.prefilled) st.started = clock_type::now();

  // Tokens fed this step, per sequence.
  std::vector<std::vector<int32_t>> feed(B);
  for (size_t b = 0; b < B; ++b) {
    sequence& q = st.seqs[b];
    if (!st.prefilled) feed[b].assign(q.ids.begin() + q.cached, q.ids.end());
    else if (q.reason == finish_reason::none) feed[b] = {q.ids.back()};
    else feed[b] = {g.config_.pad_token_id >= 0 ? g.config_.pad_token_id : 0};
  }
  int64_t S = 0;
  for (auto& f : feed) S = std::max<int64_t>(S, static_cast<int64_t>(f.size()));
  const int32_t pad = g.config_.pad_token_id >= 0 ? g.config_.pad_token_id : 0;
  const int64_t Bn = static_cast<int64_t>(B);

  std::vector<int64_t> ids(B * S, pad), pos(B * S, 0), mask;
  std::vector<int64_t> last_row(B);  // row of logits to read per sequence
  int64_t mask_len = 0;
  if (io.gqa) {
    // Right padding; each sequence at its own length.
    int64_t total = 0;
    for (size_t b = 0; b < B; ++b) {
      sequence& q = st.seqs[b];
      const int64_t base = q.cached;
      const int64_t n = static_cast<int64_t>(feed[b].size());
      for (int64_t s = 0; s < n; ++s) ids[b * S + s] = feed[b][s], pos[b * S + s] = base + s;
      last_row[b] = static_cast<int64_t>(b) * S + n - 1;
      total = std::max(total, base + n);
    }
    mask_len = total;
    mask.assign(B * total, 0);
    for (size_t b = 0; b < B; ++b) {
      const int64_t base = st.seqs[b].cached;
      const int64_t n = static_cast<int64_t>(feed[b].size());
      for (int64_t t = 0; t < base + n; ++t) mask[b * total + t] = 1;
    }
  } else {
    // A shared cache length: the prefill is right-padded (a padded query still sees its
    // sequence's real keys, so no attention row is fully masked), later steps leave masked gaps;
    // a finished sequence's new positions are masked too. Positions count real tokens only.
    mask_len = st.past + S;
    if (!st.prefilled && !st.reused) st.valid.assign(B, {});
    mask.assign(B * mask_len, 0);
    for (size_t b = 0; b < B; ++b) {
      sequence& q = st.seqs[b];
      const int64_t n = static_cast<int64_t>(feed[b].size());
      const bool real = !st.prefilled || q.reason == finish_reason::none;
      std::vector<char>& v = st.valid[b];
      v.resize(static_cast<size_t>(st.past), 0);
      for (int64_t s = 0; s < S; ++s) v.push_back(s < n && real);
      int64_t count = q.cached;
      for (int64_t s = 0; s < S; ++s) {
        if (s < n) ids[b * S + s] = feed[b][s];
        pos[b * S + s] = count;
        if (v[st.past + s]) ++count;
      }
      for (int64_t t = 0; t < mask_len; ++t) mask[b * mask_len + t] = v[t];
      last_row[b] = static_cast<int64_t>(b) * S + n - 1;
    }
  }

  std::vector<tensor> inputs(io.num_inputs);
  // Logits of each sequence's last position only: one position when the batch has one
  // sequence or one token each; a right-padded batched prefill asks for every position.
  int64_t R = S;
  if (io.logits_positions >= 0) {
    std::vector<int64_t> rows;
    if (B == 1 || S == 1) {
      rows = {S - 1};
      for (size_t b = 0; b < B; ++b) last_row[b] = static_cast<int64_t>(b);
    } else {
      rows.resize(static_cast<size_t>(S));
      std::iota(rows.begin(), rows.end(), 0);
    }
    R = static_cast<int64_t>(rows.size());
    inputs[io.logits_positions] = int_tensor(dtype::i64, {R}, rows);
  }
  inputs[io.input_ids] = int_tensor(io.ids_type, {Bn, S}, ids);
  inputs[io.attention_mask] = int_tensor(io.mask_type, {Bn, mask_len}, mask);
  if (io.position_ids >= 0) inputs[io.position_ids] = int_tensor(io.pos_type, {Bn, S}, pos);
  if (io.use_cache_branch >= 0) {
    tensor u = tensor::zeros(dtype::boolean, {1});
    u.data<bool>()[0] = !io.gqa && st.past > 0;
    inputs[io.use_cache_branch] = u;
  }
  if (!st.prefilled && !st.reused) {
    const int64_t len = io.share_buffer ? g.max_length_ : 0;
    st.cache.clear();
    for (size_t c = 0; c < io.cache.size(); ++c)
      st.cache.push_back(tensor::zeros(io.cache_type, {Bn, io.kv_heads, len, io.head_size}));
  }
  // Moved, not copied: the run may then write the new positions into these buffers in place.
  for (size_t c = 0; c < io.cache.size(); ++c) inputs[io.cache[c].input] = std::move(st.cache[c]);

  session::stop_check stop = [&cancelled]() { return cancelled && cancelled(); };
  auto res = g.session_->run(inputs, nullptr, nullptr, cancelled ? &stop : nullptr);
  if (!res.has_value()) {
    if (cancelled && cancelled()) {
      for (size_t i = 0; i < B; ++i) cancel(i);
      return status::ok();
    }
    for (auto& q : st.seqs)
      if (q.reason == finish_reason::none) q.reason = q.stats.reason = finish_reason::cancelled;
    return io_error("the model run failed: {}", res.error().message());
  }
  std::vector<tensor>& outs = res.value();
  for (size_t c = 0; c < io.cache.size(); ++c) st.cache[c] = std::move(outs[io.cache[c].output]);
  if (!io.gqa) st.past += S;
  const tensor& logits = outs[io.logits];
  if (logits.rank() != 3 || logits.dim(0) != Bn || logits.dim(1) != R)
    return io_error("the model's logits are {}, expected [{}, {}, vocab]", shape_str(logits.shape()), Bn, R);
  const int64_t V = logits.dim(2);
  const auto now = clock_type::now();
  std::vector<float> row;
  for (size_t b = 0; b < B; ++b) {
    sequence& q = st.seqs[b];
    if (q.reason != finish_reason::none) continue;
    q.cached += static_cast<int64_t>(feed[b].size());
    logits_row(logits, last_row[b], V, &row);
    const int64_t index = static_cast<int64_t>(q.ids.size()) - q.answer_start;
    const int32_t id = sample_token(row, q.req.sampling, q.ids, index);
    generated_token& t = (*out)[b];
    t.id = id;
    t.index = index;
    t.logprob = token_logprob(row.data(), V, id);
    t.text = accept_token(q, id, g.max_length_);
    q.stats.generated_tokens++;
    if (q.stats.generated_tokens == 1) q.stats.time_to_first_token_ms = ms_between(st.started, now);
    q.stats.total_ms = ms_between(st.started, now);
    if (q.stats.generated_tokens > 1)
      q.stats.decode_tokens_per_s = (q.stats.generated_tokens - 1) * 1000.0 /
                                    std::max(1e-6, q.stats.total_ms - q.stats.time_to_first_token_ms);
  }
  st.prefilled = true;
  return status::ok();
}

struct generator::kept_cache {
  std::vector<int32_t> ids;   // the tokens whose keys and values the cache holds
  std::vector<tensor> cache;  // per model_io::cache slot
};

void generator::adopt_kept_cache(batch& b) {
  batch::state& st = *b.s_;
  sequence& q = st.seqs[0];
  std::unique_ptr<kept_cache> k;
  size_t common = 0;
  {
    std::lock_guard<std::mutex> lock(kept_mu_);
    size_t best = kept_.size();
    for (size_t i = 0; i < kept_.size(); ++i) {
      const std::vector<int32_t>& ids = kept_[i]->ids;
      size_t n = 0;
      while (n < ids.size() && n < q.ids.size() && ids[n] == q.ids[n]) ++n;
      if (n > common) common = n, best = i;
    }
    // At least one token is fed: its logits give the next one.
    common = std::min(common, q.ids.size() - 1);
    if (best == kept_.size() || common == 0) return;
    k = std::move(kept_[best]);
    kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(best));
  }
  const int64_t L = static_cast<int64_t>(common);
  if (!io_->gqa) {
    // A cache that grows by the present outputs: cut to the common prefix.
    for (tensor& t : k->cache) {
      if (t.dim(2) == L) continue;
      tensor cut = tensor::zeros(t.type(), {t.dim(0), t.dim(1), L, t.dim(3)});
      const size_t row = static_cast<size_t>(t.dim(3)) * dtype_size(t.type());
      const auto* src = static_cast<const std::byte*>(t.raw());
      auto* dst = static_cast<std::byte*>(cut.raw());
      for (int64_t h = 0; h < t.dim(0) * t.dim(1); ++h)
        std::copy(src + h * t.dim(2) * row, src + (h * t.dim(2) + L) * row, dst + h * L * row);
      t = std::move(cut);
    }
    st.past = L;
    st.valid.assign(1, std::vector<char>(static_cast<size_t>(L), 1));
  }
  // GroupQueryAttention caches keep their length: the attention mask and seqlens say how many
  // positions count, and the new ones are written from position L on.
  st.cache = std::move(k->cache);
  st.reused = true;
  q.cached = L;
  q.stats.cached_prompt_tokens = L;
}

void generator::keep_cache(batch& b) {
  batch::state& st = *b.s_;
  if (reuse_caches_ <= 0 || st.seqs.size() != 1 || !st.prefilled || st.cache.size() != io_->cache.size()) return;
  for (const tensor& t : st.cache)
    if (!t.raw()) return;  // moved into a run that failed
  const sequence& q = st.seqs[0];
  if (q.cached <= 0) return;
  auto k = std::make_unique<kept_cache>();
  k->ids.assign(q.ids.begin(), q.ids.begin() + q.cached);
  k->cache = std::move(st.cache);
  std::lock_guard<std::mutex> lock(kept_mu_);
  kept_.push_back(std::move(k));
  while (static_cast<int>(kept_.size()) > reuse_caches_) kept_.erase(kept_.begin());
}

expected<completion_stats> generator::complete(const completion_request& request, const token_sink& sink,
                                               const cancel_check& cancelled) {
  GG_ASSIGN_OR_RETURN(std::unique_ptr<batch> b, start({request}));
  if (reuse_caches_ > 0 && b->s_->seqs[0].reason == finish_reason::none) adopt_kept_cache(*b);
  std::vector<generated_token> out;
  while (!b->done()) {
    GG_RETURN_IF_ERROR(b->step(&out, cancelled));
    if (out[0].id >= 0 && sink && !sink(out[0])) b->cancel(0);
  }
  keep_cache(*b);
  completion_stats st = b->stats(0);
  if (st.generated_tokens > 1) measured_tps_.store(st.decode_tokens_per_s);
  return st;
}

expected<std::vector<completion_stats>> generator::complete_batch(const std::vector<completion_request>& requests,
                                                                  const batch_sink& sink, const cancel_check& cancelled) {
  GG_ASSIGN_OR_RETURN(std::unique_ptr<batch> b, start(requests));
  std::vector<generated_token> out;
  while (!b->done()) {
    GG_RETURN_IF_ERROR(b->step(&out, cancelled));
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i].id >= 0 && sink && !sink(i, out[i])) b->cancel(i);
  }
  std::vector<completion_stats> r;
  for (size_t i = 0; i < b->size(); ++i) r.push_back(b->stats(i));
  return r;
}

expected<score_result> generator::score(const std::vector<int32_t>& prompt_ids, const std::vector<int32_t>& answer_ids) {
  if (prompt_ids.empty() || answer_ids.empty()) return invalid_input("scoring needs a prompt and an answer");
  const int64_t n = static_cast<int64_t>(prompt_ids.size() + answer_ids.size());
  if (n - 1 > max_length_) return invalid_input("the prompt and answer have {} tokens; the model's context is {}", n, max_length_);
  std::vector<int64_t> ids(prompt_ids.begin(), prompt_ids.end());
  ids.insert(ids.end(), answer_ids.begin(), answer_ids.end() - 1);
  const int64_t S = static_cast<int64_t>(ids.size());
  for (int64_t id : ids)
    if (id < 0 || id >= static_cast<int64_t>(std::max<size_t>(tokenizer_.vocab_size(), config_.vocab_size)))
      return invalid_input("token id {} is outside the model's vocabulary", id);
  const model_io& io = *io_;
  std::vector<tensor> inputs(io.num_inputs);
  std::vector<int64_t> pos(S);
  std::iota(pos.begin(), pos.end(), 0);
  if (io.logits_positions >= 0) inputs[io.logits_positions] = int_tensor(dtype::i64, {S}, pos);
  inputs[io.input_ids] = int_tensor(io.ids_type, {1, S}, ids);
  inputs[io.attention_mask] = int_tensor(io.mask_type, {1, S}, std::vector<int64_t>(S, 1));
  if (io.position_ids >= 0) inputs[io.position_ids] = int_tensor(io.pos_type, {1, S}, pos);
  if (io.use_cache_branch >= 0) inputs[io.use_cache_branch] = tensor::zeros(dtype::boolean, {1});
  const int64_t len = io.share_buffer ? max_length_ : 0;
  for (auto& c : io.cache) inputs[c.input] = tensor::zeros(io.cache_type, {1, io.kv_heads, len, io.head_size});
  GG_ASSIGN_OR_RETURN(std::vector<tensor> outs, session_->run(inputs));
  const tensor& logits = outs[io.logits];
  if (logits.rank() != 3 || logits.dim(1) != S) return io_error("the model's logits are {}", shape_str(logits.shape()));
  const int64_t V = logits.dim(2);
  score_result r;
  std::vector<float> row;
  for (size_t i = 0; i < answer_ids.size(); ++i) {
    logits_row(logits, static_cast<int64_t>(prompt_ids.size() + i) - 1, V, &row);
    r.logprobs.push_back(token_logprob(row.data(), V, answer_ids[i]));
    r.argmax.push_back(argmax(row.data(), V));
  }
  return r;
}

}  // namespace gpugrid::llm
