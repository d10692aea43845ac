// gpugrid run: one inference, on the grid or (with --local) in this process.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <fmt/format.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/embedded.h"
#include "actors/node.h"
#include "actors/receipt_outbox.h"
#include "actors/reputation.h"
#include "cli/grid_setup.h"
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

// The share of single-provider jobs re-run on this machine's engine to catch lying providers.
constexpr double kSpotCheckRate = 0.05;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

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
    GG_RETURN_IF_ERROR(write_tensor_file(o.output, outputs[0], names[0]));
    (*files)[0] = o.output == "-" ? "-" : o.output;
    return status::ok();
  }
  if (!o.output_dir.empty() || o.json) return status::ok();
  if (!isatty(STDOUT_FILENO)) {
    if (!outputs.empty()) GG_RETURN_IF_ERROR(write_tensor_file("-", outputs[0], names[0]));
    (*files)[0] = "-";
    return status::ok();
  }
  for (size_t i = 0; i < outputs.size(); ++i) fmt::print("{}\n", summarize_output(names[i], outputs[i]));
  return status::ok();
}

std::string outputs_json(const std::vector<std::string>& names, const std::vector<tensor>& outputs,
                         const std::vector<std::string>& files) {
  json_writer w;
  w.begin_array();
  for (size_t i = 0; i < outputs.size(); ++i) {
    w.begin_object().key("name").value(names[i]).key("dtype").value(std::string(dtype_name(outputs[i].type())));
    w.key("shape").begin_array();
    for (int64_t d : outputs[i].shape()) w.value(d);
    w.end_array();
    if (files[i].empty()) w.key("file").null(); else w.key("file").value(files[i]);
    w.end_object();
  }
  w.end_array();
  return w.str();
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
  if (say_local) fmt::print(stderr, "gpugrid: no peers configured; running on the local engine\n");
  if (!(*sess)->device_note().empty() && o.device == "auto" && isatty(STDERR_FILENO))
    fmt::print(stderr, "gpugrid: using the CPU ({})\n", (*sess)->device_note());
  auto t1 = std::chrono::steady_clock::now();
  auto outputs = (*sess)->run(*inputs);
  double compute_ms = ms_since(t1);
  if (!outputs) return fail(outputs.error().with_context(o.model));
  std::vector<std::string> files;
  status st = deliver_outputs(o, (*sess)->output_names(), *outputs, &files);
  if (!st.is_ok()) return fail(st);
  if (o.json) {
    json_writer w;
    w.begin_object().key("outputs").raw(outputs_json((*sess)->output_names(), *outputs, files));
    w.key("providers").begin_array().end_array();
    w.key("verified").begin_object().key("count").value(1).key("method").value("local").end_object();
    w.key("timing_ms").begin_object().key("total").value(ms_since(t0)).key("queue").value(0.0)
        .key("transfer").value(0.0).key("compute").value(compute_ms).end_object();
    w.end_object();
    fmt::print("{}\n", w.str());
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
  json_writer w;
  w.begin_object().key("outputs").raw(outputs_json(names, outputs, files));
  w.key("providers").begin_array();
  for (const auto& p : r.providers) {
    w.begin_object().key("node_id").value(p.node).key("url").value(p.url.empty() ? "embedded" : p.url);
    w.key("price").value(p.paid ? p.price : 0.0).key("paid").value(p.paid).key("agreed").value(p.agreed).end_object();
  }
  w.end_array();
  w.key("verified").begin_object().key("count").value(r.agreeing).key("method").value(r.method).end_object();
  w.key("timing_ms").begin_object().key("total").value(r.total_ms).key("queue").value(r.queue_ms)
      .key("transfer").value(r.transfer_ms).key("compute").value(r.compute_ms).end_object();
  w.end_object();
  return w.str();
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
  if (!r) return fail(r.error().with_context(o.model));
  std::vector<std::string> names;
  for (int id : model.outputs) names.push_back(model.values[id].name);
  std::vector<std::string> files;
  status st = deliver_outputs(o, names, r->outputs, &files);
  if (!st.is_ok()) return fail(st);
  if (o.json) fmt::print("{}\n", grid_json(names, r->outputs, files, *r));
  return 0;
}

int run_embedded_grid(const run_options& o) {
  auto j = load_grid_job(o);
  if (!j) return fail(j.error());
  fmt::print(stderr, "gpugrid: no peers configured; running on an embedded local grid (one in-process provider)\n");
  grid::embedded_options eo;
  eo.device = o.device;
  eo.threads = o.threads;
  eo.client.redundancy = o.redundancy;
  eo.client.max_price = o.max_price;
  eo.client.timeout_s = o.timeout_s;
  bool tty = isatty(STDERR_FILENO);
  auto r = grid::run_embedded(j->bytes, std::move(j->inputs), grid::rough_gflops(*j->model), eo,
                              [&](const std::string& msg) { if (tty) fmt::print(stderr, "gpugrid: {}\n", msg); });
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
  bool tty = isatty(STDERR_FILENO);
  if (!recovered.empty()) fmt::print(stderr, "gpugrid: {}\n", recovered);

  auto cfg = grid_actor_config();
  caf::actor_system sys{*cfg};
  grid::node_options no;
  no.bootstrap = o.peers;
  if (tty && bytes->size() >= (size_t{4} << 20)) {
    no.on_upload_progress = [](const std::string& provider, uint64_t sent, uint64_t total) {
      double mib = 1.0 / (1 << 20);
      fmt::print(stderr, "\rgpugrid: uploading the model to {}: {:3.0f}% ({:.1f} of {:.1f} MiB){}",
                 provider.substr(0, 14), total ? 100.0 * sent / total : 100.0, sent * mib, total * mib,
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
    return fail(status(error_kind::no_provider, "no provider is reachable: " + why));
  }
  if (tty) {
    for (const auto& f : failures) fmt::print(stderr, "gpugrid: {}\n", f);
    fmt::print(stderr, "gpugrid: {} provider{} reachable\n", providers.size(), providers.size() == 1 ? "" : "s");
  }

  grid::job_spec job;
  job.model_bytes = bytes;
  job.model_hash = ledger::blake2b_256(*bytes);
  job.gflops = grid::rough_gflops(*j->model);
  job.inputs = std::move(j->inputs);
  grid::client_options co;
  co.redundancy = o.redundancy;
  co.max_price = o.max_price;
  co.timeout_s = o.timeout_s;
  co.spot_check_rate = o.redundancy == 1 ? kSpotCheckRate : 0.0;
  auto outbox = grid::receipt_outbox::open(*dir);
  if (!outbox) return fail(outbox.error());
  co.outbox = outbox->get();
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
                         [&](const std::string& msg) { if (tty) fmt::print(stderr, "gpugrid: {}\n", msg); });
  (*node)->stop();
  return finish_grid_run(o, *local_model, r);
}

int run_command(const run_options& o) {
  if (!o.batch.empty()) return batch_run_command(o);
  if (!valid_device_spec(o.device)) {
    fmt::print(stderr, "gpugrid: '{}' is not a device (use auto, cpu, cuda or cuda:N)\n", o.device);
    return 2;
  }
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
