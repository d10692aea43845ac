// gpugrid run: one inference, on the grid or (with --local) in this process.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/embedded.h"
#include "actors/node.h"
#include "actors/receipt_outbox.h"
#include "actors/reputation.h"
#include "cli/chain_payment.h"
#include "cli/grid_setup.h"
#include "cli/log.h"
#include "ledger/ledger.h"
#include "net/identity.h"
#include "base/json.h"
#include "cli/commands.h"
#include "cli/model_io.h"
#include "engine/backend.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "engine/tensor_io.h"

namespace gpugrid::cli {

namespace {

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: {}\n", st.message());
  return exit_code_for(st.kind());
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// The bytes of `t` in `format` (npy | pb | raw).
std::string encode_output(const tensor& t, const std::string& name, const std::string& format) {
  if (format == "npy") return write_npy(t);
  if (format == "pb") return write_tensor_proto(t, name);
  return std::string(static_cast<const char*>(t.raw()), static_cast<size_t>(t.bytes()));
}

// Writes one output to a file or "-" (stdout), in --output-format when given, else by
// extension (raw bytes for "-"). A file is replaced atomically.
status write_output(const std::string& path, const tensor& t, const std::string& name, const std::string& format) {
  if (format.empty()) return write_tensor_file(path, t, name);
  std::string bytes = encode_output(t, name, format);
  if (path == "-") {
    if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() || std::fflush(stdout) != 0)
      return io_error("cannot write the output to stdout");
    return status::ok();
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    // /dev/null, a named pipe: written in place (renaming over it would replace the node).
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return io_error("cannot write '{}': {}", path, std::strerror(errno));
    bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    if (std::fclose(f) != 0 || !ok) return io_error("cannot write '{}'", path);
    return status::ok();
  }
  std::string tmp = path + ".partial";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return io_error("cannot write '{}': {}", path, std::strerror(errno));
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return io_error("cannot write '{}'", path);
  }
  return status::ok();
}

// Refuses what would go wrong before any work is done: binary on a terminal, and --json
// sharing stdout with output bytes.
status check_output_flags(const run_options& o) {
  if (o.output == "-" && o.json)
    return status(error_kind::usage,
                  "--json and -o - would both write to stdout: give -o FILE, or read the values from the JSON");
  if (!o.output_format.empty() && o.output.empty() && (o.json || !o.output_dir.empty()))
    return status(error_kind::usage, "--output-format applies to -o FILE or stdout, not to --json or --output-dir");
  bool binary_to_stdout = o.output == "-" || (o.output.empty() && !o.output_format.empty());
  if (binary_to_stdout && isatty(STDOUT_FILENO))
    return status(error_kind::usage,
                  "refusing to write binary output to a terminal: redirect stdout (> FILE or | ...) or give -o FILE");
  return status::ok();
}

// Writes outputs per -o / --output-dir / terminal rules; fills file names for --json.
status deliver_outputs(const run_options& o, const std::vector<std::string>& names,
                       const std::vector<tensor>& outputs, std::vector<std::string>* files) {
  files->assign(outputs.size(), "");
  if (!o.output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.output_dir, ec);
    if (ec) return io_error("cannot create output folder '{}': {}", o.output_dir, ec.message());
    for (size_t i = 0; i < outputs.size(); ++i) {
      std::string path = (std::filesystem::path(o.output_dir) / (output_file_name(names[i]) + ".npy")).string();
      GG_RETURN_IF_ERROR(write_tensor_file(path, outputs[i], names[i]));
      (*files)[i] = path;
    }
  }
  if (!o.output.empty()) {
    if (outputs.empty()) return invalid_input("the model has no outputs to write");
    GG_RETURN_IF_ERROR(write_output(o.output, outputs[0], names[0], o.output_format));
    (*files)[0] = o.output == "-" ? "-" : o.output;
    return status::ok();
  }
  if (!o.output_dir.empty() || o.json) return status::ok();
  if (!isatty(STDOUT_FILENO)) {
    if (!outputs.empty()) GG_RETURN_IF_ERROR(write_output("-", outputs[0], names[0], o.output_format));
    (*files)[0] = "-";
    return status::ok();
  }
  for (size_t i = 0; i < outputs.size(); ++i) fmt::print("{}\n", summarize_output(names[i], outputs[i]));
  return status::ok();
}

