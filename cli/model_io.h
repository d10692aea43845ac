// Turning command-line INPUT arguments into tensors for a model, and outputs into files or
// terminal summaries. Shared by run, bench and the grid's client.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "engine/graph.h"
#include "engine/tensor.h"

namespace gpugrid::cli {

// "float32", "sequence<float32>", "optional<sequence<int64>>": a declared input or output type.
std::string value_type_str(const value_info& v);

// Fails (invalid_input, naming the value) when an input or output of g is a sequence or an
// optional: run, bench and the grid carry tensors only; `selftest` runs such models on ONNX
// test data. load_inputs and random_inputs check this first.
status check_tensor_io(const graph& g);

// Each arg is FILE (matched to the graph's inputs in order) or NAME=FILE; "-" is stdin. An
// arg with '=' whose NAME is not an input is a usage error naming the model's inputs, unless a
// file of that whole name exists.
// Checks every model input is given exactly once. Formats by extension (see tensor_io.h).
expected<std::vector<tensor>> load_inputs(const graph& g, const std::vector<std::string>& args);

// Inputs of the declared dtypes and shapes filled with seeded random values (symbolic dims
// become `symbolic_dim`); fails when an input has no declared shape.
expected<std::vector<tensor>> random_inputs(const graph& g, uint64_t seed, int64_t symbolic_dim = 1);

// A short human summary of one output: name, dtype, shape, first values, argmax.
std::string summarize_output(const std::string& name, const tensor& t);

// A file name for an output called `name` (characters outside [A-Za-z0-9._-] become '_').
std::string output_file_name(const std::string& name);

}  // namespace gpugrid::cli
