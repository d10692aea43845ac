// A loaded, optimised model ready to run: kernels created, weights prepacked, and a memory
// plan per input-shape signature.
//
// Thread-safety: run() may be called from several threads at once (one job each); each run
// gets its own arena. Creation is single-threaded. A session keeps its graph alive.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/graph.h"
#include "engine/kernel.h"

namespace gpugrid {

struct session_options {
  int threads = 0;          // engine threads; 0: all cores
  bool optimize = true;     // constant folding and fusion passes
  bool memory_plan = true;  // one arena per device per run, planned from the first run of each shape
  // "cpu", "cuda", "cuda:N", or "auto" (the first CUDA device when there is one, else the CPU).
  std::string device = "cpu";
  // On a device, when every op runs there and shapes repeat: record the run once as a device
  // graph (CUDA Graph) and replay it, so kernel launches cost almost nothing.
  bool device_graphs = true;
  bool profile = false;      // time every node (see run_stats::op_ms); turns device graphs off
  // On CUDA: float matrix products and convolutions may use TF32 tensor cores (about three
  // significant digits; --precision tf32). Never on by default.
  bool allow_tf32 = false;
  // A subgraph run by a control-flow kernel (If, Loop, Scan, SequenceMap): always on the CPU,
  // no memory plan, inputs not checked against their declarations (as in onnxruntime, a
  // subgraph's declared shapes are hints), sequences allowed as inputs and outputs, and run
  // with run_subgraph() on the calling kernel's thread pool.
  bool subgraph = false;
  // With memory_plan false: a graph input whose bytes nobody holds but the inputs vector given
  // to run() may be overwritten in place by a kernel that reuses an input for an output (as
  // GroupQueryAttention does with a past/present buffer shared across steps, so a KV cache is
  // not copied per token). The caller then must not read that input after the run.
  bool overwrite_inputs = false;
};

struct run_stats {
  int64_t arena_bytes = 0;         // the planned host arena of this run (0 on a planning run)
  int64_t peak_bytes = 0;          // most host bytes of intermediate and output tensors alive at once
  int64_t device_arena_bytes = 0;  // the same on the device
  int64_t device_peak_bytes = 0;
  bool planned = false;            // this run used a memory plan made earlier
  bool graph_replay = false;       // this run replayed a captured device graph
  int cpu_fallbacks = 0;           // device nodes that ran on the CPU in this run
  // With session_options::profile: milliseconds per op type ("Conv", "MemcpyToHost", ...),
  // measured by waiting for the device after every node (so the run itself is slower).
  std::map<std::string, double> op_ms;
  // With session_options::profile: the same per node of the optimised graph, in run order
  // (fused nodes as they run: a FusedConv is one node), with its first output's shape.
  struct node_time {
    std::string op, name, shape;
    double ms = 0;
  };
  std::vector<node_time> node_ms;
};

class device_backend;
class run_context;

class session {
 public:
  // Optimises (a copy of) g and creates every node's kernel. Fails with invalid_input when
  // an op is unsupported ("unsupported op X (domain 'd', opset N) in node 'n'") or an
  // attribute is bad.
  static expected<std::unique_ptr<session>> create(std::shared_ptr<const graph> g,
                                                   const session_options& options = {});
  ~session();

  const graph& model() const { return *graph_; }
  // Runs the model. inputs are in the order of graph().inputs; returns the outputs in the
  // order of graph().outputs. Input dtypes and shapes are checked against the declarations.
  // observer, when set, is called after each node with its inputs and outputs.
  using node_observer = std::function<void(const node&, const std::vector<const tensor*>&,
                                           const std::vector<const tensor*>&)>;
  // stop, when set, is asked before each node (and before a captured graph is replayed); once
  // it returns true the run ends with an io error "the run was stopped" (a job cancelled or out
  // of time).
  using stop_check = std::function<bool()>;
  expected<std::vector<tensor>> run(const std::vector<tensor>& inputs, run_stats* stats = nullptr,
                                    const node_observer* observer = nullptr, const stop_check* stop = nullptr);

  // For control-flow kernels: runs a session made with session_options::subgraph on the
  // caller's pool. inputs follow graph().inputs (formal inputs, then captured values).
  expected<std::vector<tensor>> run_subgraph(const std::vector<tensor>& inputs, thread_pool* pool);