// Every element of t, flattened in C order: numbers (null for NaN and infinities) or booleans.
json tensor_values(const tensor& t) {
  json values = json::array();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (t.type() == dtype::boolean) values.push_back(t.as_int64(i) != 0);
    else if (is_float(t.type())) values.push_back(t.as_double(i));
    else values.push_back(t.as_int64(i));
  }
  return values;
}

json outputs_json(const std::vector<std::string>& names, const std::vector<tensor>& outputs,
                  const std::vector<std::string>& files) {
  json list = json::array();
  for (size_t i = 0; i < outputs.size(); ++i) {
    json o;
    o["name"] = names[i];
    o["dtype"] = std::string(dtype_name(outputs[i].type()));
    o["shape"] = outputs[i].shape();
    o["values"] = tensor_values(outputs[i]);
    o["file"] = files[i].empty() ? json(nullptr) : json(files[i]);
    list.push_back(std::move(o));
  }
  return list;
}

json timing_json(double total, double queue, double transfer, double compute) {
  return json{{"total", total}, {"queue", queue}, {"transfer", transfer}, {"compute", compute}};
}

int run_local(const run_options& o, bool say_local) {
  auto t0 = std::chrono::steady_clock::now();
  auto model = load_model_file(o.model);
  if (!model) return fail(model.error());
  session_options so;
  so.threads = o.threads;
  so.device = o.device;
  so.allow_tf32 = o.precision == "tf32";
  set_blas_threads(o.threads);
  auto sess = session::create(*model, so);
  if (!sess) return fail(sess.error().with_context(o.model));
  auto inputs = load_inputs((*sess)->model(), o.inputs);
  if (!inputs) return fail(inputs.error());
  if (say_local) log::note("no peers configured; running on the local engine");
  if (!(*sess)->device_note().empty() && o.device == "auto") log::note("using the CPU ({})", (*sess)->device_note());
  auto t1 = std::chrono::steady_clock::now();
  auto outputs = (*sess)->run(*inputs);
  double compute_ms = ms_since(t1);
  if (!outputs) return fail(outputs.error().with_context(o.model));
  std::vector<std::string> files;
  status st = deliver_outputs(o, (*sess)->output_names(), *outputs, &files);
  if (!st.is_ok()) return fail(st);
  if (o.json) {
    json j;
    j["outputs"] = outputs_json((*sess)->output_names(), *outputs, files);
    j["providers"] = json::array();
    j["verified"] = json{{"count", 1}, {"method", "local"}};
    j["timing_ms"] = timing_json(ms_since(t0), 0.0, 0.0, compute_ms);
    fmt::print("{}\n", dump_json(j));
  }
  return 0;
}

namespace {

bool read_whole_file(const std::string& path, std::string* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
}

std::string grid_json(const std::vector<std::string>& names, const std::vector<tensor>& outputs,
                      const std::vector<std::string>& files, const grid::job_outcome& r) {
  json j;
  j["outputs"] = outputs_json(names, outputs, files);
  j["providers"] = json::array();
  for (const auto& p : r.providers) {
    json pj{{"node_id", p.node},
            {"url", p.url.empty() ? "embedded" : p.url},
            {"price", p.paid ? p.price : 0.0},
            {"paid", p.paid},
            {"agreed", p.agreed},
            // "chain": paid with a voucher on a chain; "unsettled": credits in the two ledgers only
            {"settlement", p.settled ? "chain" : "unsettled"}};
    if (p.settled) pj["paid_wei"] = p.paid_wei;
    j["providers"].push_back(std::move(pj));
  }
  j["verified"] = json{{"count", r.agreeing}, {"method", r.method}};
  j["timing_ms"] = timing_json(r.total_ms, r.queue_ms, r.transfer_ms, r.compute_ms);
  return dump_json(j);
}

// A hint for the handshake failure of a node that dialed its own identity.
std::string with_self_hint(const std::string& message) {
  if (message.find("connected to itself") == std::string::npos) return message;
  return message +
         " (that peer has this node's own identity: it is this process, or a node sharing this data dir; "
         "give one of them another --data-dir)";
}

}  // namespace

