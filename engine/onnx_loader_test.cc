#include "engine/onnx_loader.h"

#include <catch2/catch.hpp>

#include <onnx/onnx_pb.h>

using namespace gpugrid;

namespace {

// A model with one node of `op_type` at `opset` that has no inputs and writes graph output y.
std::string model_without_inputs(const std::string& op_type, int opset) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(opset);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* n = g->add_node();
  n->set_op_type(op_type);
  n->add_output("y");
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return m.SerializeAsString();
}

}  // namespace

TEST_CASE("loader: an op whose attributes became inputs, with no inputs at all, reads no value", "[loader]") {
  // Found by fuzz_model_loader: canonicalisation used to give such a node input 0, a value
  // that does not exist (or an unrelated one).
  for (const char* op : {"ReduceL1", "ReduceSum", "Clip", "Pad", "Split", "Slice", "TopK"}) {
    const int opset = std::string(op) == "Slice" || std::string(op) == "TopK" ? 9 : 10;
    INFO(op);
    // It loads (the missing input is the kernel's to report when the model runs).
    auto g = load_model_from_bytes(model_without_inputs(op, opset));
    INFO((g ? std::string() : g.error().message()));
    REQUIRE(g);
    REQUIRE((*g)->nodes.size() == 1);
    const node& n = (*g)->nodes[0];
    REQUIRE(!n.inputs.empty());
    CHECK(n.inputs[0] == -1);
    for (int id : n.inputs) CHECK(id < static_cast<int>((*g)->values.size()));
  }
}