  // Names of graph inputs/outputs, for matching NAME=FILE arguments.
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;

  // "cpu" or the device's id ("cuda:0"), and a note when "auto" fell back to the CPU.
  std::string device_name() const;
  const std::string& device_note() const { return device_note_; }
  // Ops placed on the CPU although a device was asked for (op type -> count), for `inspect`.
  std::map<std::string, int> cpu_fallback_ops() const;

 private:
  struct plan;
  // A captured device graph for one input signature, with the fixed addresses it reads and
  // writes. Used by one run at a time (its mutex); others take the plain path meanwhile.
  struct graph_bundle {
    std::mutex mu;
    bool ready = false, failed = false;
    std::unique_ptr<run_context> rc;
    std::shared_ptr<std::byte> arenas[2];
    std::vector<std::pair<size_t, void*>> uploads;  // graph input index -> device address
    struct download { const void* src; dtype type; shape_t shape; };
    std::vector<download> downloads;                // one per graph output, in order
  };
  session() = default;
  expected<std::vector<tensor>> execute(const std::string& signature, const std::vector<tensor>& inputs,
                                        run_stats* stats, const node_observer* observer, run_context* given_rc,
                                        std::shared_ptr<std::byte>* given_arenas, graph_bundle* capture,
                                        thread_pool* pool = nullptr, const stop_check* stop = nullptr);
  expected<std::vector<tensor>> run_graph(graph_bundle& b, const std::shared_ptr<plan>& p,
                                          const std::vector<tensor>& inputs, run_stats* stats);
  void find_capture_range();
  status check_inputs(const std::vector<tensor>& inputs, std::string* signature) const;

  status place_on_device();

  std::shared_ptr<graph> graph_;
  std::vector<std::unique_ptr<kernel>> kernels_;
  std::shared_ptr<device_backend> device_;     // null: everything on the CPU
  std::string device_note_;
  std::vector<char> on_device_;                // per node
  std::vector<std::vector<char>> host_output_; // per node, per output: produced in host memory
  std::map<int, tensor> device_initializers_;  // value id -> weights resident on the device
  std::map<int, int> device_initializer_source_;  // device copy id -> host initializer id
  // CPU kernels for device nodes whose device kernel declined a case (made on first need).
  std::mutex fallback_mu_;
  std::map<size_t, std::shared_ptr<kernel>> cpu_fallback_;
  expected<std::shared_ptr<kernel>> cpu_kernel_for(size_t node_index);
  status run_on_cpu_instead(size_t node_index, kernel_context& device_ctx, run_context* rc,
                            std::vector<tensor>* outs);
  std::mutex contexts_mu_;
  std::vector<std::unique_ptr<run_context>> free_contexts_;
  bool capturable_ = false;
  size_t capture_begin_ = 0, capture_end_ = 0;  // nodes [begin, end) are captured
  std::map<std::string, std::shared_ptr<graph_bundle>> graphs_;
  std::vector<int> use_counts_;       // per value: node inputs + graph outputs reading it
  std::vector<bool> pinned_;          // per value: graph input, initializer or graph output
  std::vector<bool> overwritable_;    // per value: a graph input that may be overwritten (overwrite_inputs)
  std::vector<char> takes_sequences_; // per node: the op accepts sequence values as inputs
  session_options options_;
  std::unique_ptr<thread_pool> pool_;
  std::mutex plans_mu_;
  std::map<std::string, std::shared_ptr<plan>> plans_;
};

// The graph optimisations the session applies (exposed for tests and `inspect`); cpu_only when
// every node will run on the CPU (then also the fusions only the CPU kernels take).
status optimize_graph(graph& g, thread_pool* pool, bool cpu_only);

// Tells the engine how many threads OpenBLAS may use (call once before running models): never
// more than limit_blas_threads allows. The CPU backend sets that limit to one where its own
// matrix products run: what still goes to OpenBLAS then runs on the engine's threads, and
// OpenBLAS's own threads would only spin beside them (about 100 ms after each product).
void set_blas_threads(int threads);
void limit_blas_threads(int most);

}  // namespace gpugrid