// What every grid run needs: the parsed model, its inputs and the model's bytes.
struct grid_job_input {
  std::shared_ptr<graph> model;
  std::vector<tensor> inputs;
  std::shared_ptr<std::string> bytes;
};

expected<grid_job_input> load_grid_job(const run_options& o) {
  grid_job_input j;
  auto model = load_model_file(o.model);
  if (!model) return model.error();
  j.model = std::move(model).value();
  auto inputs = load_inputs(*j.model, o.inputs);
  if (!inputs) return inputs.error();
  j.inputs = std::move(inputs).value();
  j.bytes = std::make_shared<std::string>();
  if (!read_whole_file(o.model, j.bytes.get()))
    return status(error_kind::invalid_input, fmt::format("cannot read model '{}'", o.model));
  return j;
}

// Writes the outputs of a grid run (and --json) or reports why the job failed.
int finish_grid_run(const run_options& o, const graph& model, const expected<grid::job_outcome>& r) {
  if (!r) return fail(status(r.error().kind(), with_self_hint(r.error().with_context(o.model).message())));
  std::vector<std::string> names;
  for (int id : model.outputs) names.push_back(model.values[id].name);
  std::vector<std::string> files;
  status st = deliver_outputs(o, names, r->outputs, &files);
  if (!st.is_ok()) return fail(st);
  for (const auto& p : r->providers)
    if (p.paid)
      log::note("{} {}: {}", p.settled ? "paid" : "owes", p.node.substr(0, 18),
                p.settled ? fmt::format("{:.9g} in the chain's token (voucher, settled on chain)", p.price)
                          : fmt::format("{:.6g} credits (unsettled)", p.price));
  if (o.json) fmt::print("{}\n", grid_json(names, r->outputs, files, *r));
  return 0;
}

int run_embedded_grid(const run_options& o) {
  auto j = load_grid_job(o);
  if (!j) return fail(j.error());
  log::note("no peers configured; running on an embedded local grid (one in-process provider)");
  grid::embedded_options eo;
  eo.device = o.device;
  eo.threads = o.threads;
  eo.client.redundancy = o.redundancy;
  eo.client.min_redundancy = o.min_redundancy;
  eo.client.max_price = o.max_price;
  eo.client.timeout_s = o.timeout_s;
  auto r = grid::run_embedded(j->bytes, std::move(j->inputs), grid::rough_gflops(*j->model), eo,
                              [&](const std::string& msg) { log::note("{}", msg); });
  return finish_grid_run(o, *j->model, r);
}

// The job on remote providers found through the bootstrap peers.
int run_remote(const run_options& o) {
  auto j = load_grid_job(o);
  if (!j) return fail(j.error());
  auto bytes = j->bytes;
  auto dir = grid_data_dir(o.data_dir);
  if (!dir) return fail(dir.error());
  // Runs share a data dir (see base/data_dir.h). A file-size limit makes a write fail (and the
  // ledger cut back) instead of killing the run.
  ::signal(SIGXFSZ, SIG_IGN);
  auto id = net::load_or_create_identity(*dir);
  if (!id) return fail(id.error());
  auto reputation = grid::reputation_book::load(*dir);
  if (!reputation) return fail(reputation.error());
  std::string recovered;
  auto ledger = ledger::ledger_file::open(*dir, &recovered);
  if (!ledger) return fail(ledger.error());
  bool tty = isatty(STDERR_FILENO) && log::current() != log::verbosity::quiet;
  if (!recovered.empty()) log::warning("{}", recovered);

  auto cfg = grid_actor_config();
  caf::actor_system sys{*cfg};
  grid::node_options no;
  no.bootstrap = o.peers;
  no.slow_dials_file = (std::filesystem::path(*dir) / "slow-dials.tsv").string();
  no.wanted_model = ledger::blake2b_256(*bytes);  // large grids: its providers come from the DHT
  if (tty && bytes->size() >= (size_t{4} << 20)) {
    no.on_upload_progress = [](const std::string& provider, uint64_t sent, uint64_t total) {
      double mib = 1.0 / (1 << 20);
      fmt::print(stderr, "\rgpugrid: uploading the model to {}: {:3.0f}% ({:.1f} of {:.1f} MiB){}",
                 provider, total ? 100.0 * sent / total : 100.0, sent * mib, total * mib,
                 sent >= total ? "\n" : "");
    };
  }
  auto node = grid::grid_node::start(sys, *id, no);
  if (!node) return fail(node.error());
  auto settle_limit = std::chrono::milliseconds(static_cast<int64_t>(std::min(5.0, o.timeout_s) * 1000));
  auto failures = (*node)->settle(settle_limit);
  auto providers = (*node)->providers();
  if (providers.empty()) {
    std::string why = failures.empty() ? "the grid has no providers right now" : fmt::format("{}", fmt::join(failures, "; "));
    return fail(status(error_kind::no_provider, with_self_hint("no provider is reachable: " + why)));
  }
  for (const auto& f : failures) log::warning("{}", with_self_hint(f));
  log::note("{} provider{} reachable", providers.size(), providers.size() == 1 ? "" : "s");

  grid::job_spec job;
  job.model_bytes = bytes;
  job.model_hash = ledger::blake2b_256(*bytes);
  job.gflops = grid::rough_gflops(*j->model);
  job.inputs = std::move(j->inputs);
  grid::client_options co;
  co.redundancy = o.redundancy;
  co.min_redundancy = o.min_redundancy;
  co.max_price = o.max_price;
  co.timeout_s = o.timeout_s;
  // K = 1: the adaptive spot check's floor; K > 1: the floor of the local check of an agreeing
  // set of providers (every job while they are all unverified, then rarer).
  co.spot_check_rate = kSpotCheckFloor;
  const grid::key32 me = id->public_key();
  auto outbox = grid::receipt_outbox::open(*dir, &me);
  if (!outbox) return fail(outbox.error());
  co.outbox = outbox->get();
  // Paid on a chain when one is configured (GPUGRID_CHAIN_* or DATA_DIR/chain.toml).
  auto link = open_chain_link(*dir, {});
  if (!link) return fail(link.error());
  std::unique_ptr<chain_payer> payer;
  if (*link) {
    auto wallet = chain::load_or_create_wallet_key(*dir);
    if (!wallet) return fail(wallet.error());
    payer = std::make_unique<chain_payer>(*link, *wallet, *dir);
    co.payer = payer.get();
  }
  // Spot checks and tie-breaks run on this machine's engine, created only when needed.
  std::shared_ptr<session> local_session;
  std::shared_ptr<graph> local_model = j->model;
  grid::local_runner local = [&](const std::vector<tensor>& in) -> expected<std::vector<tensor>> {
    if (!local_session) {
      session_options so;
      so.threads = o.threads;
      so.device = o.device;
      auto s = session::create(local_model, so);
      if (!s) return s.error();
      local_session = std::move(s).value();
    }
    return local_session->run(in);
  };
  auto r = grid::run_job(sys, providers, job, co, grid::keypair_of(*id), &*reputation, ledger->get(), local,
                         [&](const std::string& msg) { log::note("{}", msg); });
  (*node)->stop();
  return finish_grid_run(o, *local_model, r);
}

int run_command(const run_options& o) {
  if (!o.batch.empty()) return batch_run_command(o);
  if (!valid_device_spec(o.device)) {
    fmt::print(stderr, "gpugrid: '{}' is not a device (use auto, cpu, cuda or cuda:N)\n", o.device);
    return 2;
  }
  if (status st = check_output_flags(o); !st.is_ok()) return fail(st);
  if (o.local) return run_local(o, false);
  if (o.precision != "fp32") {
    // Providers compute in fp32, so that their results can be compared with each other.
    fmt::print(stderr, "gpugrid: --precision {} applies to --local runs only\n", o.precision);
    return 2;
  }
  if (!o.peers.empty()) return run_remote(o);
  return run_embedded_grid(o);
}

}  // namespace gpugrid::cli
